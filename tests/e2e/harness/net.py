"""Loopback ports, listening checks, and stopping the servers the suite starts."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import time

# Ports are handed out from below the kernel's ephemeral range (ip_local_port_range, 32768-60999
# by default): a port the kernel picked (bind to 0) could be taken by some client connection's
# local port in the moment before Envoy or HAProxy binds it, which made the suite fail now and
# then with "Address already in use". Here nothing else takes them; a counter from a random start
# keeps one run from reusing a port it gave out.
_PORT_LOW, _PORT_HIGH = 21000, 32000
_next_port = random.Random(os.getpid()).randrange(_PORT_LOW, _PORT_HIGH)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now on `host`, outside the ephemeral range, not handed out before."""
    global _next_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port = _next_port
        _next_port = port + 1 if port + 1 < _PORT_HIGH else _PORT_LOW
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {_PORT_LOW}-{_PORT_HIGH}")


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


def terminate(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stops a server process: SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
