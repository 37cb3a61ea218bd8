"""The header plan of the HTTP role (issue 2, "Headers"): every `x_forwarded_for` and
`forwarded` mode, `set`, and the `strip` list."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener
from harness import names
from harness.expect import chain

LB = "127.0.0.5"
EDGE = "173.245.48.7"  # trusted C
OUTSIDER = "203.0.113.9"  # untrusted C
BASE = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}],
    "xff": {"trusted": ["173.245.48.0/20", "2400:cb00::/32"]},
}
# The filter's default strip list, as the core defines it (src/core/names.rs).
DEFAULT_STRIP = list(names.DEFAULT_STRIP)


def plugin(**headers) -> dict:
    return {**BASE, "headers": headers}


LISTENERS = {
    "default": BASE,
    "xff-overwrite": plugin(x_forwarded_for="overwrite"),
    "xff-append": plugin(x_forwarded_for="append"),
    "xff-preserve": plugin(x_forwarded_for="preserve"),
    "xff-remove": plugin(x_forwarded_for="remove"),
    "fwd-none": plugin(forwarded="none"),
    "fwd-overwrite": plugin(forwarded="overwrite"),
    "fwd-append": plugin(forwarded="append"),
    "set": plugin(set=["x-envoy-external-address", "x-real-ip", "x-client-ip"]),
    "strip-custom": plugin(strip=["true-client-ip", "cf-connecting-ip"]),
    "strip-none": plugin(strip=[]),
}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(*(Listener(name=name, plugin=config) for name, config in LISTENERS.items()))


def send(envoy, listener, headers=(), *, c=EDGE):
    response = client.request(envoy.port(listener), list(headers), source=LB, proxy=client.proxy_v2(c, "10.0.0.1", 50000, 443))
    assert response.status == 200, response
    return response


# (listener, C, incoming XFF or None, expected XFF elements upstream or None for absent)
XFF_MODES = [
    ("default", EDGE, "6.6.6.6, 1.1.1.1", ["1.1.1.1", EDGE]),
    ("xff-overwrite", EDGE, "6.6.6.6, 1.1.1.1", ["1.1.1.1", EDGE]),
    ("xff-overwrite", OUTSIDER, "6.6.6.6", [OUTSIDER]),
    ("xff-overwrite", EDGE, None, [EDGE]),
    ("xff-append", EDGE, "6.6.6.6, 1.1.1.1", ["6.6.6.6", "1.1.1.1", EDGE]),
    ("xff-append", OUTSIDER, "6.6.6.6", ["6.6.6.6", OUTSIDER]),
    ("xff-append", EDGE, None, [EDGE]),
    ("xff-preserve", EDGE, "6.6.6.6, 1.1.1.1", ["6.6.6.6", "1.1.1.1"]),
    ("xff-preserve", OUTSIDER, "6.6.6.6", ["6.6.6.6"]),
    ("xff-preserve", EDGE, None, None),
    ("xff-remove", EDGE, "6.6.6.6, 1.1.1.1", None),
    ("xff-remove", OUTSIDER, "6.6.6.6", None),
]


@pytest.mark.parametrize(
    "listener,c,incoming,expected", XFF_MODES, ids=[f"{m[0]}-{'trusted' if m[1] == EDGE else 'untrusted'}-{'xff' if m[2] else 'noxff'}" for m in XFF_MODES]
)
def test_x_forwarded_for_modes(envoy, listener, c, incoming, expected):
    response = send(envoy, listener, [("x-forwarded-for", incoming)] if incoming else [], c=c)
    value = response.upstream_header("x-forwarded-for")
    if expected is None:
        assert value is None
    else:
        assert chain(value) == expected, value
    # R does not depend on the XFF mode: the walk decides it; `set` writes it.
    r = "1.1.1.1" if (c == EDGE and incoming and "1.1.1.1" in incoming) else c
    assert response.upstream_header("x-envoy-external-address") == r


def test_overwrite_format_matches_spec_example(envoy):
    """The issue's example: `1.1.1.1, 198.51.100.10` (comma and one space)."""
    response = send(envoy, "default", [("x-forwarded-for", "1.1.1.1")])
    assert response.upstream_header("x-forwarded-for") == f"1.1.1.1, {EDGE}"


