"""Throwaway TLS material for the passthrough tests: a self-signed certificate made with the
`openssl` command line (scripts/setup installs it), valid for one day, for one DNS name. The
certificate is its own CA, so a client verifies the backend by loading it as the only trust
anchor: a handshake that completes proves the client talked to that backend, through Envoy,
which never held the key."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """(certificate, key) PEM files for `name` (CN and subjectAltName DNS), an EC P-256 key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def client_context(ca: Path) -> ssl.SSLContext:
    """Verifies the server's certificate against `ca` alone (given a cafile, the default context
    loads no system roots), and its name (check_hostname)."""
    return ssl.create_default_context(cafile=str(ca))


def connect(
    port: int, server_name: str, ca: Path, *, source: str = "127.0.0.1", dest: str = "127.0.0.1",
    proxy: bytes = b"", timeout: float = 5.0,
) -> tuple[ssl.SSLSocket, int]:
    """A TLS connection with SNI `server_name` from `source` to `dest`:`port`, preceded by
    `proxy` (a PROXY header sent in clear before the ClientHello) if given. Returns the socket
    and the client's local port; raises (ssl.SSLError, OSError) when the handshake fails."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(timeout)
    raw.bind((source, 0))
    raw.connect((dest, port))
    local_port = raw.getsockname()[1]
    try:
        if proxy:
            raw.sendall(proxy)
        return client_context(ca).wrap_socket(raw, server_hostname=server_name), local_port
    except BaseException:
        raw.close()
        raise
