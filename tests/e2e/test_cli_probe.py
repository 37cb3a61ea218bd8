"""`trustip probe` against real listeners beyond the matrix (test_matrix.py): trustip's HTTP role
alone (403 with the reason), IPv6, a path that does not echo headers (verdicts unknown), a server
that is not Envoy, one that never answers, the text report, and the connection budget.

`probe --health-check PATH` (issue 9), each cause against a real listener, in both builds where
trustip decides: a closed port (unreachable), Envoy without the proxy_protocol listener filter
(proxy_not_expected), a strict policy without health_check_paths (proxy_local_refused: closed by
the network role / listener filter of a rendered gateway, or 403 missing_proxy from the HTTP
role alone), the same with the field (healthy: Envoy's health_check filter, or the upstream),
Envoy failed by its admin (unhealthy_status 503), a server answering 404."""

from __future__ import annotations

import socket
import threading

import pytest

from cli_support import RenderedEnvoy, cli, native, render_envoy, scratch_dir, write_policy  # noqa: F401  (fixtures)
from harness import net
from harness.envoy import Listener

STRANGER = "127.0.0.66"
LB = "127.0.0.5"
POLICY = {"rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require"}]}
HEALTH = "/healthz/ready"
HEALTH_POLICY = {"rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require", "health_check_paths": [HEALTH]}]}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        # trustip's HTTP role only: rejections are 403 answers, not closed connections.
        Listener(name="http_only_strict", proxy_protocol="strict", plugin=POLICY, ipv6=False),
        Listener(name="http_only_optional", proxy_protocol="optional", plugin=POLICY, ipv6=False),
        # No trustip, listening on 127.0.0.1 and [::1].
        Listener(name="plain_optional_v6", proxy_protocol="optional", http_role=False, ipv6=True),
        Listener(name="trustip_optional_v6", proxy_protocol="optional", plugin=POLICY, network_role=True, ipv6=True),
        # Health checks: Envoy without proxy_protocol and without trustip; trustip's HTTP role
        # alone in both builds, with and without health_check_paths.
        Listener(name="no_proxy_protocol", proxy_protocol="none", http_role=False, ipv6=False),
        Listener(name="hc_refused_wasm", proxy_protocol="optional", plugin=POLICY, ipv6=False, build="wasm"),
        Listener(name="hc_refused_native", proxy_protocol="optional", plugin=POLICY, ipv6=False, build="native"),
        Listener(name="hc_admitted_wasm", proxy_protocol="optional", plugin=HEALTH_POLICY, ipv6=False, build="wasm"),
        Listener(name="hc_admitted_native", proxy_protocol="optional", plugin=HEALTH_POLICY, ipv6=False, build="native"),
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


# --- probe --health-check ----------------------------------------------------------------


def health(cli, port: int, *extra: str, expect=None, path: str = HEALTH):  # noqa: F811
    return probe(cli, f"127.0.0.1:{port}", "--health-check", path, *extra, expect=expect)


def by_name(report: dict) -> dict:
    return {p["name"]: p for p in report["probes"]}


def test_health_check_closed_port(cli):  # noqa: F811
    port = net.free_port()
    report = health(cli, port, expect=4).json()
    assert (report["cause"], report["status"]) == ("unreachable", None)
    assert [p["name"] for p in report["probes"]] == ["connect"], "nothing more after a failed connect"
    assert report["probes"][0]["outcome"] == "connect_failed"
    assert report["fix"].startswith("fix: nothing accepts a TCP connection") and "port" in report["fix"]


@pytest.mark.parametrize("version,name", [("2", "proxy-v2-local"), ("1", "proxy-v1-unknown")])
def test_health_check_without_proxy_protocol(envoy, cli, version, name):  # noqa: F811
    """The load balancer sends PROXY on its health check; the listener has no proxy_protocol."""
    report = health(cli, envoy.port("no_proxy_protocol"), "--proxy-version", version, expect=3).json()
    assert report["cause"] == "proxy_not_expected", report
    probes = by_name(report)
    assert (probes[name]["status"], probes["plain"]["status"]) == (400, 200)
    assert "add the proxy_protocol listener filter" in report["fix"] and "turn PROXY off" in report["fix"]


@pytest.mark.parametrize("which", ["wasm", "native"])
def test_health_check_refused_by_the_http_role(envoy, cli, which):  # noqa: F811
    """trustip's HTTP role alone: the load balancer's LOCAL health check is a 403 missing_proxy."""
    report = health(cli, envoy.port(f"hc_refused_{which}"), "--bind", LB, expect=3).json()
    assert report["cause"] == "proxy_local_refused", report
    local = by_name(report)["proxy-v2-local"]
    assert (local["status"], local["trustip_reject"]) == (403, "missing_proxy")
    assert f'add "health_check_paths": ["{HEALTH}"] to the load balancer\'s require rule' in report["fix"]
    assert any(f"came from {LB}" in line for line in report["advice"]), report["advice"]
    # From an address outside the rule the implicit rule admits it: the probe cannot tell,
    # which is why it says where it came from.
    report = health(cli, envoy.port(f"hc_refused_{which}"), "--bind", STRANGER, expect=0).json()
    assert report["cause"] == "healthy"
    assert any(f"came from {STRANGER}" in line and "--bind" in line for line in report["advice"])


