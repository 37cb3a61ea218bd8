"""The soak test's attacker and trusted-proxy walks (scripts/soak): raw HTTP/1.1 from chosen
loopback addresses, scenario after scenario until a deadline, each result checked against what
the policy says must happen.

Peers (scripts/soak's policy: the load balancer 127.0.0.5 `require`s PROXY; the CDN 127.0.0.7
and 10.0.0.0/8 are trusted for X-Forwarded-For; everyone else falls to the implicit `reject`):
- the attacker, 127.0.0.66 (and ::1), claims addresses in 203.0.113.0/24 and nothing else;
- the CDN, 127.0.0.7, forwards clients in 192.0.2.0/24 with X-Forwarded-For.

Every request that must reach the upstream names its scenario and expected client in the path
(`/soak/<scenario>/<R>`, checked there by soak_upstream.py); the others must be refused in a
given way: the connection closed without a byte (a spoofed PROXY header at the listener with
trustip's connection role), a 403 with `x-trustip-reject: untrusted_proxy` (the HTTP role
alone), or Envoy's 400 (a PROXY header smuggled through the load balancer, which HAProxy passes
on as payload after its own). Results: per scenario how many were sent, how many ended as
expected, and the first unexpected outcomes, written as JSON to `--out` at the end.

Run: `python soak_attacker.py CONFIG.json` where the config names `edge_port`, `http_only_port`,
`lb_host`, `lb_port`, `seconds`, `out`.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import client  # noqa: E402

ATTACKER = "127.0.0.66"
ATTACKER6 = "::1"
CDN = "127.0.0.7"
LB = "127.0.0.5"

# What a spoofer sends with a request: X-Forwarded-For (twice), its underscore look-alike, and
# the client headers frameworks read. 7 of them are on trustip's default strip list (x-real-ip,
# true-client-ip, forwarded, client-ip, cf-connecting-ip, x-client-ip, x-originating-ip):
# trustip's headers_stripped counter must grow by 7 for each such request from an untrusted C.
SPOOF_HEADERS = [
    ("X-Forwarded-For", "203.0.113.9"),
    ("X-Forwarded-For", "203.0.113.20, 10.9.9.9"),
    ("X_Forwarded_For", "203.0.113.10"),
    ("X-Real-IP", "203.0.113.11"),
    ("x_real_ip", "203.0.113.12"),
    ("True-Client-IP", "203.0.113.13"),
    ("Forwarded", "for=203.0.113.14;proto=http"),
    ("Client-IP", "203.0.113.15"),
    ("CF-Connecting-IP", "203.0.113.16"),
    ("X-Client-IP", "203.0.113.17"),
    ("X-Originating-IP", "203.0.113.18"),
    ("x-envoy-external-address", "203.0.113.19"),
]
SPOOF_STRIPPED = 7
MAX_EXAMPLES = 10


def _spoof_v2(i: int) -> bytes:
    return client.proxy_v2(f"203.0.113.{i % 250 + 1}", "127.0.0.1", 40000 + i % 20000, 443)


def _spoof_v1(i: int) -> bytes:
    return client.proxy_v1(f"203.0.113.{i % 250 + 1}", "127.0.0.1", 40000 + i % 20000, 443)


def _walk_client(i: int) -> str:
    return f"192.0.2.{i % 254 + 1}"


class Attacker:
    def __init__(self, config: dict) -> None:
        self.edge = config["edge_port"]
        self.http_only = config["http_only_port"]
        self.lb_host = config["lb_host"]
        self.lb_port = config["lb_port"]
        self.sent: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.examples: list[dict] = []

    # --- outcomes ---------------------------------------------------------------------

    def _expect(self, scenario: str, response: client.Response, want: str, requests: int = 1) -> None:
        self.sent[scenario] += requests
        self.connections[scenario] += 1
        if want == "closed":
            good = response.closed and not response.raw
        elif want == "403":
            good = response.status == 403 and response.header("x-trustip-reject") == "untrusted_proxy"
        elif want == "400":
            good = response.status == 400
        else:  # "200": the upstream saw exactly the client the path names
            good = response.status == 200 and response.body == b"ok\n"
        if good:
            self.ok[scenario] += requests
            return
        self.unexpected[scenario] += requests
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"scenario": scenario, "wanted": want, "got": repr(response)[:600]})

    def _request(self, scenario: str, want: str, port: int, *, expect_client: str = "-", **kwargs) -> None:
        try:
            response = client.request(port, path=f"/soak/{scenario}/{expect_client}", timeout=10, **kwargs)
        except OSError as error:
            response = client.Response(status=None, raw=f"error: {error!r}".encode())
        self._expect(scenario, response, want)

    # --- scenarios ----------------------------------------------------------------------

    def round(self, i: int) -> None:
        # Spoofed PROXY headers straight to Envoy, at the listener with trustip's connection
        # role: closed before any HTTP, no byte answered.
        self._request("attack-pp2", "closed", self.edge, source=ATTACKER, proxy=_spoof_v2(i))
        self._request("attack-pp1", "closed", self.edge, source=ATTACKER, proxy=_spoof_v1(i))
        self._request(
            "attack-pp2-ipv6", "closed", self.edge, source=ATTACKER6, dest="::1",
            proxy=client.proxy_v2("2001:db8::bad", "::1", 40000, 443),
        )  # fmt: skip
        # The trusted CDN may not send PROXY either (no rule lets it): refused alike.
        self._request("attack-pp2-from-cdn", "closed", self.edge, source=CDN, proxy=_spoof_v2(i))
        # The same at the listener with the HTTP role alone: 403 untrusted_proxy.
        self._request("attack-pp2-http", "403", self.http_only, source=ATTACKER, proxy=_spoof_v2(i))
        self._request("attack-pp1-http", "403", self.http_only, source=ATTACKER, proxy=_spoof_v1(i))
        # No PROXY, spoofed X-Forwarded-For and look-alikes: served, as itself.
        self._request("attack-xff", "200", self.edge, source=ATTACKER, expect_client=ATTACKER, headers=SPOOF_HEADERS)
        # Claiming to have come through the trusted CDN: its own XFF is never walked.
        self._request(
            "attack-cdn-claim", "200", self.edge, source=ATTACKER, expect_client=ATTACKER,
            headers=[("X-Forwarded-For", f"203.0.113.{i % 250 + 1}, {CDN}")],
        )  # fmt: skip
        # Through the load balancer: the PROXY header HAProxy sends carries the attacker's own
        # address; spoofed headers are not believed.
        self._request(
            "attack-lb-xff", "200", self.lb_port, source=ATTACKER, dest=self.lb_host, expect_client=ATTACKER,
            headers=SPOOF_HEADERS,
        )  # fmt: skip
        # A second PROXY header smuggled through the load balancer is HTTP garbage to Envoy: 400.
        self._request("smuggle-pp2", "400", self.lb_port, source=ATTACKER, dest=self.lb_host, proxy=_spoof_v2(i))
        self._request("smuggle-pp1", "400", self.lb_port, source=ATTACKER, dest=self.lb_host, proxy=_spoof_v1(i))
        # Trusted-proxy walks: the CDN's X-Forwarded-For is believed, up to the first untrusted
        # address from the right (the client's own claims to the left of it are dropped).
        r = _walk_client(i)
        self._request("walk-cdn", "200", self.edge, source=CDN, expect_client=r, headers=[("X-Forwarded-For", r)])
        self._request(
            "walk-cdn-chain", "200", self.edge, source=CDN, expect_client=r,
            headers=[("X-Forwarded-For", f"203.0.113.{i % 250 + 1}, {r}, 10.1.{i % 250}.3")],
        )  # fmt: skip
        # A malformed rightmost element stops the walk: R is the CDN itself (xff_malformed).
        self._request(
            "walk-cdn-malformed", "200", self.edge, source=CDN, expect_client=CDN,
            headers=[("X-Forwarded-For", f"{r}, bogus")],
        )  # fmt: skip
        # The CDN through the load balancer: C is the CDN (from PROXY), trusted, walked.
        self._request(
            "walk-lb", "200", self.lb_port, source=CDN, dest=self.lb_host, expect_client=r,
            headers=[("X-Forwarded-For", f"203.0.113.{i % 250 + 1}, {r}")],
        )  # fmt: skip
        # Ten requests on one kept-alive CDN connection, each with its own client.
        self._keepalive("walk-keepalive", i, 10)

    def _keepalive(self, scenario: str, i: int, count: int) -> None:
        sock = None
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.bind((CDN, 0))
            sock.connect(("127.0.0.1", self.edge))
            buffered = b""
            for k in range(count):
                r = _walk_client(i * count + k)
                request = (
                    f"GET /soak/{scenario}/{r} HTTP/1.1\r\nhost: trustip.test\r\n"
                    f"x-forwarded-for: 203.0.113.{k + 1}, {r}\r\n\r\n"
                ).encode()
                sock.sendall(request)
                while not client._complete(buffered):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buffered += chunk
                if not client._complete(buffered):
                    raise OSError(f"connection ended after {k} responses: {buffered[:200]!r}")
                _, _, rest = buffered.partition(b"\r\n\r\n")
                response = client.parse_response(buffered)
                buffered = rest[len(response.body) :]
                self.sent[scenario] += 1
                if response.status == 200 and response.body == b"ok\n":
                    self.ok[scenario] += 1
                else:
                    self.unexpected[scenario] += 1
                    if len(self.examples) < MAX_EXAMPLES:
                        self.examples.append({"scenario": scenario, "wanted": "200", "got": repr(response)[:600]})
            self.connections[scenario] += 1
        except OSError as error:
            self.connections[scenario] += 1
            self.unexpected[scenario] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append({"scenario": scenario, "wanted": "200", "got": f"error: {error!r}"})
        finally:
            if sock is not None:
                sock.close()

    def result(self, rounds: int, seconds: float) -> dict:
        return {
            "rounds": rounds,
            "seconds": round(seconds, 3),
            "sent": dict(self.sent),
            "ok": dict(self.ok),
            "connections": dict(self.connections),
            "unexpected": dict(self.unexpected),
            "unexpected_total": sum(self.unexpected.values()),
            "examples": self.examples,
            "spoof_stripped_per_request": SPOOF_STRIPPED,
        }


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    attacker = Attacker(config)
    start = time.monotonic()
    deadline = start + config["seconds"]
    stop_file = Path(config["stop_file"]) if config.get("stop_file") else None
    rounds = 0
    while time.monotonic() < deadline and not (stop_file and stop_file.exists()):
        attacker.round(rounds)
        rounds += 1
    Path(config["out"]).write_text(json.dumps(attacker.result(rounds, time.monotonic() - start), indent=1))


if __name__ == "__main__":
    main()
