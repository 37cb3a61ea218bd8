#!/usr/bin/env python3
"""The small tools `scripts/demo` needs that curl and bash lack (Python standard library only).

  demo_helper.py upstream PORT
      A recording echo upstream on 127.0.0.1:PORT: answers every request with 200 and a
      text/plain body listing the request line and the header lines exactly as received.
  demo_helper.py request --from IP [--proxy-v2 SRC:SPORT] [-H 'name: value']... URL
      One HTTP/1.1 request from a socket bound to IP, optionally preceded by a hand-built
      PROXY v2 header claiming SRC:SPORT (what a spoofing client would send). Prints what it
      sent and what came back, including a connection closed or reset without any response.
  demo_helper.py proxy-backend PORT
      A raw TCP backend on 127.0.0.1:PORT for Envoy's upstream PROXY socket (kgateway's check):
      for each connection it prints the first line (the PROXY v1 line) and the HTTP request line
      as received, answers 200 with a one-line body naming that PROXY line, and closes.
  demo_helper.py haproxy-stat SOCKET BACKEND/SERVER [--timeout S]
      Waits until HAProxy has finished a health check of that server and none is running
      (check_status neither INI nor "* ..."), then prints a few fields of its `show stat` row,
      read from the stats SOCKET.
  demo_helper.py check-free HOST:PORT...
      Fails when one of these addresses is already taken.
  demo_helper.py wait-listening HOST:PORT... [--pid PID] [--timeout S]
      Waits until something listens on every address, reading /proc/net/tcp: no probe
      connection, so nothing reaches the load balancer or Envoy (and no counter moves).
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import ipaddress
import os
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# --- upstream ------------------------------------------------------------------------------


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline(65537)
            if not line:
                return
            request_line = line.rstrip(b"\r\n")
            headers = []
            while True:
                line = self.rfile.readline(65537)
                if line in (b"\r\n", b"\n", b""):
                    break
                headers.append(line.rstrip(b"\r\n"))
            length = 0
            close = False
            for header in headers:
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or b"0")
                if name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                self.rfile.read(length)
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            # One line per request on stdout: the demo checks what never got this far.
            print(f"{peer} {request_line.decode('latin-1')}", flush=True)
            body = b"\n".join(
                [f"upstream received from {peer}:".encode(), b"  " + request_line]
                + [b"  " + header for header in headers]
            ) + b"\n"
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                + f"content-length: {len(body)}\r\n".encode()
                + (b"connection: close\r\n" if close else b"")
                + b"\r\n"
                + body
            )
            if close:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def upstream(args: argparse.Namespace) -> int:
    with _Server(("127.0.0.1", args.port), _Echo) as server:
        server.serve_forever()
    return 0


# --- proxy-backend -------------------------------------------------------------------------


_PRINT_LOCK = threading.Lock()


class _ProxyBackend(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        first = self.rfile.readline(65537)
        request_line = first if not first.startswith(b"PROXY ") else self.rfile.readline(65537)
        while True:  # the request's header lines, unused
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        shown = [first] if first is request_line else [first, request_line]
        # One block per connection on stdout, each line as received (CRLF written as \r\n).
        text = "".join(
            "  " + line.decode("latin-1").replace("\r", "\\r").replace("\n", "\\n") + "\n" for line in shown
        )
        with _PRINT_LOCK:
            sys.stdout.write(f"connection from {peer}:\n{text}")
            sys.stdout.flush()
        proxy = first.rstrip(b"\r\n") if first.startswith(b"PROXY ") else b"no PROXY header"
        body = b"proxy-backend received: " + proxy + b"\n"
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
            + f"content-length: {len(body)}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )


def proxy_backend(args: argparse.Namespace) -> int:
    with _Server(("127.0.0.1", args.port), _ProxyBackend) as server:
        server.serve_forever()
    return 0


# --- haproxy-stat --------------------------------------------------------------------------


def haproxy_command(path: str, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def haproxy_stat(args: argparse.Namespace) -> int:
    backend, _, server = args.server.partition("/")
    deadline = time.monotonic() + args.timeout
    row: dict[str, str] = {}
    failed = False
    while True:
        text = haproxy_command(args.socket, "show stat").lstrip("# ")
        rows = [
            r for r in csv.DictReader(io.StringIO(text)) if r.get("pxname") == backend and r.get("svname") == server
        ]
        if not rows:
            print(f"demo: no {args.server} row in show stat:\n{text}", file=sys.stderr)
            return 1
        row = rows[0]
        # "* " in front: a check is running; INI: none has finished yet.
        if row.get("check_status", "") not in ("", "INI", "UNK") and not row["check_status"].startswith("*"):
            break
        if time.monotonic() > deadline:
            print(f"demo: no health check of {args.server} finished after {args.timeout}s", file=sys.stderr)
            failed = True
            break
        time.sleep(0.05)
    fields = ("pxname", "svname", "status", "check_status", "check_code", "check_desc", "check_duration")
    for name in fields + ("chkfail", "chkdown"):
        print(f"{name}: {row.get(name, '')}")
    return 1 if failed else 0


# --- request -------------------------------------------------------------------------------


def proxy_v2(src: str, sport: int, dst: str, dport: int) -> bytes:
    source, destination = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x11 if source.version == 4 else 0x21  # TCP over IPv4 / IPv6
    payload = source.packed + destination.packed + struct.pack("!HH", sport, dport)
    return PROXY_V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(payload)) + payload


def split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def read_until_close(sock: socket.socket) -> tuple[bytes, str]:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError as error:
            if error.errno in (errno.ECONNRESET, errno.EPIPE):
                return data, "reset (RST)"
            raise
        if not chunk:
            return data, "closed (FIN)"
        data += chunk


def request(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    lines = [f"GET {url.path or '/'} HTTP/1.1", f"host: {url.netloc}"]
    lines += [h.strip() for h in args.header]
    lines += ["connection: close"]
    http = ("\r\n".join(lines) + "\r\n\r\n").encode()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((args.source, 0))
    sock.connect((host, port))
    local = sock.getsockname()
    print(f"  connected from {local[0]}:{local[1]} to {host}:{port}; sending:")
    header = b""
    if args.proxy_v2:
        src, sport = split_hostport(args.proxy_v2)
        header = proxy_v2(src, sport, host, port)
        print(f"    PROXY v2 header, {len(header)} bytes: PROXY TCP4 {src}:{sport} -> {host}:{port}")
        print(f"      {header.hex(' ')}")
    for line in lines:
        print(f"    {line}")
    try:
        sock.sendall(header + http)
        data, how = read_until_close(sock)
    except OSError as error:
        data, how = b"", f"send failed: {error}"
    finally:
        sock.close()
    if data:
        print(f"  received {len(data)} bytes, then the connection was {how}:")
        for line in data.decode("latin-1").replace("\r\n", "\n").rstrip("\n").split("\n"):
            print(f"    {line}")
    else:
        print(f"  received 0 bytes: no HTTP response, the connection was {how}")
    return 0


# --- ports ---------------------------------------------------------------------------------


def listening() -> set[tuple[str, int]]:
    """(ip, port) of every IPv4 TCP socket in LISTEN state."""
    found = set()
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            ip = ipaddress.ip_address(bytes.fromhex(hex_ip)[::-1])  # little-endian word
            found.add((str(ip), int(hex_port, 16)))
    return found


def check_free(args: argparse.Namespace) -> int:
    taken = []
    for address in args.addresses:
        host, port = split_hostport(address)
        with socket.socket() as sock:
            # As servers bind (SO_REUSEADDR): TIME_WAIT leftovers of a previous run don't count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as error:
                taken.append(f"{address} ({error.strerror})")
    if taken:
        print(f"demo: address in use: {', '.join(taken)}; is another demo running?", file=sys.stderr)
        return 1
    return 0


def wait_listening(args: argparse.Namespace) -> int:
    wanted = {split_hostport(a) for a in args.addresses}
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        now = listening()
        if all((h, p) in now or ("0.0.0.0", p) in now for h, p in wanted):
            return 0
        if args.pid:
            try:
                os.kill(args.pid, 0)
            except ProcessLookupError:
                print(f"demo: process {args.pid} exited before listening on {' '.join(args.addresses)}", file=sys.stderr)
                return 1
        time.sleep(0.02)
    print(f"demo: nothing listens on {' '.join(args.addresses)} after {args.timeout}s", file=sys.stderr)
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("upstream")
    p.add_argument("port", type=int)
    p.set_defaults(run=upstream)
    p = commands.add_parser("request")
    p.add_argument("--from", dest="source", required=True)
    p.add_argument("--proxy-v2", metavar="SRC:SPORT")
    p.add_argument("-H", "--header", action="append", default=[])
    p.add_argument("url")
    p.set_defaults(run=request)
    p = commands.add_parser("proxy-backend")
    p.add_argument("port", type=int)
    p.set_defaults(run=proxy_backend)
    p = commands.add_parser("haproxy-stat")
    p.add_argument("socket")
    p.add_argument("server", metavar="BACKEND/SERVER")
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(run=haproxy_stat)
    p = commands.add_parser("check-free")
    p.add_argument("addresses", nargs="+")
    p.set_defaults(run=check_free)
    p = commands.add_parser("wait-listening")
    p.add_argument("addresses", nargs="+")
    p.add_argument("--pid", type=int)
    p.add_argument("--timeout", type=float, default=20)
    p.set_defaults(run=wait_listening)
    args = parser.parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
