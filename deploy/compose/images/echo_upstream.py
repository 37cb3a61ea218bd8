"""The echo upstream of the compose test's httpbin image: tests/e2e/harness/upstream.py's
server, listening on 0.0.0.0:8080 (go-httpbin's port), keeping no recording (every answer
carries what the request had)."""

import os
import signal
import sys

sys.path.insert(0, "/app")

from upstream import _Handler, _Server  # noqa: E402


class _NoRecording:
    def _record(self, request) -> None:
        pass


# As PID 1 a process has no default action for SIGTERM: without a handler `podman stop` would
# wait its timeout and then kill.
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

server = _Server(("0.0.0.0", 8080), _Handler)
server.owner = _NoRecording()
print("echo upstream listening on 0.0.0.0:8080", flush=True)
server.serve_forever()
