"""The soak test's upstream (scripts/soak): an HTTP/1.1 server that checks every request it
receives against the client the request must carry.

Every request the soak sends names its scenario and its expected client R in the path,
`/soak/<scenario>/<R>` (R as trustip writes it: `127.0.0.1`, `192.0.2.17`, `::1`). The
upstream takes R from there, never from a header, and a request passes only when:

- `x-envoy-external-address` and `x-real-ip` occur once each and equal R (the policy's `set`);
- `x-forwarded-for` occurs once, its first element is R, and every further element is one of
  the proxies the policy trusts (`--trusted`: what `overwrite` writes is R, the trusted hops
  walked over, then C);
- `forwarded` occurs once, its first `for=` is R, every further `for=` a trusted proxy;
- no header value anywhere contains the attacker's prefix (`--spoof-marker`, 203.0.113.: the
  only addresses the attacker ever claims), and no header name carries an underscore or is a
  client header the policy strips (x-client-ip, true-client-ip, ...).

A request that passes gets `200 ok`; one that fails gets `409` with the reason, and is counted
as a spoof with its scenario, reason and headers (the first few kept). Requests outside
`/soak/` are counted as `unexpected`. `GET /__soak/stats` (straight to this server, not through
Envoy) answers the counts as JSON.

One asyncio process: it parses only what it checks (request line, header lines; GET requests
without a body, anything with a body is refused as unexpected), so that one core serves tens of
thousands of requests per second. Run: `python soak_upstream.py --port N --trusted 127.0.0.7/32
--trusted 10.0.0.0/8`; it prints `listening <port>` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from collections import Counter

# Client headers a spoofer would use; none may reach the upstream except those the policy sets.
LOOKALIKES = frozenset(
    {
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-original-forwarded-for",
        "client-ip",
        "x-originating-ip",
        "forwarded-for",
        "x-forwarded",
    }
)
SINGLE = ("x-envoy-external-address", "x-real-ip", "x-forwarded-for", "forwarded")
MAX_EXAMPLES = 20


class Checker:
    def __init__(self, trusted: list[str], marker: bytes) -> None:
        self.trusted = [ipaddress.ip_network(t) for t in trusted]
        self.trusted_cache: dict[str, bool] = {}
        self.marker = marker
        self.served: Counter[str] = Counter()
        self.spoofed: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.unexpected = 0
        self.examples: list[dict] = []
        self.started = time.monotonic()
        self.connections = 0

    def is_trusted(self, text: str) -> bool:
        known = self.trusted_cache.get(text)
        if known is None:
            try:
                ip = ipaddress.ip_address(text)
                known = any(ip in net for net in self.trusted)
            except ValueError:
                known = False
            if len(self.trusted_cache) < 100000:
                self.trusted_cache[text] = known
        return known

    def check(self, target: bytes, lines: list[bytes]) -> tuple[str, str | None]:
        """(scenario, None) when the request carries exactly the client its path names,
        else (scenario, reason)."""
        parts = target.split(b"/")
        # b"/soak/<scenario>/<R>" -> ["", "soak", scenario, R]
        if len(parts) != 4 or parts[1] != b"soak":
            return "", "not a soak path"
        scenario = parts[2].decode("latin-1")
        expected = parts[3].decode("latin-1")
        seen: dict[str, list[str]] = {}
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep:
                return scenario, "a header line without a colon"
            if self.marker in value:
                return scenario, f"attacker's address in {name.decode('latin-1')}: {value.strip().decode('latin-1')}"
            key = name.strip().lower().decode("latin-1")
            if "_" in key:
                return scenario, f"look-alike header {key} reached the upstream"
            if key in LOOKALIKES:
                return scenario, f"client header {key} reached the upstream"
            if key in SINGLE:
                seen.setdefault(key, []).append(value.strip().decode("latin-1"))
        for key in SINGLE:
            values = seen.get(key, [])
            if len(values) != 1:
                return scenario, f"{key} occurs {len(values)} times: {values}"
        for key in ("x-envoy-external-address", "x-real-ip"):
            if seen[key][0] != expected:
                return scenario, f"{key}: {seen[key][0]} (expected {expected})"
        chain = [e.strip() for e in seen["x-forwarded-for"][0].split(",")]
        if chain[0] != expected:
            return scenario, f"x-forwarded-for: {seen['x-forwarded-for'][0]} (expected {expected} first)"
        for hop in chain[1:]:
            if not self.is_trusted(hop):
                return scenario, f"x-forwarded-for: {seen['x-forwarded-for'][0]}: {hop} is not a trusted proxy"
        fors = []
        for element in seen["forwarded"][0].split(","):
            element = element.strip()
            if not element.lower().startswith("for="):
                return scenario, f"forwarded: {seen['forwarded'][0]}: element {element!r}"
            value = element[4:].strip('"')
            if value.startswith("[") and value.endswith("]"):
                value = value[1:-1]
            fors.append(value)
        if fors[0] != expected:
            return scenario, f"forwarded: {seen['forwarded'][0]} (expected for={expected} first)"
        for hop in fors[1:]:
            if not self.is_trusted(hop):
                return scenario, f"forwarded: {seen['forwarded'][0]}: {hop} is not a trusted proxy"
        return scenario, None

    def record(self, target: bytes, lines: list[bytes]) -> tuple[bytes, bytes]:
        scenario, reason = self.check(target, lines)
        if reason is None:
            self.served[scenario] += 1
            return b"200 OK", b"ok\n"
        if reason == "not a soak path":
            self.unexpected += 1
        else:
            self.spoofed[scenario] += 1
            self.reasons[reason.split(":")[0]] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(
                {
                    "scenario": scenario,
                    "reason": reason,
                    "target": target.decode("latin-1"),
                    "headers": [line.decode("latin-1") for line in lines],
                }
            )
        return b"409 Conflict", f"soak: {reason}\n".encode("utf-8", "replace")

    def stats(self) -> dict:
        return {
            "served": dict(self.served),
            "served_total": sum(self.served.values()),
            "spoofed": dict(self.spoofed),
            "spoofed_total": sum(self.spoofed.values()),
            "spoof_reasons": dict(self.reasons),
            "unexpected": self.unexpected,
            "connections": self.connections,
            "seconds": round(time.monotonic() - self.started, 3),
            "examples": self.examples,
        }


class Http(asyncio.Protocol):
    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.checker.connections += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out = []
        close = False
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            buffer = buffer[end + 4 :]
            lines = head.split(b"\r\n")
            request_line = lines[0].split(b" ")
            headers = lines[1:]
            if len(request_line) != 3:
                self.checker.unexpected += 1
                out.append(_response(b"400 Bad Request", b"bad request line\n", True))
                close = True
                break
            method, target = request_line[0], request_line[1]
            if target == b"/__soak/stats":
                out.append(_response(b"200 OK", json.dumps(self.checker.stats()).encode(), False, b"application/json"))
                continue
            body_framed = any(
                h[:15].lower() == b"content-length:" and h[15:].strip() != b"0" or h[:18].lower() == b"transfer-encoding:"
                for h in headers
            )
            if method != b"GET" or body_framed:
                self.checker.unexpected += 1
                out.append(_response(b"400 Bad Request", b"soak upstream: GET without a body only\n", True))
                close = True
                break
            status, body = self.checker.record(target, headers)
            out.append(_response(status, body, False))
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.transport = None


def _response(status: bytes, body: bytes, close: bool, content_type: bytes = b"text/plain") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type + b"\r\ncontent-length: "
        + str(len(body)).encode() + (b"\r\nconnection: close" if close else b"") + b"\r\n\r\n" + body
    )  # fmt: skip


async def serve(port: int, trusted: list[str], marker: bytes) -> None:
    checker = Checker(trusted, marker)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http(checker), "127.0.0.1", port, backlog=1024, reuse_address=True)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--trusted", action="append", default=[], help="a proxy the policy trusts (CIDR)")
    parser.add_argument("--spoof-marker", default="203.0.113.", help="text only the attacker's claims contain")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.trusted, args.spoof_marker.encode()))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
