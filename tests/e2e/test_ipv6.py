"""IPv6 peers and PROXY headers, and IPv4-mapped IPv6 addresses, which are matched and written as
IPv4 everywhere: the direct peer, the PROXY source, XFF (issue 2)."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener
from harness.expect import decisions

PLUGIN = {
    "rules": [
        {"from": ["::1/128"], "proxy_protocol": "use"},
        {"from": ["127.0.0.5/32"], "proxy_protocol": "require"},
        {"from": ["127.0.0.14/32"], "proxy_protocol": "deny"},
    ],
    "xff": {"trusted": ["173.245.48.0/20", "2400:cb00::/32"]},
}
V6_ONLY_LB = {"rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require"}]}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="main", plugin=PLUGIN),
        Listener(name="network", plugin=PLUGIN, network_role=True, http_role=False),
        # IPv4 clients reach this one as IPv4-mapped peers: D = [::ffff:127.0.0.x]:port
        Listener(name="mapped", plugin=PLUGIN, dual_stack=True),
        Listener(name="mapped-network", plugin=PLUGIN, dual_stack=True, network_role=True, http_role=False),
        Listener(name="strict-v4", plugin=V6_ONLY_LB),
    )


def v2(src, dst="2001:db8::1", sport=1111, dport=443):
    return client.proxy_v2(src, dst, sport, dport)


CASES = [
    # (listener, peer, PROXY header, XFF, expected status, expected R / reject reason)
    pytest.param("main", "::1", b"", None, 200, "::1", id="ipv6-direct-peer"),
    pytest.param("main", "::1", v2("2001:db8::7"), None, 200, "2001:db8::7", id="ipv6-proxy-v2-tcp6"),
    pytest.param("main", "::1", client.proxy_v1("2001:db8::7", "2001:db8::1", 1111, 443), None, 200, "2001:db8::7", id="ipv6-proxy-v1-tcp6"),
    pytest.param("main", "127.0.0.5", v2("2001:db8::8"), None, 200, "2001:db8::8", id="tcp6-header-over-ipv4-peer"),
    pytest.param("main", "::1", v2("::ffff:203.0.113.9", "::ffff:10.0.0.1"), None, 200, "203.0.113.9", id="ipv4-mapped-proxy-source"),
    pytest.param("main", "127.0.0.5", v2("::ffff:203.0.113.9", "::ffff:10.0.0.1"), None, 200, "203.0.113.9", id="ipv4-mapped-proxy-source-via-lb"),
    pytest.param(
        "main", "127.0.0.5", v2("::ffff:173.245.48.7", "::ffff:10.0.0.1"), "1.1.1.1", 200, "1.1.1.1", id="ipv4-mapped-source-is-trusted"
    ),
    pytest.param("main", "127.0.0.5", v2("2400:cb00::7"), "2001:db8::99", 200, "2001:db8::99", id="ipv6-trusted-source-walk"),
    pytest.param("strict-v4", "::1", v2("2001:db8::7"), None, 403, "untrusted_proxy", id="ipv6-attacker-proxy"),
    pytest.param("strict-v4", "::1", b"", None, 200, "::1", id="ipv6-attacker-direct"),
    # IPv4-mapped direct peers match IPv4 rules and are written as IPv4.
    pytest.param("mapped", "127.0.0.5", v2("203.0.113.9", "10.0.0.1"), None, 200, "203.0.113.9", id="mapped-peer-matches-ipv4-rule"),
    pytest.param("mapped", "127.0.0.5", b"", None, 403, "missing_proxy", id="mapped-peer-require"),
    pytest.param("mapped", "127.0.0.14", b"", None, 403, "denied", id="mapped-peer-denied"),
    pytest.param("mapped", "127.0.0.66", b"", None, 200, "127.0.0.66", id="mapped-peer-written-as-ipv4"),
    pytest.param("mapped", "127.0.0.66", v2("203.0.113.9", "10.0.0.1"), None, 403, "untrusted_proxy", id="mapped-peer-spoofing"),
]


@pytest.mark.parametrize("listener,peer,header,xff,status,value", CASES)
def test_ipv6_and_mapped(envoy, echo, listener, peer, header, xff, status, value):
    headers = [("x-forwarded-for", xff)] if xff else []
    response = client.request(envoy.port(listener), headers, source=peer, proxy=header)
    assert response.status == status, response
    if status == 200:
        assert response.upstream_header("x-envoy-external-address") == value
        xff_out = response.upstream_header("x-forwarded-for")
        assert xff_out.split(", ")[0] == value, xff_out
        assert "::ffff:" not in xff_out, xff_out
    else:
        assert response.header("x-trustip-reject") == value
        assert echo.find(response.test_id) is None


@pytest.mark.parametrize(
    "listener,peer,header,closed",
    [
        pytest.param("network", "::1", v2("2001:db8::7"), False, id="ipv6-use"),
        pytest.param("mapped-network", "127.0.0.5", v2("203.0.113.9", "10.0.0.1"), False, id="mapped-lb"),
        pytest.param("mapped-network", "127.0.0.66", v2("203.0.113.9", "10.0.0.1"), True, id="mapped-attacker"),
        pytest.param("mapped-network", "127.0.0.14", b"", True, id="mapped-denied"),
    ],
)
def test_network_role_ipv6_and_mapped(envoy, counters, listener, peer, header, closed):
    watch = counters(envoy)
    response = client.request(envoy.port(listener), source=peer, proxy=header)
    assert response.closed == closed, response
    delta = decisions(watch.delta())
    assert sum(delta.values()) == 1, delta
    assert all(name.startswith("trustip.network.") for name in delta), delta