FORWARDED = [
    # forwarded none: only the strip list acts on an incoming Forwarded header.
    ("fwd-none", EDGE, [("forwarded", "for=6.6.6.6")], ["for=6.6.6.6"]),
    ("fwd-none", OUTSIDER, [("forwarded", "for=6.6.6.6")], None),
    ("fwd-none", EDGE, [], None),
    # overwrite: one for= per address of the verified chain (R ... C).
    ("fwd-overwrite", EDGE, [("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "6.6.6.6, 1.1.1.1")], ["for=1.1.1.1", f"for={EDGE}"]),
    ("fwd-overwrite", OUTSIDER, [("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "1.1.1.1")], [f"for={OUTSIDER}"]),
    ("fwd-overwrite", EDGE, [], [f"for={EDGE}"]),
    # append: the incoming value (if the strip step left it) then for=C.
    ("fwd-append", EDGE, [("forwarded", "for=6.6.6.6;proto=https")], ["for=6.6.6.6;proto=https", f"for={EDGE}"]),
    ("fwd-append", OUTSIDER, [("forwarded", "for=6.6.6.6")], [f"for={OUTSIDER}"]),
    ("fwd-append", EDGE, [], [f"for={EDGE}"]),
]


@pytest.mark.parametrize(
    "listener,c,headers,expected", FORWARDED, ids=[f"{m[0]}-{'trusted' if m[1] == EDGE else 'untrusted'}-{len(m[2])}" for m in FORWARDED]
)
def test_forwarded_modes(envoy, listener, c, headers, expected):
    response = send(envoy, listener, headers, c=c)
    value = response.upstream_header("forwarded")
    if expected is None:
        assert value is None
    else:
        assert chain(value) == expected, value


def test_forwarded_ipv6_is_quoted_and_bracketed(envoy):
    response = client.request(
        envoy.port("fwd-overwrite"),
        [("x-forwarded-for", "2001:db8::7")],
        source=LB,
        proxy=client.proxy_v2("2400:cb00::7", "2001:db8::1", 50000, 443),
    )
    assert response.status == 200, response
    assert chain(response.upstream_header("forwarded")) == ['for="[2001:db8::7]"', 'for="[2400:cb00::7]"']
    assert response.upstream_header("x-forwarded-for") == "2001:db8::7, 2400:cb00::7"


def test_set_headers_get_r(envoy):
    response = send(envoy, "set", [("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "6.6.6.6")])
    for name in ("x-envoy-external-address", "x-real-ip", "x-client-ip"):
        assert response.upstream_header(name) == "1.1.1.1", name


def test_set_after_strip(envoy):
    """Step 1 strips x-real-ip (untrusted C), step 4 sets it to R: the upstream sees R."""
    response = send(envoy, "set", [("x-real-ip", "6.6.6.6")], c=OUTSIDER)
    assert response.upstream_header("x-real-ip") == OUTSIDER
    assert response.upstream_header("x-client-ip") == OUTSIDER


def spoofing_headers():
    return [(name, "6.6.6.6") for name in DEFAULT_STRIP] + [("x-keep", "yes")]


def test_default_strip_list_when_client_untrusted(envoy, counters):
    watch = counters(envoy)
    response = send(envoy, "default", spoofing_headers(), c=OUTSIDER)
    for name in DEFAULT_STRIP:
        assert response.upstream_header(name) is None, name
    assert response.upstream_header("x-keep") == "yes"
    assert watch.delta().get("trustip.http.headers_stripped") == len(DEFAULT_STRIP)


def test_strip_list_kept_when_client_trusted(envoy, counters):
    watch = counters(envoy)
    response = send(envoy, "default", spoofing_headers(), c=EDGE)
    for name in DEFAULT_STRIP:
        assert response.upstream_header(name) == "6.6.6.6", name
    assert watch.delta().get("trustip.http.headers_stripped", 0) == 0


def test_strip_counts_only_headers_present(envoy, counters):
    watch = counters(envoy)
    send(envoy, "default", [("true-client-ip", "6.6.6.6"), ("x-keep", "yes")], c=OUTSIDER)
    assert watch.delta().get("trustip.http.headers_stripped") == 1


def test_custom_strip_list(envoy, counters):
    watch = counters(envoy)
    response = send(envoy, "strip-custom", spoofing_headers(), c=OUTSIDER)
    assert response.upstream_header("true-client-ip") is None
    assert response.upstream_header("cf-connecting-ip") is None
    for name in set(DEFAULT_STRIP) - {"true-client-ip", "cf-connecting-ip"}:
        assert response.upstream_header(name) == "6.6.6.6", name
    assert watch.delta().get("trustip.http.headers_stripped") == 2


def test_empty_strip_list(envoy, counters):
    watch = counters(envoy)
    response = send(envoy, "strip-none", spoofing_headers(), c=OUTSIDER)
    for name in DEFAULT_STRIP:
        assert response.upstream_header(name) == "6.6.6.6", name
    assert watch.delta().get("trustip.http.headers_stripped", 0) == 0
