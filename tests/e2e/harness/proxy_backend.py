"""A backend that reads the PROXY protocol header Envoy sends upstream, parsed here by hand.

Envoy's `envoy.transport_sockets.upstream_proxy_protocol` prefixes every upstream connection
with a PROXY v1 line or a v2 binary header. What that header says is the address the backend
will believe, so the suite reads it byte by byte itself (no library that could be lenient in
the same way Envoy is): the v1 line or the v2 signature, version/command, family, addresses,
ports and TLVs. Each connection is recorded as a `ProxyConnection` (header kind, src, dst,
ports, TLVs, the raw header, the bytes after it). If the rest is an HTTP request the backend
answers 200 (`connection: close`, so Envoy never reuses the connection, and every request gets
a fresh header); if it starts with a TLS record and a server context was given, the stream is
wrapped with Python's `ssl` (server side) and the HTTP exchange happens inside TLS. The
response body is the parsed header as JSON, so a client can see it too.

Requests are found again by the `x-test-id` header of the HTTP request that followed the header
(the client helpers send one), connections by their arrival order (`count`).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1 = 107  # the spec's longest v1 line, CRLF included


class ProxyHeaderError(ValueError):
    """The bytes at the start of the connection are not a PROXY header this parser accepts."""


@dataclass
class ProxyHeader:
    """One parsed PROXY header. `kind` is "v1" or "v2"; `command` "PROXY" or "LOCAL" (v2);
    `family` "TCP4", "TCP6" or "UNKNOWN"/"UNSPEC"; addresses and ports are None when the header
    carries none; `tlvs` is [(type, value)] in header order (v2 only)."""

    kind: str
    command: str
    family: str
    src: str | None
    dst: str | None
    src_port: int | None
    dst_port: int | None
    tlvs: list[tuple[int, bytes]] = field(default_factory=list)
    raw: bytes = b""

    def tlv(self, kind: int) -> bytes | None:
        values = [value for t, value in self.tlvs if t == kind]
        assert len(values) <= 1, f"TLV {kind:#x} occurs {len(values)} times"
        return values[0] if values else None

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "command": self.command,
            "family": self.family,
            "src": self.src,
            "dst": self.dst,
            "src_port": self.src_port,
            "dst_port": self.dst_port,
            "tlvs": [[t, v.hex()] for t, v in self.tlvs],
        }


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ProxyHeaderError(f"connection closed after {got} of {n} header bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _peek(sock: socket.socket, n: int, timeout: float = 5.0, enough=None) -> bytes:
    """Up to `n` first bytes without consuming them: returns once there are `n`, once
    `enough(data)` holds, when the peer closes, or after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        data = sock.recv(n, socket.MSG_PEEK)
        if len(data) >= n or not data or (enough and enough(data)) or time.monotonic() > deadline:
            return data
        time.sleep(0.005)


def parse_v1(line: bytes) -> ProxyHeader:
    """`PROXY TCP4|TCP6 src dst sport dport\\r\\n` or `PROXY UNKNOWN ...\\r\\n` (spec 2.1)."""
    if not line.startswith(b"PROXY ") or not line.endswith(b"\r\n") or len(line) > MAX_V1:
        raise ProxyHeaderError(f"not a PROXY v1 line: {line!r}")
    words = line[:-2].decode("ascii").split(" ")
    if words[1] == "UNKNOWN":
        return ProxyHeader("v1", "PROXY", "UNKNOWN", None, None, None, None, raw=line)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 line: {line!r}")
    family, src, dst, sport, dport = words[1:]
    version = 4 if family == "TCP4" else 6
    for address in (src, dst):
        if ipaddress.ip_address(address).version != version:
            raise ProxyHeaderError(f"{address} is not {family}: {line!r}")
    return ProxyHeader("v1", "PROXY", family, src, dst, int(sport), int(dport), raw=line)


def parse_v2(header: bytes) -> ProxyHeader:
    """The 16-byte fixed part, then the address block and TLVs (spec 2.2)."""
    if header[:12] != V2_SIGNATURE:
        raise ProxyHeaderError(f"bad PROXY v2 signature: {header[:12]!r}")
    version_command, family_byte, length = struct.unpack("!BBH", header[12:16])
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 version nibble {version_command >> 4}")
    command = {0: "LOCAL", 1: "PROXY"}.get(version_command & 0x0F)
    if command is None:
        raise ProxyHeaderError(f"PROXY v2 command {version_command & 0x0F}")
    body = header[16:]
    if len(body) != length:
        raise ProxyHeaderError(f"PROXY v2 length {length}, got {len(body)}")
    if family_byte == 0x11:  # TCP over IPv4
        family, size = "TCP4", 4
    elif family_byte == 0x21:  # TCP over IPv6
        family, size = "TCP6", 16
    elif family_byte == 0x00:
        return ProxyHeader("v2", command, "UNSPEC", None, None, None, None, _tlvs(body), raw=header)
    else:
        raise ProxyHeaderError(f"PROXY v2 family/transport byte {family_byte:#x}")
    need = 2 * size + 4
    if len(body) < need:
        raise ProxyHeaderError(f"PROXY v2 address block of {len(body)} bytes, {family} needs {need}")
    src = str(ipaddress.ip_address(body[:size]))
    dst = str(ipaddress.ip_address(body[size : 2 * size]))
    sport, dport = struct.unpack("!HH", body[2 * size : need])
    return ProxyHeader("v2", command, family, src, dst, sport, dport, _tlvs(body[need:]), raw=header)


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        if offset + 3 > len(data):
            raise ProxyHeaderError(f"truncated TLV header at {offset}: {data[offset:]!r}")
        kind, length = struct.unpack("!BH", data[offset : offset + 3])
        value = data[offset + 3 : offset + 3 + length]
        if len(value) != length:
            raise ProxyHeaderError(f"TLV {kind:#x} says {length} bytes, {len(value)} left")
        out.append((kind, value))
        offset += 3 + length
    return out


