"""The X-Forwarded-For walk (issue 2, "XFF walk"), seen through the default header plan:
`x_forwarded_for: overwrite` writes the verified chain (R, the trusted hops walked over, C) and
`x-envoy-external-address` is set to R."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener
from harness.expect import decisions

LB = "127.0.0.5"
EDGE = "173.245.48.7"  # C: a CDN edge (trusted) that the load balancer reports in PROXY
TRUSTED = ["173.245.48.0/20", "2400:cb00::/32", "127.0.0.31/32"]
RULES = [
    {"from": [f"{LB}/32"], "proxy_protocol": "require"},
    {"from": ["127.0.0.31/32"], "proxy_protocol": "use"},
]
PLUGIN = {"rules": RULES, "xff": {"trusted": TRUSTED}}
LIMITED = {"rules": RULES, "xff": {"trusted": TRUSTED, "max_entries": 3}}


def via_lb(source: str = EDGE) -> bytes:
    return client.proxy_v2(source, "10.0.0.1", 50000, 443)


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(Listener(name="default", plugin=PLUGIN), Listener(name="limited", plugin=LIMITED))


def check(envoy, counters, listener, xff_lines, expected_r, expected_xff, extra=None, *, source=LB, proxy=None):
    watch = counters(envoy)
    headers = [("x-forwarded-for", line) for line in xff_lines]
    response = client.request(envoy.port(listener), headers, source=source, proxy=via_lb() if proxy is None else proxy)
    delta = watch.delta()
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == expected_xff
    assert response.upstream_header("x-envoy-external-address") == expected_r
    c = expected_xff.split(", ")[-1]
    reason = "xff" if expected_r != c else "proxy"  # C always comes from PROXY here
    assert decisions(delta) == {f"trustip.http.accept_{reason}": 1}
    for name, change in (extra or {}).items():
        assert delta.get(name, 0) == change, (name, delta)
    return delta


WALK = [
    pytest.param(["1.1.1.1"], "1.1.1.1", f"1.1.1.1, {EDGE}", id="one-trusted-hop"),
    pytest.param(
        ["1.1.1.1, 173.245.48.9, 173.245.48.10"],
        "1.1.1.1",
        f"1.1.1.1, 173.245.48.9, 173.245.48.10, {EDGE}",
        id="several-trusted-hops",
    ),
    pytest.param(
        ["6.6.6.6, 1.1.1.1, 173.245.48.9"], "1.1.1.1", f"1.1.1.1, 173.245.48.9, {EDGE}", id="spoofed-left-part-dropped"
    ),
    pytest.param(
        ["173.245.48.20, 173.245.48.21"],
        "173.245.48.20",
        f"173.245.48.20, 173.245.48.21, {EDGE}",
        id="all-trusted-leftmost",
    ),
    pytest.param([], EDGE, EDGE, id="no-xff"),
    pytest.param(["1.1.1.1:8080"], "1.1.1.1", f"1.1.1.1, {EDGE}", id="ipv4-with-port"),
    pytest.param(["1.1.1.1, 173.245.48.9:443"], "1.1.1.1", f"1.1.1.1, 173.245.48.9, {EDGE}", id="trusted-hop-with-port"),
    pytest.param(["2001:db8::1"], "2001:db8::1", f"2001:db8::1, {EDGE}", id="ipv6"),
    pytest.param(["[2001:db8::1]:443"], "2001:db8::1", f"2001:db8::1, {EDGE}", id="ipv6-bracket-port"),
    pytest.param(["[2001:db8::1]"], "2001:db8::1", f"2001:db8::1, {EDGE}", id="ipv6-bracket"),
    pytest.param(["1.1.1.1, 2400:cb00::1"], "1.1.1.1", f"1.1.1.1, 2400:cb00::1, {EDGE}", id="ipv6-trusted-hop"),
    pytest.param(
        ["1.1.1.1, [2400:cb00::2]:8443"], "1.1.1.1", f"1.1.1.1, 2400:cb00::2, {EDGE}", id="ipv6-bracket-trusted-hop"
    ),
    pytest.param(["  1.1.1.1  ,\t173.245.48.9 "], "1.1.1.1", f"1.1.1.1, 173.245.48.9, {EDGE}", id="whitespace"),
    pytest.param(["1.1.1.1", "173.245.48.9"], "1.1.1.1", f"1.1.1.1, 173.245.48.9, {EDGE}", id="two-header-lines"),
    pytest.param(["1.1.1.1", "2.2.2.2"], "2.2.2.2", f"2.2.2.2, {EDGE}", id="two-header-lines-rightmost-wins"),
    pytest.param(["::ffff:1.1.1.1"], "1.1.1.1", f"1.1.1.1, {EDGE}", id="ipv4-mapped-client"),
    pytest.param(
        ["1.1.1.1, ::ffff:173.245.48.9"], "1.1.1.1", f"1.1.1.1, 173.245.48.9, {EDGE}", id="ipv4-mapped-trusted-hop"
    ),
]


@pytest.mark.parametrize("xff,r,expected", WALK)
def test_walk(envoy, counters, xff, r, expected):
    check(envoy, counters, "default", xff, r, expected)


MALFORMED = [
    pytest.param(["1.1.1.1, garbage, 173.245.48.9"], "173.245.48.9", f"173.245.48.9, {EDGE}", id="garbage-mid"),
    pytest.param(["1.1.1.1, unknown"], EDGE, EDGE, id="unknown-last"),
    pytest.param(["1.1.1.1, fe80::1%eth0"], EDGE, EDGE, id="zone-id"),
    pytest.param(["1.1.1.1, 300.1.1.1"], EDGE, EDGE, id="bad-octet"),
    pytest.param(["1.1.1.1, 173.245.48.9, 1.2.3"], EDGE, EDGE, id="short-ipv4"),
    pytest.param(["1.1.1.1, [2001:db8::1"], EDGE, EDGE, id="unclosed-bracket"),
]


@pytest.mark.parametrize("xff,r,expected", MALFORMED)
def test_malformed_element_stops_walk(envoy, counters, xff, r, expected):
    check(envoy, counters, "default", xff, r, expected, {"trustip.http.xff_malformed": 1})


def test_entry_limit_stops_walk(envoy, counters):
    # max_entries 3: .4, .3, .2 are examined (all trusted), then the walk stops: R = .2.
    xff = ["1.1.1.1, 173.245.48.1, 173.245.48.2, 173.245.48.3, 173.245.48.4"]
    expected = f"173.245.48.2, 173.245.48.3, 173.245.48.4, {EDGE}"
    check(envoy, counters, "limited", xff, "173.245.48.2", expected, {"trustip.http.xff_truncated": 1})


def test_entry_limit_not_reached(envoy, counters):
    xff = ["1.1.1.1, 173.245.48.1, 2.2.2.2, 173.245.48.3"]
    check(envoy, counters, "limited", xff, "2.2.2.2", f"2.2.2.2, 173.245.48.3, {EDGE}", {"trustip.http.xff_truncated": 0})


def test_default_entry_limit_is_32(envoy, counters):
    hops = [f"173.245.{49 + i // 200}.{i % 200 + 1}" for i in range(39)]
    entries = ["1.1.1.1", *hops]  # 40 entries, only the leftmost untrusted
    r = entries[-32]
    expected = ", ".join([*entries[-32:], EDGE])
    check(envoy, counters, "default", [", ".join(entries)], r, expected, {"trustip.http.xff_truncated": 1})


def test_no_walk_when_client_not_trusted(envoy, counters):
    """C = 203.0.113.9 is not in xff.trusted: XFF is not believed at all, R = C."""
    check(envoy, counters, "default", ["1.1.1.1, 173.245.48.9"], "203.0.113.9", "203.0.113.9", proxy=via_lb("203.0.113.9"))


def test_walk_from_trusted_direct_peer(envoy, counters):
    """No PROXY: C = D = 127.0.0.31, which is trusted, so its XFF is walked."""
    watch = counters(envoy)
    response = client.request(envoy.port("default"), [("x-forwarded-for", "1.1.1.1")], source="127.0.0.31")
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == "1.1.1.1, 127.0.0.31"
    assert response.upstream_header("x-envoy-external-address") == "1.1.1.1"
    assert decisions(watch.delta()) == {"trustip.http.accept_xff": 1}
