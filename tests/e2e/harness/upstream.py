"""A recording upstream: a threaded HTTP/1.1 echo server.

It keeps, for every request, the raw header lines exactly as they arrived (bytes), and answers
200 with a JSON body describing what it got, so a test can check the headers the upstream saw
either from the response or from the recording (the recording is the one to use for bytes that
are not UTF-8). Requests are found again by the `x-test-id` header the client helpers send.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field

TEST_ID_HEADER = b"x-test-id"


@dataclass
class RecordedRequest:
    method: bytes
    target: bytes
    version: bytes
    header_lines: list[bytes]  # raw lines, without CRLF, in arrival order
    body: bytes = b""
    peer: tuple = ()
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for line in self.header_lines:
            name, _, value = line.partition(b":")
            self.headers.append((name.strip().lower(), value.strip(b" \t")))

    def get_all(self, name: str | bytes) -> list[bytes]:
        key = (name.encode() if isinstance(name, str) else name).lower()
        return [value for header, value in self.headers if header == key]

    def get(self, name: str | bytes) -> bytes | None:
        """The value of a header that must occur at most once (None when absent)."""
        values = self.get_all(name)
        assert len(values) <= 1, f"header {name!r} occurs {len(values)} times: {values!r}"
        return values[0] if values else None

    def text(self, name: str | bytes) -> str | None:
        value = self.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def test_id(self) -> str | None:
        value = self.get(TEST_ID_HEADER)
        return None if value is None else value.decode("latin-1")

    def as_json(self) -> dict:
        return {
            "method": self.method.decode("latin-1"),
            "path": self.target.decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
            "body_length": len(self.body),
        }


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(30)
        reader = conn.makefile("rb")
        try:
            while True:
                request = self._read_request(reader)
                if request is None:
                    return
                self.server.owner._record(request)
                body = json.dumps(request.as_json()).encode()
                close = any(v.lower() == b"close" for v in request.get_all("connection"))
                response = (
                    b"HTTP/1.1 200 OK\r\n"
                    b"content-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n".encode()
                    + (b"connection: close\r\n" if close else b"")
                    + b"\r\n"
                    + body
                )
                conn.sendall(response)
                if close:
                    return
        except (OSError, ValueError):
            return
        finally:
            reader.close()

    def _read_request(self, reader) -> RecordedRequest | None:
        request_line = reader.readline(65537)
        while request_line in (b"\r\n", b"\n"):
            request_line = reader.readline(65537)
        if not request_line:
            return None
        parts = request_line.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3:
            # Not HTTP (e.g. a TCP proxy test sending something else): echo it back raw.
            return RecordedRequest(b"", request_line.rstrip(b"\r\n"), b"", [], peer=self.client_address)
        method, target, version = parts
        lines: list[bytes] = []
        while True:
            line = reader.readline(65537)
            if not line:
                return None
            line = line.rstrip(b"\r\n")
            if not line:
                break
            lines.append(line)
        request = RecordedRequest(method, target, version, lines, peer=self.client_address)
        length = request.get_all("content-length")
        if length:
            request.body = reader.read(int(length[0]))
        elif any(b"chunked" in v.lower() for v in request.get_all("transfer-encoding")):
            chunks = []
            while True:
                size = int(reader.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while reader.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(reader.read(size))
                reader.readline()
            request.body = b"".join(chunks)
        return request


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "EchoServer"


class EchoServer:
    """Start with `start()`, stop with `stop()`; `port` is where it listens on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _Server((host, 0), _Handler, bind_and_activate=True)
        self._server.owner = self
        self.host = host
        self.port = self._server.server_address[1]
        self._lock = threading.Condition()
        self.requests: list[RecordedRequest] = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "EchoServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    def find(self, test_id: str) -> RecordedRequest | None:
        """The request with this x-test-id if the upstream got it (it has, by the time the
        client read the response), else None."""
        with self._lock:
            for request in self.requests:
                if request.test_id == test_id:
                    return request
        return None

    def wait_for(self, test_id: str, timeout: float = 5.0) -> RecordedRequest:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for request in self.requests:
                    if request.test_id == test_id:
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"upstream never got request {test_id}")
                self._lock.wait(remaining)