def read_proxy_header(sock: socket.socket) -> ProxyHeader:
    """Consumes exactly the PROXY header at the start of `sock` and nothing after it, so the
    rest of the stream (an HTTP request, a TLS ClientHello) is left for whoever reads next."""
    start = _peek(sock, 16, enough=lambda data: not V2_SIGNATURE.startswith(data[:12]))
    if len(start) == 16 and start[:12] == V2_SIGNATURE:
        (length,) = struct.unpack("!H", start[14:16])
        return parse_v2(_recv_exact(sock, 16 + length))
    if start.startswith(b"PROXY "):
        line = _peek(sock, MAX_V1, enough=lambda data: b"\r\n" in data)
        end = line.find(b"\r\n")
        if end < 0:
            raise ProxyHeaderError(f"no CRLF in the first {len(line)} bytes: {line!r}")
        return parse_v1(_recv_exact(sock, end + 2))
    raise ProxyHeaderError(f"no PROXY header: the connection starts with {start!r}")


@dataclass
class ProxyConnection:
    """What one upstream connection brought: the parsed header (None if there was none or it
    did not parse: `error` says why), then everything after it (`after`: the bytes as sent, or
    inside TLS the decrypted bytes), whether TLS was used and the SNI the client sent."""

    index: int
    header: ProxyHeader | None = None
    error: str | None = None
    after: bytes = b""
    tls: bool = False
    server_name: str | None = None

    @property
    def test_id(self) -> str | None:
        head = self.after.partition(b"\r\n\r\n")[0]
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-test-id":
                return value.strip().decode("latin-1")
        return None


def _read_http_head(stream, limit: int = 65536) -> bytes:
    """Reads until the end of the request head (or EOF); `stream` has recv()."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = stream.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class ProxyBackend:
    """A threaded TCP server on 127.0.0.1 (or `host`) that records the PROXY header of every
    connection. `tls` is a server `ssl.SSLContext`: a connection whose bytes after the header
    start with a TLS handshake record is then served inside TLS."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(128)
        self.host = host
        self.port = self._sock.getsockname()[1]
        self.tls = tls
        self.connections: list[ProxyConnection] = []
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> "ProxyBackend":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        try:
            self._sock.close()
        except OSError:
            pass

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                record = ProxyConnection(index=len(self.connections))
                self.connections.append(record)
                self._lock.notify_all()
            threading.Thread(target=self._handle, args=(conn, record), daemon=True).start()

    def _handle(self, conn: socket.socket, record: ProxyConnection) -> None:
        conn.settimeout(10)
        stream = conn
        try:
            try:
                header = read_proxy_header(conn)
            except (ProxyHeaderError, ValueError) as error:
                self._update(record, error=str(error), after=_peek(conn, 4096, timeout=0.5))
                return
            self._update(record, header=header)
            first = _peek(conn, 1)
            if first == b"\x16" and self.tls is not None:  # a TLS handshake record
                stream = self.tls.wrap_socket(conn, server_side=True)
                self._update(record, tls=True, server_name=getattr(stream, "trustip_sni", None))
            after = _read_http_head(stream)
            self._update(record, after=after)
            if after.startswith((b"GET ", b"POST ", b"HEAD ")):
                body = json.dumps({"proxy": header.as_json(), "tls": record.tls}).encode()
                stream.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n".encode()
                    + b"connection: close\r\n\r\n"
                    + body
                )
        except (OSError, ssl.SSLError) as error:
            if record.error is None:
                self._update(record, error=f"{type(error).__name__}: {error}")
        finally:
            try:
                stream.close()
            except OSError:
                pass

    def _update(self, record: ProxyConnection, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(record, name, value)
            self._lock.notify_all()

    @property
    def count(self) -> int:
        """Connections accepted so far (with or without a header)."""
        with self._lock:
            return len(self.connections)

    def find(self, test_id: str) -> ProxyConnection | None:
        with self._lock:
            for record in self.connections:
                if record.test_id == test_id:
                    return record
        return None

    def wait_for(self, test_id: str, timeout: float = 5.0) -> ProxyConnection:
        """The connection whose HTTP request carried `x-test-id: test_id`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for record in self.connections:
                    if record.test_id == test_id:
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the PROXY backend never got request {test_id}")
                self._lock.wait(remaining)

    def wait_for_index(self, index: int, *, done: bool = True, timeout: float = 5.0) -> ProxyConnection:
        """The `index`-th connection, once its header (and, with `done`, what followed) is in."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if index < len(self.connections):
                    record = self.connections[index]
                    if record.error or (record.header and (record.after or not done)):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the PROXY backend has no complete connection #{index}")
                self._lock.wait(remaining)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context that also notes the SNI the client sent on the socket
    (`trustip_sni`), so a test can see which name reached the backend."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember(sock, name, _context):
        sock.trustip_sni = name

    context.sni_callback = remember
    return context
