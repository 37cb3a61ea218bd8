"""Counters in /stats, the access-log recipe, the rejection log line (issue 2, "Observability")."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener, wait_for_line

LB = "127.0.0.5"
ATTACKER = "127.0.0.66"
PLUGIN = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}, {"from": ["127.0.0.14/32"], "proxy_protocol": "deny"}],
    "xff": {"trusted": ["173.245.48.0/20"]},
}


def pp(source: str, port: int = 1111) -> bytes:
    return client.proxy_v2(source, "10.0.0.1", port, 80)


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="http", plugin=PLUGIN, access_log=True),
        Listener(name="network", plugin=PLUGIN, network_role=True, http_role=False, connection_log=True),
        Listener(name="empty-root-id", plugin=PLUGIN, http_root_id=""),
    )


def test_counters_in_stats(envoy, build_names):
    """Every outcome has a counter: drive one of each and read them back from /stats (wasm:
    `wasmcustom.trustip.http.*`; native: `trustip.http.*`, the module's metrics_namespace)."""
    port = envoy.port("http")
    before = envoy.stats(build_names.stats_filter)
    client.request(port, source=LB, proxy=pp("203.0.113.9"))  # accept_proxy
    client.request(port, source=ATTACKER)  # accept_direct
    client.request(port, [("x-forwarded-for", "1.1.1.1")], source=LB, proxy=pp("173.245.48.7"))  # accept_xff
    client.request(port, source=ATTACKER, proxy=pp("203.0.113.9"))  # reject_untrusted_proxy
    client.request(port, source=LB)  # reject_missing_proxy
    client.request(port, source="127.0.0.14")  # reject_denied
    client.request(port, [("x-forwarded-for", "1.1.1.1, nonsense")], source=LB, proxy=pp("173.245.48.7"))  # xff_malformed
    client.request(port, [("x-real-ip", "6.6.6.6")], source=ATTACKER)  # headers_stripped
    after = envoy.stats(build_names.stats_filter)
    text = envoy.admin(f"/stats?filter={build_names.stats_filter}")
    for name in [
        "accept_proxy",
        "accept_direct",
        "accept_xff",
        "reject_untrusted_proxy",
        "reject_missing_proxy",
        "reject_denied",
        "xff_malformed",
        "headers_stripped",
    ]:
        stat = build_names.stat(f"trustip.http.{name}")
        assert f"{stat}: " in text, f"{stat} not in /stats:\n{text}"
        assert after[stat] - before.get(stat, 0) >= 1, stat


def test_network_counters_in_stats(envoy, build_names):
    port = envoy.port("network")
    before = envoy.stats(build_names.stats_filter)
    client.request(port, source=LB, proxy=pp("203.0.113.9"))
    client.request(port, source=ATTACKER, proxy=pp("203.0.113.9"))
    after = envoy.stats(build_names.stats_filter)
    for name in ("accept_proxy", "reject_untrusted_proxy"):
        stat = build_names.stat(f"trustip.network.{name}")
        assert after.get(stat, 0) - before.get(stat, 0) == 1, stat


@pytest.mark.parametrize(
    "peer,proxy,xff,status,client_ip,reason",
    [
        pytest.param(LB, "203.0.113.9", None, 200, "203.0.113.9", "proxy", id="proxy"),
        pytest.param(ATTACKER, None, None, 200, ATTACKER, "direct", id="direct"),
        pytest.param(LB, "173.245.48.7", "1.1.1.1", 200, "1.1.1.1", "xff", id="xff"),
        pytest.param(ATTACKER, "203.0.113.9", None, 403, "-", "untrusted_proxy", id="untrusted-proxy"),
        pytest.param(LB, None, None, 403, "-", "missing_proxy", id="missing-proxy"),
        pytest.param("127.0.0.14", None, None, 403, "-", "denied", id="denied"),
    ],
)
def test_access_log_recipe(envoy, peer, proxy, xff, status, client_ip, reason):
    """`%FILTER_STATE(wasm.trustip.client_ip:PLAIN)%` and `...reason:PLAIN` print the decision
    (native: `trustip.client_ip`, `trustip.reason`; the harness's log format follows the build)."""
    headers = [("x-forwarded-for", xff)] if xff else []
    response = client.request(envoy.port("http"), headers, source=peer, proxy=pp(proxy) if proxy else b"")
    assert response.status == status, response
    line = wait_for_line(envoy.listeners["http"].access_log, f"test_id={response.test_id} ")
    assert f" client_ip={client_ip} " in line, line
    assert f" reason={reason} " in line, line
    assert f" status={status}" in line, line


def test_rejection_log_line(envoy):
    """One info line per rejection, with the reason, D and P."""
    start = envoy.log_size()
    response = client.request(envoy.port("http"), source=ATTACKER, proxy=pp("203.0.113.9", 4242))
    assert response.status == 403, response
    line = envoy.wait_for_log(f"{ATTACKER}:{response.local_port}", start=start)
    assert "untrusted_proxy" in line, line
    assert "203.0.113.9:4242" in line, line
    assert "[info]" in line, line


def test_rejection_log_line_network(envoy):
    start = envoy.log_size()
    response = client.request(envoy.port("network"), source=LB)
    assert response.closed, response
    line = envoy.wait_for_log(f"{LB}:{response.local_port}", start=start)
    assert "missing_proxy" in line, line


@pytest.mark.wasm_only("root_id is a proxy-wasm concept: the native filters are chosen by filter_name")
def test_empty_root_id_is_http_role(envoy, counters):
    watch = counters(envoy)
    response = client.request(envoy.port("empty-root-id"), source=ATTACKER, proxy=pp("203.0.113.9"))
    assert response.status == 403, response
    assert watch.delta().get("trustip.http.reject_untrusted_proxy") == 1