@pytest.mark.parametrize("which", ["wasm", "native"])
def test_health_check_admitted_by_the_http_role(envoy, cli, which):  # noqa: F811
    report = health(cli, envoy.port(f"hc_admitted_{which}"), "--bind", LB, expect=0).json()
    assert (report["cause"], report["status"]) == ("healthy", 200), report
    # Another path is refused on the same kind of connection.
    report = health(cli, envoy.port(f"hc_admitted_{which}"), "--bind", LB, expect=3, path="/other").json()
    assert (report["cause"], by_name(report)["proxy-v2-local"]["trustip_reject"]) == ("proxy_local_refused", "missing_proxy")


@pytest.fixture(scope="module", params=["wasm", "native"])
def rendered_gateways(request, cli, echo, wasm, native):  # noqa: F811
    """Two gateways rendered by `trustip render` for one build: a strict policy without
    health_check_paths, and one with them plus --health-check-path."""
    kind = {"native": native} if request.param == "native" else {"wasm": wasm}
    directory = scratch_dir(f"probe-health-{request.param}")
    instances = {}
    for name, policy, extra in (
        ("strict", POLICY, ()),
        ("ready", HEALTH_POLICY, ("--health-check-path", HEALTH)),
    ):
        text, port = render_envoy(cli, write_policy(directory, name, policy), echo.port, *extra, **kind)
        instances[name] = (RenderedEnvoy(text, name=f"probe-health-{name}-{request.param}").start(), port)
    yield instances
    for instance, _ in instances.values():
        instance.stop()


def test_health_check_closed_by_trustip(rendered_gateways, cli):  # noqa: F811
    """The rendered gateway's network role (wasm) or listener filter (native) closes the load
    balancer's LOCAL health check: a require rule without health_check_paths."""
    _, port = rendered_gateways["strict"]
    run = health(cli, port, "--bind", LB, expect=3)
    report = run.json()
    assert report["cause"] == "proxy_local_refused", report
    probes = by_name(report)
    assert probes["connect"]["outcome"] == "connected"
    assert probes["proxy-v2-local"]["outcome"] in ("closed", "reset")
    assert probes["plain"]["outcome"] in ("closed", "reset")
    assert f'add "health_check_paths": ["{HEALTH}"]' in report["fix"] and "closed without a reply" in report["fix"]
    # The text report says the same.
    text = cli.run("probe", f"127.0.0.1:{port}", "--health-check", HEALTH, "--bind", LB, expect=3).out
    for needle in ("proxy-v2-local", "PROXY v2 LOCAL (no addresses)", "cause  proxy_local_refused", "advice:",
                   f'add "health_check_paths": ["{HEALTH}"]'):  # fmt: skip
        assert needle in text, (needle, text)


def test_health_check_answered_by_envoy(rendered_gateways, cli, echo):  # noqa: F811
    """With health_check_paths and --health-check-path: healthy, answered by Envoy (the upstream
    never sees it); failed by the admin (as while draining): 503."""
    instance, port = rendered_gateways["ready"]
    before = len(echo.requests)
    for version in ("2", "1"):
        report = health(cli, port, "--bind", LB, "--proxy-version", version, expect=0).json()
        assert (report["cause"], report["status"]) == ("healthy", 200), report
    assert len(echo.requests) == before, "Envoy's health_check filter answered, not the upstream"
    instance.admin("/healthcheck/fail", method="POST")
    try:
        report = health(cli, port, "--bind", LB, expect=3).json()
    finally:
        instance.admin("/healthcheck/ok", method="POST")
    assert (report["cause"], report["status"]) == ("unhealthy_status", 503), report
    assert "drains" in report["fix"]


def test_health_check_not_found(cli):  # noqa: F811
    server = TinyServer(lambda data: _http("404 Not Found", b"no such page"))
    try:
        report = health(cli, server.port, expect=3).json()
    finally:
        server.close()
    assert (report["cause"], report["status"]) == ("unhealthy_status", 404), report
    assert "--health-check-path" in report["fix"]
    assert server.connections == 3, "connect, the health check, the plain request"


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--proxy-version", "1"], "--proxy-version is for --health-check"),
        (["--health-check", HEALTH, "--proxy-version", "3"], "expected 1 (PROXY v1 UNKNOWN) or 2"),
        (["--health-check", "healthz"], "--health-check \"healthz\": expected an absolute path"),
    ],
)
def test_health_check_usage_errors(cli, extra, needle):  # noqa: F811
    run = cli.run("probe", "127.0.0.1:1", *extra, expect=2)
    assert needle in run.err and len(run.err.strip().splitlines()) == 1, run
