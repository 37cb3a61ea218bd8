"""Loopback ports and listening checks."""

from __future__ import annotations

import ipaddress
import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now on `host` (good enough on a test machine: the
    processes that get it bind it within a second)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_pair() -> int:
    """A port free on both 127.0.0.1 and ::1 (listeners of the suite bind both)."""
    for _ in range(100):
        port = free_port("127.0.0.1")
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
                sock.bind(("::1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def _proc_net_listening() -> set[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state, from /proc/net/tcp{,6}."""
    found: set[tuple[str, int]] = set()
    for path, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            with open(path) as table:
                lines = table.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            # The kernel prints the address as 32-bit words in host (little-endian) order.
            words = [raw[i : i + 4][::-1] for i in range(0, width, 4)]
            ip = ipaddress.ip_address(b"".join(words))
            found.add((str(ip), int(hex_port, 16)))
    return found


def is_listening(host: str, port: int) -> bool:
    listening = _proc_net_listening()
    wildcard = "::" if ":" in host else "0.0.0.0"
    return (host, port) in listening or (wildcard, port) in listening or ("::", port) in listening


def wait_listening(host: str, port: int, timeout: float = 10.0, alive=lambda: True) -> None:
    """Waits until something listens on host:port, without sending it any traffic."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(host, port):
            return
        if not alive():
            raise RuntimeError(f"process died before listening on {host}:{port}")
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
