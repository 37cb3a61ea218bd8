"""HAProxy as a backend that believes PROXY headers: `bind ... accept-proxy`, `mode http`,
`http-request return status 200`, one log line per request on stderr.

This is the other side of Envoy's outbound PROXY header, as a real deployment would have it: a
server that takes the client address from the header without asking (HAProxy's `%ci` is the
header's source once `accept-proxy` parsed it). The log line names the request by its
`x-test-id` header, so a test can read what HAProxy believed for each request it sent. HAProxy
2.6 (Debian 12) has no `fc_pp_tlv` fetch (2.9+), so of the TLVs only the authority (0x02) and
the unique id (0x05) are logged; the Python backend (proxy_backend.py) reads every TLV.

`mode http` serves both Envoy layouts: the HCM's upstream requests, and tcp_proxy carrying the
client's own HTTP/1.1 request. `option httpclose` closes each connection after its response, so
Envoy opens a new upstream connection (with a new header) for every request.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import net
from .haproxy import HAProxyProcess

LOG_TAG = "trustip-backend"
_LINE = re.compile(
    rf"{LOG_TAG} test_id=(?P<test_id>\S*) ci=(?P<ci>\S*) cp=(?P<cp>\S*) fi=(?P<fi>\S*) fp=(?P<fp>\S*) "
    r"authority=(?P<authority>\S*) unique_id=(?P<unique_id>\S*) status=(?P<status>\S*)"
)


@dataclass
class BackendLogLine:
    """One request as HAProxy logged it: `ci`/`cp` the client address and port it believed (the
    PROXY source), `fi`/`fp` the frontend address (the PROXY destination), the authority and
    unique-id TLVs ("-" when absent)."""

    test_id: str
    ci: str
    cp: str
    fi: str
    fp: str
    authority: str
    unique_id: str
    status: str


class HAProxyBackend(HAProxyProcess):
    """Listens on `host`:`port` with `accept-proxy` (a connection without a PROXY header is
    refused by HAProxy itself) and answers 200 to every HTTP request."""

    def __init__(self, *, host: str = "127.0.0.1", workdir: Path | None = None) -> None:
        self.host = host
        self.port = net.free_port(host)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="trustip-haproxy-backend-"))
        self.config_path = self.workdir / "haproxy-backend.cfg"
        self.output_path = self.workdir / "haproxy-backend.out"
        log_format = (
            f"{LOG_TAG} test_id=%[capture.req.hdr(0)] ci=%ci cp=%cp fi=%fi fp=%fp "
            "authority=%[fc_pp_authority] unique_id=%[fc_pp_unique_id,hex] status=%ST"
        )
        self.config_path.write_text(
            "global\n"
            "    log stderr format raw local0 info\n"
            "defaults\n"
            "    mode http\n"
            "    log global\n"
            "    option httpclose\n"
            "    timeout connect 2s\n"
            "    timeout client 10s\n"
            "    timeout server 10s\n"
            "frontend backend\n"
            f"    bind {host}:{self.port} accept-proxy\n"
            f'    log-format "{log_format}"\n'
            "    http-request capture req.hdr(x-test-id) len 64\n"
            "    http-request return status 200 content-type text/plain string ok\n"
        )
        self.process: subprocess.Popen | None = None

    def listen_address(self) -> tuple[str, int]:
        return self.host, self.port

    def lines(self) -> list[BackendLogLine]:
        return [BackendLogLine(**m.groupdict()) for m in _LINE.finditer(self.output_text())]

    def find(self, test_id: str) -> BackendLogLine | None:
        for line in self.lines():
            if line.test_id == test_id:
                return line
        return None

    def wait_for(self, test_id: str, timeout: float = 5.0) -> BackendLogLine:
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(test_id)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy backend logged no request {test_id}:\n{self.output_text()[-3000:]}")
            time.sleep(0.05)
