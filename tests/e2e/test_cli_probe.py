"""`trustip probe` against real listeners beyond the matrix (test_matrix.py): trustip's HTTP role
alone (403 with the reason), IPv6, a path that does not echo headers (verdicts unknown), a server
that is not Envoy, one that never answers, the text report, and the connection budget."""

from __future__ import annotations

import socket
import threading

import pytest

from cli_support import cli  # noqa: F401  (cli is a fixture)
from harness.envoy import Listener

STRANGER = "127.0.0.66"
POLICY = {"rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require"}]}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        # trustip's HTTP role only: rejections are 403 answers, not closed connections.
        Listener(name="http_only_strict", proxy_protocol="strict", plugin=POLICY, ipv6=False),
        Listener(name="http_only_optional", proxy_protocol="optional", plugin=POLICY, ipv6=False),
        # No trustip, listening on 127.0.0.1 and [::1].
        Listener(name="plain_optional_v6", proxy_protocol="optional", http_role=False, ipv6=True),
        Listener(name="trustip_optional_v6", proxy_protocol="optional", plugin=POLICY, network_role=True, ipv6=True),
    )


def probe(cli, target: str, *extra: str, expect=None):  # noqa: F811
    timeout = [] if "--timeout" in extra else ["--timeout", "5"]
    return cli.run("probe", target, "--json", *timeout, *extra, expect=expect)


def test_http_role_rejections_are_reported(envoy, cli):  # noqa: F811
    run = probe(cli, f"127.0.0.1:{envoy.port('http_only_strict')}", "--bind", STRANGER, expect=0)
    report = run.json()
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("requires_proxy", False, None)
    by_name = {p["name"]: p for p in report["probes"]}
    assert by_name["plain"]["outcome"] in ("reset", "closed")
    for name in ("proxy-v1", "proxy-v2"):
        assert (by_name[name]["status"], by_name[name]["trustip_reject"]) == (403, "untrusted_proxy")
    assert "spoofed-xff" not in by_name, "nothing served: the forged headers have no carrier"
    assert any("403 from trustip: untrusted_proxy" in line for line in report["advice"])

    report = probe(cli, f"127.0.0.1:{envoy.port('http_only_optional')}", "--bind", STRANGER, expect=0).json()
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("optional_proxy", False, False)


def test_ipv6_listener(envoy, cli):  # noqa: F811
    run = probe(cli, f"[::1]:{envoy.port('plain_optional_v6')}", expect=3)
    report = run.json()
    assert report["address"] == f"[::1]:{envoy.port('plain_optional_v6')}"
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("optional_proxy", True, True)
    claims = {p["name"]: p["claimed_source"] for p in report["probes"]}
    assert claims["proxy-v1"] == "2001:db8:113::77" and claims["proxy-v2"] == "2001:db8:100::77"
    v2 = next(p for p in report["probes"] if p["name"] == "proxy-v2")
    assert {"planted": "proxy_source", "headers": ["x-envoy-external-address"]} in v2["reached_upstream"]

    report = probe(cli, f"[::1]:{envoy.port('trustip_optional_v6')}", expect=0).json()
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("optional_proxy", False, False)


def test_text_report(envoy, cli):  # noqa: F811
    run = cli.run("probe", f"127.0.0.1:{envoy.port('plain_optional_v6')}", expect=3)
    lines = run.out.splitlines()
    assert lines[0].startswith("trustip probe 127.0.0.1:")
    for needle in ("plain", "proxy-v1", "proxy-v2", "spoofed-xff", "PROXY v1 claiming 203.0.113.77",
                   "PROXY v2 claiming 198.51.100.77", "optional_proxy", "advice:",
                   "this listener believes PROXY headers from anyone", "add trustip rules",
                   "a client-supplied X-Forwarded-For reaches the upstream: let trustip overwrite it"):  # fmt: skip
        assert needle in run.out, (needle, run.out)
    assert any(line.split()[:2] == ["proxy_spoofable", "yes"] for line in lines), run.out
    assert any(line.split()[:2] == ["xff_spoofable", "yes"] for line in lines), run.out


class TinyServer:
    """A TCP server on 127.0.0.1 that counts connections and answers each with `reply(data)`
    (None: say nothing and hold the connection until the client goes)."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                data = conn.recv(65536)
                answer = self.reply(data)
                if answer is None:
                    conn.recv(1)  # until the client closes
                    return
                conn.sendall(answer)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def _http(status: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body


def test_server_without_proxy_support_and_no_echo(cli):  # noqa: F811
    """A plain HTTP server: PROXY lines are bad requests to it; its body echoes nothing."""

    def reply(data: bytes) -> bytes:
        if data.startswith((b"PROXY ", b"\r\n\r\n\x00\r\nQUIT\n")):
            return _http("400 Bad Request", b"bad request")
        return _http("200 OK", b"hello")

    server = TinyServer(reply)
    try:
        report = probe(cli, f"127.0.0.1:{server.port}", expect=0).json()
    finally:
        server.close()
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("no_proxy", False, None)
    assert server.connections == len(report["probes"]) == 4
    assert any("endpoint that echoes request headers" in line for line in report["advice"])


def test_served_proxy_without_echo_is_unknown(cli):  # noqa: F811
    server = TinyServer(lambda data: _http("200 OK", b"welcome"))
    try:
        run = probe(cli, f"127.0.0.1:{server.port}", expect=0)
    finally:
        server.close()
    report = run.json()
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("optional_proxy", None, None)
    assert any("does not echo request headers" in line for line in report["advice"])


def test_silent_server_times_out(cli):  # noqa: F811
    server = TinyServer(lambda data: None)
    try:
        report = probe(cli, f"127.0.0.1:{server.port}", "--timeout", "0.3", expect=4).json()
    finally:
        server.close()
    assert report["listener"] == "unreachable"
    assert [p["outcome"] for p in report["probes"]] == ["timeout", "timeout", "timeout"]
    assert "no request got an HTTP answer" in report["advice"][0]


def test_probe_sends_only_to_the_target(envoy, cli, echo):  # noqa: F811
    """All of the probe's requests arrive at the one listener given (the recording upstream
    behind it sees the served ones), each carrying the probe's token header."""
    before = len(echo.requests)
    report = probe(cli, f"127.0.0.1:{envoy.port('plain_optional_v6')}", expect=3).json()
    served = [p for p in report["probes"] if p["status"] == 200]
    new = echo.requests[before:]
    tokens = {r.text("x-trustip-probe") for r in new}
    assert len(new) == len(served) == 4 and len(tokens) == 1 and None not in tokens
