"""Raw clients: HTTP/1.1 over a socket bound to a chosen loopback source address, optionally
prefixed with a hand-built PROXY protocol header (v1, or v2 with arbitrary TLVs)."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import struct
import uuid
from dataclasses import dataclass, field

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

# Well-known TLV types (PROXY protocol spec, and the cloud load balancers' own).
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_AWS = 0xEA
PP2_TYPE_AZURE = 0xEE
PP2_TYPE_GCP = 0xE0
PP2_SUBTYPE_AWS_VPCE_ID = 0x01
PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID = 0x01


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    """`PROXY TCP4|TCP6 src dst sport dport\\r\\n`; the family comes from `src`."""
    family = "TCP6" if ipaddress.ip_address(src).version == 6 else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v1_unknown() -> bytes:
    return b"PROXY UNKNOWN\r\n"


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def aws_vpce_tlv(vpce_id: str) -> bytes:
    """AWS PrivateLink: type 0xEA, subtype 0x01, then the VPC endpoint id in ASCII."""
    return tlv(PP2_TYPE_AWS, bytes([PP2_SUBTYPE_AWS_VPCE_ID]) + vpce_id.encode())


def azure_link_tlv(link_id: int) -> bytes:
    """Azure Private Link: type 0xEE, subtype 0x01, then the LinkID as u32 little-endian."""
    return tlv(PP2_TYPE_AZURE, bytes([PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID]) + struct.pack("<I", link_id))


def gcp_psc_tlv(connection_id: int) -> bytes:
    """Google Private Service Connect: type 0xE0, the connection id as u64 big-endian."""
    return tlv(PP2_TYPE_GCP, struct.pack(">Q", connection_id))


def proxy_v2(
    src: str | None = None,
    dst: str | None = None,
    sport: int = 0,
    dport: int = 0,
    tlvs: bytes | list[bytes] = b"",
    command: str = "PROXY",
) -> bytes:
    """A PROXY v2 header. TCP4 or TCP6 from the addresses' family; `command="LOCAL"` (or no
    addresses) gives a LOCAL/UNSPEC header, which says "use the real connection"."""
    if isinstance(tlvs, list):
        tlvs = b"".join(tlvs)
    version_command = 0x21 if command == "PROXY" else 0x20
    if src is None:
        family, addresses = 0x00, b""
    else:
        source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        if source.version != destination.version:
            raise ValueError("PROXY v2 source and destination must be of one family")
        family = 0x11 if source.version == 4 else 0x21  # TCP over IPv4 / IPv6
        addresses = source.packed + destination.packed + struct.pack("!HH", sport, dport)
    payload = addresses + tlvs
    return PROXY_V2_SIGNATURE + struct.pack("!BBH", version_command, family, len(payload)) + payload


@dataclass
class Response:
    """What a client got back. `status` is None when the connection was closed or reset
    without any response (`closed` is then True; `reset` tells a RST from a clean close)."""

    status: int | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    body: bytes = b""
    reset: bool = False
    raw: bytes = b""
    test_id: str = ""
    local_port: int = 0  # the client's source port (the direct peer's port Envoy saw)

    @property
    def closed(self) -> bool:
        return self.status is None

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return values[0].decode("latin-1") if values else None

    def json(self) -> dict:
        return json.loads(self.body)

    def upstream_headers(self, name: str) -> list[str]:
        """Values of `name` as the upstream received them (from the echo server's body)."""
        return [v for n, v in self.json()["headers"] if n == name.lower()]

    def upstream_header(self, name: str) -> str | None:
        values = self.upstream_headers(name)
        assert len(values) <= 1, f"upstream got {name} {len(values)} times: {values!r}"
        return values[0] if values else None

    def __repr__(self) -> str:
        if self.closed:
            return f"<Response closed without response reset={self.reset} raw={self.raw!r}>"
        return f"<Response {self.status} headers={self.headers!r} body={self.body[:300]!r}>"


def connect(source: str, dest: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to dest:port from the address `source` (a peer the test plays)."""
    family = socket.AF_INET6 if ":" in dest else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((dest, port))
    return sock


def _complete(data: bytes) -> bool:
    """True once `data` holds a whole HTTP/1.1 response with a Content-Length body. A client
    stops reading there, as curl does: Envoy closes a connection after a local reply with a
    delayed close (it waits up to delayed_close_timeout, 1 s, for the client to close first)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/"):
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _read_all(sock: socket.socket, *, until_complete: bool = False) -> tuple[bytes, bool]:
    """Reads until EOF (or, with `until_complete`, a whole response); returns (bytes, reset)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks), True
        except OSError as error:
            if error.errno in (errno.ECONNRESET, errno.EPIPE):
                return b"".join(chunks), True
            raise
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        if until_complete and _complete(b"".join(chunks)):
            return b"".join(chunks), False


def parse_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1").strip().lower(), value.strip()))
    for name, value in headers:
        if name == "content-length":
            body = body[: int(value)]
    return Response(status=status, headers=headers, body=body, raw=raw)


def build_request(
    headers: list[tuple[str | bytes, str | bytes]] = (),
    *,
    method: str = "GET",
    path: str = "/",
    host: str = "trustip.test",
    test_id: str | None = None,
    body: bytes = b"",
) -> tuple[bytes, str]:
    test_id = test_id or uuid.uuid4().hex
    lines = [f"{method} {path} HTTP/1.1".encode(), f"host: {host}".encode(), f"x-test-id: {test_id}".encode()]
    for name, value in headers:
        name = name.encode() if isinstance(name, str) else name
        value = value.encode() if isinstance(value, str) else value
        lines.append(name + b": " + value)
    lines.append(b"connection: close")
    if body:
        lines.append(f"content-length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, test_id


def request(
    port: int,
    headers: list[tuple[str | bytes, str | bytes]] = (),
    *,
    source: str = "127.0.0.1",
    dest: str | None = None,
    proxy: bytes = b"",
    method: str = "GET",
    path: str = "/",
    timeout: float = 10.0,
    test_id: str | None = None,
) -> Response:
    """One HTTP/1.1 request (`connection: close`) from `source` to `dest`:`port`, preceded by
    `proxy` (a PROXY header) if given. Never raises for a closed or reset connection: that is a
    Response with `closed` True."""
    if dest is None:
        dest = "::1" if ":" in source else "127.0.0.1"
    data, test_id = build_request(headers, method=method, path=path, test_id=test_id)
    sock = connect(source, dest, port, timeout)
    local_port = sock.getsockname()[1]
    try:
        reset = False
        try:
            sock.sendall(proxy + data)
        except (BrokenPipeError, ConnectionResetError):
            reset = True
        raw, read_reset = _read_all(sock, until_complete=True)
        reset = reset or read_reset
    finally:
        sock.close()
    if not raw.startswith(b"HTTP/"):
        return Response(status=None, reset=reset, raw=raw, test_id=test_id, local_port=local_port)
    response = parse_response(raw)
    response.reset = reset
    response.test_id = test_id
    response.local_port = local_port
    return response


def send_raw(port: int, data: bytes, *, source: str = "127.0.0.1", dest: str | None = None, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Sends bytes as they are, returns (everything read until close, reset)."""
    if dest is None:
        dest = "::1" if ":" in source else "127.0.0.1"
    sock = connect(source, dest, port, timeout)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b"", True
        return _read_all(sock)
    finally:
        sock.close()
