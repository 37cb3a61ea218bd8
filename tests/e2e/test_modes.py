"""Enforcement knobs: shadow mode, reject_status, and a missing direct peer (issue 2,
"Inputs" and "mode"; contract: shadow decisions)."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener, wait_for_line
from harness.expect import decisions, reject_body

# The wasm build takes D from set_filter_state (`direct_peer.filter_state`) and can miss it; the
# native build reads D from the connection (docs/native.md): D is never missing there, and
# direct_peer.* is accepted and unused.
NATIVE_READS_D = pytest.mark.wasm_only(
    "a missing direct peer: the native build reads D natively, direct_peer.* is unused (docs/native.md)"
)

LB = "127.0.0.5"
ATTACKER = "127.0.0.66"
SPOOFED = "203.0.113.9"
RULES = [
    {"from": [f"{LB}/32"], "proxy_protocol": "require"},
    {"from": ["127.0.0.14/32"], "proxy_protocol": "deny"},
]


def pp(source: str = SPOOFED) -> bytes:
    return client.proxy_v2(source, "10.0.0.1", 1111, 80)


@pytest.fixture(scope="module")
def envoy(start_envoy):
    shadow = {"mode": "shadow", "rules": RULES}
    no_peer = {"rules": [{"from": ["127.0.0.0/8"], "proxy_protocol": "use"}]}
    trust_source = {
        "direct_peer": {"if_missing": "trust_source"},
        "rules": [
            {"from": ["203.0.113.66/32"], "proxy_protocol": "deny"},
            {"from": ["203.0.113.0/24"], "proxy_protocol": "use"},
        ],
    }
    return start_envoy(
        Listener(name="shadow", plugin=shadow, access_log=True),
        Listener(name="shadow-network", plugin=shadow, network_role=True, http_role=False),
        Listener(name="shadow-no-peer", plugin=shadow, set_filter_state=False),
        Listener(name="status", plugin={"rules": RULES, "reject_status": 451}),
        Listener(name="no-peer", plugin=no_peer, set_filter_state=False),
        Listener(name="no-peer-network", plugin=no_peer, set_filter_state=False, network_role=True, http_role=False),
        Listener(name="trust-source", plugin=trust_source, set_filter_state=False),
        Listener(
            name="custom-key",
            plugin={"direct_peer": {"filter_state": "lb.peer"}, "rules": RULES},
            direct_peer_key="lb.peer",
        ),
        Listener(name="wrong-key", plugin={"rules": RULES}, direct_peer_key="lb.peer"),
    )


SHADOW = [
    # (peer, PROXY source or None, would-be reason or None, expected C)
    pytest.param(ATTACKER, SPOOFED, "untrusted_proxy", ATTACKER, id="spoofed-proxy"),
    pytest.param(LB, None, "missing_proxy", LB, id="lb-without-proxy"),
    pytest.param("127.0.0.14", None, "denied", "127.0.0.14", id="denied"),
    pytest.param("127.0.0.14", SPOOFED, "denied", "127.0.0.14", id="denied-with-proxy"),
    pytest.param(LB, SPOOFED, None, SPOOFED, id="legit"),
]


@pytest.mark.parametrize("peer,source,reason,c", SHADOW)
def test_shadow_http(envoy, counters, peer, source, reason, c):
    watch = counters(envoy)
    response = client.request(envoy.port("shadow"), [("x-forwarded-for", "6.6.6.6")], source=peer, proxy=pp(source) if source else b"")
    delta = decisions(watch.delta())
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == c
    assert response.upstream_header("x-envoy-external-address") == c
    assert not [name for name in delta if ".reject_" in name], delta
    if reason:
        assert delta.get(f"trustip.http.shadow_{reason}") == 1, delta
    else:
        assert delta == {"trustip.http.accept_proxy": 1}


@pytest.mark.parametrize("peer,source,reason,c", SHADOW)
def test_shadow_network(envoy, counters, peer, source, reason, c):
    watch = counters(envoy)
    response = client.request(envoy.port("shadow-network"), source=peer, proxy=pp(source) if source else b"")
    delta = decisions(watch.delta())
    assert response.status == 200, response
    assert not [name for name in delta if ".reject_" in name], delta
    if reason:
        assert delta.get(f"trustip.network.shadow_{reason}") == 1, delta
    else:
        assert delta == {"trustip.network.accept_proxy": 1}


def test_shadow_access_log_reason(envoy):
    response = client.request(envoy.port("shadow"), source=ATTACKER, proxy=pp())
    assert response.status == 200, response
    line = wait_for_line(envoy.listeners["shadow"].access_log, response.test_id)
    assert f"client_ip={ATTACKER} " in line, line
    assert "reason=shadow_untrusted_proxy " in line, line


@NATIVE_READS_D
def test_shadow_without_direct_peer_uses_source(envoy, counters):
    """Contract: in shadow mode with D missing, C = P."""
    watch = counters(envoy)
    response = client.request(envoy.port("shadow-no-peer"), source=ATTACKER, proxy=pp())
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == SPOOFED
    assert decisions(watch.delta()).get("trustip.http.shadow_no_direct_peer") == 1


def test_custom_reject_status(envoy, echo):
    response = client.request(envoy.port("status"), source=ATTACKER, proxy=pp())
    assert response.status == 451, response
    assert response.body == reject_body("untrusted_proxy")
    assert response.header("x-trustip-reject") == "untrusted_proxy"
    assert echo.find(response.test_id) is None


@NATIVE_READS_D
@pytest.mark.parametrize("source", [None, SPOOFED])
def test_missing_direct_peer_rejects(envoy, echo, counters, source):
    watch = counters(envoy)
    response = client.request(envoy.port("no-peer"), source=ATTACKER, proxy=pp(source) if source else b"")
    assert response.status == 403, response
    assert response.body == reject_body("no_direct_peer")
    assert echo.find(response.test_id) is None
    assert decisions(watch.delta()) == {"trustip.http.reject_no_direct_peer": 1}


@NATIVE_READS_D
def test_missing_direct_peer_logged_with_fix(envoy):
    client.request(envoy.port("no-peer"), source=ATTACKER)
    line = envoy.wait_for_log("no_direct_peer")
    assert "trustip" in line
    # ...and somewhere the log says how to fix the Envoy config.
    envoy.wait_for_log("set_filter_state")


@NATIVE_READS_D
def test_missing_direct_peer_network_closes(envoy, counters):
    watch = counters(envoy)
    response = client.request(envoy.port("no-peer-network"), source=ATTACKER)
    assert response.closed, response
    assert decisions(watch.delta()) == {"trustip.network.reject_no_direct_peer": 1}


@pytest.mark.native_only("the native build reads D from the connection: set_filter_state is not needed")
@pytest.mark.parametrize(
    "listener,source,c",
    [
        pytest.param("no-peer", None, ATTACKER, id="http-direct"),
        pytest.param("no-peer", SPOOFED, SPOOFED, id="http-proxy"),
        pytest.param("no-peer-network", None, ATTACKER, id="network-direct"),
    ],
)
def test_native_needs_no_set_filter_state(envoy, counters, listener, source, c):
    """The listeners whose wasm filters miss D (no set_filter_state): natively D is known, and
    the policy (127.0.0.0/8 `use`) decides as it would with D."""
    watch = counters(envoy)
    response = client.request(envoy.port(listener), source=ATTACKER, proxy=pp(source) if source else b"")
    assert response.status == 200, response
    role = "network" if listener.endswith("network") else "http"
    if role == "http":
        assert response.upstream_header("x-forwarded-for") == c
    reason = "proxy" if source else "direct"
    assert decisions(watch.delta()) == {f"trustip.{role}.accept_{reason}": 1}


TRUST_SOURCE = [
    # D := P. The PROXY address is the direct peer, so PROXY counts as absent (P = D).
    pytest.param(SPOOFED, 200, SPOOFED, id="proxy-source-is-direct-peer"),
    pytest.param(None, 200, ATTACKER, id="no-proxy-real-peer"),
    pytest.param("203.0.113.66", 403, "denied", id="rules-match-proxy-source"),
]


@NATIVE_READS_D
@pytest.mark.parametrize("source,status,value", TRUST_SOURCE)
def test_if_missing_trust_source(envoy, source, status, value):
    response = client.request(envoy.port("trust-source"), source=ATTACKER, proxy=pp(source) if source else b"")
    assert response.status == status, response
    if status == 200:
        assert response.upstream_header("x-forwarded-for") == value
    else:
        assert response.header("x-trustip-reject") == value


def test_custom_direct_peer_key(envoy, counters):
    watch = counters(envoy)
    ok = client.request(envoy.port("custom-key"), source=LB, proxy=pp())
    assert ok.status == 200, ok
    assert ok.upstream_header("x-forwarded-for") == SPOOFED
    spoofed = client.request(envoy.port("custom-key"), source=ATTACKER, proxy=pp())
    assert spoofed.status == 403 and spoofed.header("x-trustip-reject") == "untrusted_proxy", spoofed
    assert decisions(watch.delta()) == {"trustip.http.accept_proxy": 1, "trustip.http.reject_untrusted_proxy": 1}


@NATIVE_READS_D
def test_direct_peer_under_another_key_is_missing(envoy):
    """The plugin reads `trustip.direct_peer` (default) but Envoy wrote `lb.peer`."""
    response = client.request(envoy.port("wrong-key"), source=LB, proxy=pp())
    assert response.status == 403, response
    assert response.header("x-trustip-reject") == "no_direct_peer"
