"""Where the client comes from (issue 10), through real Envoy 1.40, in both builds: a count of
trusted hops (`xff.trusted_hops`, what Envoy's `use_remote_address` + `xff_num_trusted_hops`
do), RFC 7239 `Forwarded` as the walk's input (`xff.source: forwarded`), a CDN's one-address
client header (`client_header`, with and without `fail_closed`, in shadow mode), and unspecified
addresses (never a client: malformed in X-Forwarded-For, Forwarded and the client header; and a
PROXY header whose source is unspecified, which Envoy's proxy_protocol listener filter judges
first).

Peers: 127.0.0.5 is the trusted proxy / load balancer (rule `use`: it may send a PROXY header or
not), 127.0.0.66 a client connecting directly that nobody trusts. A PROXY v2 header from
127.0.0.5 hands over a CDN edge (173.245.48.7, in 173.245.48.0/20) as C.

Every case asserts what the recording upstream received (`x-envoy-external-address`, which is R,
`x-forwarded-for`, `cf-connecting-ip`, `forwarded`), the status, the reason and client the HCM's
access log printed, and the counters that moved. Expected values come from the issue and the core
tests (src/core/sources_tests.rs), not from watching the filter; `trustip explain --json` is then
held to what Envoy did for a few of the cases.

What Envoy 1.40 does itself, measured here:
- A PROXY v1 or v2 header whose source is 0.0.0.0 or :: is refused by the proxy_protocol
  listener filter (the connection is closed, `downstream_cx_proxy_proto_error`); trustip never
  sees it. `::ffff:0.0.0.0` in a v2 TCP6 header passes: Envoy makes it the downstream address,
  and trustip reads it as an unspecified source, no client information (C = D under `use`,
  `missing_proxy` under `require`).
- Envoy joins repeated X-Forwarded-For lines with commas before any filter runs, but not
  repeated `Forwarded` or `cf-connecting-ip` lines, and proxy-wasm's header read gives only the
  first line of those. Both builds read every line (the wasm build from the whole header map),
  so a client's own first `Forwarded` or client-header line is never believed; the repeated-line
  tests below show it.
"""

from __future__ import annotations

import pytest

from cli_support import cli, write_policy  # noqa: F401
from harness import client, names
from harness.envoy import Listener, wait_for_line
from harness.expect import decisions, reject_body

LB = "127.0.0.5"  # the trusted proxy / load balancer
DIRECT = "127.0.0.66"  # an untrusted client connecting directly
EDGE = "173.245.48.7"  # a CDN edge, handed over as C by the load balancer's PROXY header
EDGES = "173.245.48.0/20"
OTHER = "203.0.113.50"  # a PROXY source that is neither an edge nor trusted for X-Forwarded-For
RULES = [{"from": [f"{LB}/32"], "proxy_protocol": "use"}]
STRICT_RULES = [{"from": [f"{LB}/32"], "proxy_protocol": "require"}]
CF = "cf-connecting-ip"

POLICIES = {
    # Hop counts: C must be trusted by address (the load balancer, the edges); the hops then
    # count, whatever the addresses in X-Forwarded-For are.
    "hops1": {"rules": RULES, "xff": {"trusted": [f"{LB}/32", EDGES], "trusted_hops": 1}},
    "hops2": {"rules": RULES, "xff": {"trusted": [f"{LB}/32", EDGES], "trusted_hops": 2}},
    # The CIDR walk over X-Forwarded-For (the unspecified-address cases).
    "walk": {"rules": RULES, "xff": {"trusted": [f"{LB}/32", EDGES, "10.0.0.0/8"]}},
    # The load balancer must send PROXY (a 0.0.0.0 source is no client information).
    "strict": {"rules": STRICT_RULES, "xff": {"trusted": [EDGES]}},
    # The CIDR walk over Forwarded's for= values; Forwarded is rewritten to the verified chain.
    "forwarded": {
        "rules": RULES,
        "xff": {"trusted": [f"{LB}/32", EDGES, "10.0.0.0/8"], "source": "forwarded"},
        "headers": {"forwarded": "overwrite"},
    },
    "forwarded-hops2": {
        "rules": RULES,
        "xff": {"trusted": [f"{LB}/32"], "source": "forwarded", "trusted_hops": 2},
        "headers": {"forwarded": "overwrite"},
    },
    # The CDN's header, believed from its edges only (the load balancer is trusted for
    # X-Forwarded-For, the edges are not: an edge's own X-Forwarded-For is not read).
    "cf": {"rules": RULES, "xff": {"trusted": [f"{LB}/32"]}, "client_header": {"name": CF, "trusted": [EDGES]}},
    "cf-closed": {
        "rules": RULES,
        "xff": {"trusted": [f"{LB}/32"]},
        "client_header": {"name": CF, "trusted": [EDGES], "fail_closed": True},
    },
    "cf-shadow": {
        "mode": "shadow",
        "rules": RULES,
        "xff": {"trusted": [f"{LB}/32"]},
        "client_header": {"name": CF, "trusted": [EDGES], "fail_closed": True},
    },
}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(*[Listener(name=name, plugin=plugin, access_log=True) for name, plugin in POLICIES.items()])


def via_lb(source: str = EDGE, port: int = 50000) -> bytes:
    """The load balancer's PROXY v2 header naming `source` as the client."""
    destination = "2001:db8::1" if ":" in source else "10.0.0.1"
    return client.proxy_v2(source, destination, port, 443)


def access_line(envoy, listener: str, response) -> str:
    return wait_for_line(envoy.listeners[listener].access_log, f"test_id={response.test_id} ")


def check(
    envoy,
    counters,
    listener: str,
    headers: list[tuple[str, str]],
    *,
    r: str,
    xff: str | None,
    reason: str,
    decided: dict[str, int],
    cf: str | None = None,
    forwarded: str | None = None,
    extra: dict[str, int] | None = None,
    source: str = LB,
    proxy: bytes = b"",
):
    """One request that reaches the upstream (200): the four client headers the upstream got, the
    access log's client and reason, the decision counters (exactly) and `extra` counters (0:
    must not move)."""
    watch = counters(envoy)
    response = client.request(envoy.port(listener), headers, source=source, proxy=proxy)
    delta = watch.delta()
    assert response.status == 200, response
    got = {name: response.upstream_header(name) for name in ("x-envoy-external-address", "x-forwarded-for", CF, "forwarded")}
    assert got == {"x-envoy-external-address": r, "x-forwarded-for": xff, CF: cf, "forwarded": forwarded}, got
    line = access_line(envoy, listener, response)
    assert f" client_ip={r} " in line, line
    assert f" reason={reason} " in line, line
    assert " status=200" in line, line
    assert decisions(delta) == decided, delta
    for name, change in (extra or {}).items():
        assert delta.get(name, 0) == change, (name, delta)
    return response


def accepted(reason: str) -> dict[str, int]:
    return {f"trustip.http.accept_{reason}": 1}


MALFORMED = "trustip.http.xff_malformed"
STRIPPED = "trustip.http.headers_stripped"
INVALID = "trustip.http.client_header_invalid"


# --- xff.trusted_hops -----------------------------------------------------------------------

# (listener, X-Forwarded-For lines, PROXY source or None, R, X-Forwarded-For the upstream gets)
HOPS = [
    pytest.param("hops1", ["203.0.113.9"], None, "203.0.113.9", f"203.0.113.9, {LB}", id="1-one-element"),
    pytest.param("hops1", ["6.6.6.6, 203.0.113.9"], None, "203.0.113.9", f"203.0.113.9, {LB}", id="1-rightmost-taken"),
    # A count, not a walk: the rightmost element is the client even when it is a trusted address.
    pytest.param(
        "hops1", ["203.0.113.9, 173.245.48.9"], None, "173.245.48.9", f"173.245.48.9, {LB}", id="1-counts-not-cidrs"
    ),
    pytest.param("hops1", ["[2001:db8::7]:443"], None, "2001:db8::7", f"2001:db8::7, {LB}", id="1-ipv6-port"),
    pytest.param(
        "hops1", ["6.6.6.6, 203.0.113.9"], EDGE, "203.0.113.9", f"203.0.113.9, {EDGE}", id="1-edge-via-proxy"
    ),
    pytest.param(
        "hops2",
        ["6.6.6.6, 203.0.113.9, 198.51.100.1"],
        None,
        "203.0.113.9",
        f"203.0.113.9, 198.51.100.1, {LB}",
        id="2-in-chain",
    ),
    pytest.param(
        "hops2", ["203.0.113.9, 198.51.100.1"], None, "203.0.113.9", f"203.0.113.9, 198.51.100.1, {LB}", id="2-exact"
    ),
    # Envoy joins repeated header lines with commas before the filter sees them.
    pytest.param(
        "hops2", ["203.0.113.9", "198.51.100.1"], None, "203.0.113.9", f"203.0.113.9, 198.51.100.1, {LB}", id="2-two-lines"
    ),
    pytest.param(
        "hops2",
        ["[2001:db8::7]:443, 198.51.100.1:80"],
        None,
        "2001:db8::7",
        f"2001:db8::7, 198.51.100.1, {LB}",
        id="2-ipv6-port",
    ),
    pytest.param(
        "hops2",
        ["6.6.6.6, 203.0.113.9, 198.51.100.1"],
        EDGE,
        "203.0.113.9",
        f"203.0.113.9, 198.51.100.1, {EDGE}",
        id="2-edge-via-proxy",
    ),
]


@pytest.mark.parametrize("listener,xff,proxy,r,chain", HOPS)
def test_trusted_hops(envoy, counters, listener, xff, proxy, r, chain):
    """C is hop 1; R is the N-th X-Forwarded-For element from the right; the hops counted are
    the upstream's X-Forwarded-For, R first and C last."""
    check(
        envoy,
        counters,
        listener,
        [("x-forwarded-for", v) for v in xff],
        r=r,
        xff=chain,
        reason="xff",
        decided=accepted("xff"),
        extra={MALFORMED: 0},
        proxy=via_lb(proxy) if proxy else b"",
    )


# Fewer elements than N, or a malformed / unspecified one among the first N: R = C.
HOPS_FALL_BACK = [
    pytest.param("hops1", [], 0, id="1-no-header"),
    pytest.param("hops2", ["198.51.100.1"], 0, id="2-one-element"),
    pytest.param("hops1", ["203.0.113.9, bogus"], 1, id="1-malformed-at-1"),
    pytest.param("hops2", ["bogus, 198.51.100.1"], 1, id="2-malformed-at-2"),
    pytest.param("hops2", ["203.0.113.9, 0.0.0.0"], 1, id="2-unspecified-at-1"),
    pytest.param("hops2", ["::, 198.51.100.1"], 1, id="2-unspecified-ipv6-at-2"),
]


@pytest.mark.parametrize("listener,xff,malformed", HOPS_FALL_BACK)
def test_trusted_hops_fall_back_to_c(envoy, counters, listener, xff, malformed):
    check(
        envoy,
        counters,
        listener,
        [("x-forwarded-for", v) for v in xff],
        r=LB,
        xff=LB,
        reason="direct",
        decided=accepted("direct"),
        extra={MALFORMED: malformed},
    )


def test_trusted_hops_fall_back_to_c_via_proxy(envoy, counters):
    """The edge handed over by PROXY is C, and R = C when X-Forwarded-For is short."""
    check(
        envoy,
        counters,
        "hops2",
        [("x-forwarded-for", "198.51.100.1")],
        r=EDGE,
        xff=EDGE,
        reason="proxy",
        decided=accepted("proxy"),
        proxy=via_lb(),
    )


@pytest.mark.parametrize("listener", ["hops1", "hops2"])
def test_trusted_hops_untrusted_peer_not_believed(envoy, counters, listener):
    """The hops count only from a C trusted by address: a direct client's X-Forwarded-For, and
    the one behind a PROXY source that is not trusted, are not read."""
    check(
        envoy,
        counters,
        listener,
        [("x-forwarded-for", "6.6.6.6, 203.0.113.9")],
        r=DIRECT,
        xff=DIRECT,
        reason="direct",
        decided=accepted("direct"),
        source=DIRECT,
    )
    check(
        envoy,
        counters,
        listener,
        [("x-forwarded-for", "6.6.6.6, 203.0.113.9")],
        r=OTHER,
        xff=OTHER,
        reason="proxy",
        decided=accepted("proxy"),
        proxy=via_lb(OTHER),
    )


# --- xff.source: forwarded --------------------------------------------------------------------

# (Forwarded lines, R, the upstream's X-Forwarded-For, its Forwarded, xff_malformed)
FORWARDED = [
    pytest.param(
        ["for=192.0.2.60;proto=http;by=203.0.113.43"],
        "192.0.2.60",
        f"192.0.2.60, {LB}",
        f"for=192.0.2.60, for={LB}",
        0,
        id="simple",
    ),
    pytest.param(
        ['for="[2001:db8:cafe::17]:4711"'],
        "2001:db8:cafe::17",
        f"2001:db8:cafe::17, {LB}",
        f'for="[2001:db8:cafe::17]", for={LB}',
        0,
        id="quoted-ipv6-port",
    ),
    pytest.param(
        ['For="[2001:db8:cafe::17]"'],
        "2001:db8:cafe::17",
        f"2001:db8:cafe::17, {LB}",
        f'for="[2001:db8:cafe::17]", for={LB}',
        0,
        id="quoted-ipv6",
    ),
    pytest.param(
        ['for="192.0.2.43:47011", for=10.1.1.1'],
        "192.0.2.43",
        f"192.0.2.43, 10.1.1.1, {LB}",
        f"for=192.0.2.43, for=10.1.1.1, for={LB}",
        0,
        id="two-elements-trusted-hop",
    ),
    pytest.param(
        ['proto=https;host="a,b";for=192.0.2.9'],
        "192.0.2.9",
        f"192.0.2.9, {LB}",
        f"for=192.0.2.9, for={LB}",
        0,
        id="quoted-comma-elsewhere",
    ),
    # unknown, obfuscated, escaped or missing for= stop the walk: R is the last address examined.
    pytest.param(["for=unknown, for=10.9.9.9"], "10.9.9.9", f"10.9.9.9, {LB}", f"for=10.9.9.9, for={LB}", 1, id="unknown-stops"),
    pytest.param(["for=unknown"], LB, LB, f"for={LB}", 1, id="unknown-alone"),
    pytest.param(["for=_hidden"], LB, LB, f"for={LB}", 1, id="obfuscated"),
    pytest.param(["by=10.0.0.1;proto=https"], LB, LB, f"for={LB}", 1, id="no-for"),
    pytest.param(['for="1.2.3.4\\""'], LB, LB, f"for={LB}", 1, id="escaped"),
    # unspecified addresses are malformed
    pytest.param(["for=0.0.0.0"], LB, LB, f"for={LB}", 1, id="unspecified"),
    pytest.param(['for="[::]"'], LB, LB, f"for={LB}", 1, id="unspecified-ipv6"),
    pytest.param(['for="[::]:80", for=10.9.9.9'], "10.9.9.9", f"10.9.9.9, {LB}", f"for=10.9.9.9, for={LB}", 1, id="unspecified-left"),
]


@pytest.mark.parametrize("lines,r,xff,forwarded,malformed", FORWARDED)
def test_forwarded_walk(envoy, counters, lines, r, xff, forwarded, malformed):
    """From the trusted load balancer, the for= values are walked; a spoofed X-Forwarded-For
    beside them is never believed (its 6.6.6.6 appears nowhere)."""
    headers = [("forwarded", line) for line in lines] + [("x-forwarded-for", "6.6.6.6")]
    reason = "direct" if r == LB else "xff"
    check(
        envoy,
        counters,
        "forwarded",
        headers,
        r=r,
        xff=xff,
        forwarded=forwarded,
        reason=reason,
        decided=accepted(reason),
        extra={MALFORMED: malformed},
    )


# Two Forwarded header lines are one list, the last line nearest (RFC 7239 section 4).
REPEATED_FORWARDED = [
    pytest.param(
        ["for=192.0.2.1", "for=10.2.2.2"],
        "192.0.2.1",
        f"192.0.2.1, 10.2.2.2, {LB}",
        f"for=192.0.2.1, for=10.2.2.2, for={LB}",
        id="trusted-hop-in-second-line",
    ),
    # The client's own line first, the line the trusted proxy added last: the client's claim
    # must not be believed.
    pytest.param(
        ["for=6.6.6.6", "for=203.0.113.9"],
        "203.0.113.9",
        f"203.0.113.9, {LB}",
        f"for=203.0.113.9, for={LB}",
        id="spoofed-first-line",
    ),
]


@pytest.mark.parametrize("lines,r,xff,forwarded", REPEATED_FORWARDED)
def test_forwarded_repeated_lines(envoy, counters, lines, r, xff, forwarded):
    check(
        envoy,
        counters,
        "forwarded",
        [("forwarded", line) for line in lines],
        r=r,
        xff=xff,
        forwarded=forwarded,
        reason="xff",
        decided=accepted("xff"),
        extra={MALFORMED: 0},
    )


def test_forwarded_source_ignores_x_forwarded_for(envoy, counters):
    """X-Forwarded-For alone from the trusted proxy: nothing to walk, R = C."""
    check(
        envoy,
        counters,
        "forwarded",
        [("x-forwarded-for", "203.0.113.9")],
        r=LB,
        xff=LB,
        forwarded=f"for={LB}",
        reason="direct",
        decided=accepted("direct"),
        extra={MALFORMED: 0},
    )


def test_forwarded_from_edge_via_proxy(envoy, counters):
    check(
        envoy,
        counters,
        "forwarded",
        [("forwarded", "for=192.0.2.60")],
        r="192.0.2.60",
        xff=f"192.0.2.60, {EDGE}",
        forwarded=f"for=192.0.2.60, for={EDGE}",
        reason="xff",
        decided=accepted("xff"),
        proxy=via_lb(),
    )


def test_forwarded_from_untrusted_client(envoy, counters):
    """A direct client's Forwarded is not believed: stripped, then written as its own address."""
    check(
        envoy,
        counters,
        "forwarded",
        [("forwarded", "for=192.0.2.60")],
        r=DIRECT,
        xff=DIRECT,
        forwarded=f"for={DIRECT}",
        reason="direct",
        decided=accepted("direct"),
        extra={STRIPPED: 1},
        source=DIRECT,
    )


def test_forwarded_with_trusted_hops(envoy, counters):
    check(
        envoy,
        counters,
        "forwarded-hops2",
        [("forwarded", 'for=6.6.6.6, for="[2001:db8::9]", for=198.51.100.2')],
        r="2001:db8::9",
        xff=f"2001:db8::9, 198.51.100.2, {LB}",
        forwarded=f'for="[2001:db8::9]", for=198.51.100.2, for={LB}',
        reason="xff",
        decided=accepted("xff"),
    )


# --- client_header -------------------------------------------------------------------------


def test_client_header_from_edge_via_proxy(envoy, counters):
    """The load balancer hands over the edge (C); its header names the client, and the edge's
    own X-Forwarded-For is not read (the edge is not trusted for it)."""
    check(
        envoy,
        counters,
        "cf",
        [(CF, "203.0.113.9"), ("x-forwarded-for", "6.6.6.6")],
        r="203.0.113.9",
        xff=f"203.0.113.9, {EDGE}",
        cf="203.0.113.9",
        reason="client_header",
        decided=accepted("client_header"),
        extra={INVALID: 0},
        proxy=via_lb(),
    )


def test_client_header_ipv6_from_edge(envoy, counters):
    check(
        envoy,
        counters,
        "cf",
        [(CF, "2001:db8::5")],
        r="2001:db8::5",
        xff=f"2001:db8::5, {EDGE}",
        cf="2001:db8::5",
        reason="client_header",
        decided=accepted("client_header"),
        proxy=via_lb(),
    )


def test_client_header_from_edge_behind_trusted_proxy(envoy, counters):
    """No PROXY: the trusted proxy's X-Forwarded-For is walked to the edge, then the header."""
    check(
        envoy,
        counters,
        "cf",
        [("x-forwarded-for", "173.245.48.9"), (CF, "2001:db8::5")],
        r="2001:db8::5",
        xff=f"2001:db8::5, 173.245.48.9, {LB}",
        cf="2001:db8::5",
        reason="client_header",
        decided=accepted("client_header"),
        extra={STRIPPED: 0},
    )


# (peer, PROXY source, X-Forwarded-For, R, upstream X-Forwarded-For, reason, headers stripped)
NOT_FROM_EDGE = [
    pytest.param(DIRECT, None, None, DIRECT, DIRECT, "direct", 1, id="direct-client"),
    pytest.param(LB, None, None, LB, LB, "direct", 0, id="trusted-proxy-itself"),
    pytest.param(LB, None, "198.51.100.7", "198.51.100.7", f"198.51.100.7, {LB}", "xff", 0, id="walk-ends-off-edge"),
    pytest.param(LB, OTHER, None, OTHER, OTHER, "proxy", 1, id="proxy-source-not-edge"),
]


@pytest.mark.parametrize("peer,proxy,xff,r,chain,reason,stripped", NOT_FROM_EDGE)
def test_client_header_not_from_edge_removed(envoy, counters, peer, proxy, xff, r, chain, reason, stripped):
    """R is not an edge: the header is never believed, and it does not reach the upstream."""
    headers = [(CF, "1.2.3.4")] + ([("x-forwarded-for", xff)] if xff else [])
    check(
        envoy,
        counters,
        "cf",
        headers,
        r=r,
        xff=chain,
        reason=reason,
        decided=accepted(reason),
        extra={STRIPPED: stripped, INVALID: 0},
        source=peer,
        proxy=via_lb(proxy) if proxy else b"",
    )


# What an edge may send that is not one address: missing, empty, garbage, a list, unspecified.
BAD_HEADER = [
    pytest.param(None, id="missing"),
    pytest.param("bogus", id="garbage"),
    pytest.param("203.0.113.9, 198.51.100.1", id="two-addresses"),
    pytest.param("0.0.0.0", id="unspecified"),
    pytest.param("::", id="unspecified-ipv6"),
    pytest.param("::ffff:0.0.0.0", id="unspecified-mapped"),
]


def _cf(value):
    return [(CF, value)] if value is not None else []


@pytest.mark.parametrize("value", BAD_HEADER)
def test_client_header_invalid_keeps_r(envoy, counters, value):
    check(
        envoy,
        counters,
        "cf",
        _cf(value),
        r=EDGE,
        xff=EDGE,
        reason="proxy",
        decided=accepted("proxy"),
        extra={INVALID: 1},
        proxy=via_lb(),
    )


def test_client_header_repeated_lines_is_not_one_address(envoy, counters):
    """Two lines of the client header from an edge are two addresses, not one: R is kept."""
    check(
        envoy,
        counters,
        "cf",
        [(CF, "6.6.6.6"), (CF, "203.0.113.9")],
        r=EDGE,
        xff=EDGE,
        reason="proxy",
        decided=accepted("proxy"),
        extra={INVALID: 1},
        proxy=via_lb(),
    )


@pytest.mark.parametrize("value", BAD_HEADER)
def test_client_header_fail_closed(envoy, counters, echo, value):
    watch = counters(envoy)
    response = client.request(envoy.port("cf-closed"), _cf(value), source=LB, proxy=via_lb())
    delta = watch.delta()
    assert response.status == 403, response
    assert response.header(names.REJECT_HEADER) == "client_header", response
    assert response.body == reject_body("client_header"), response
    assert decisions(delta) == {"trustip.http.reject_client_header": 1}, delta
    assert delta.get(INVALID, 0) == 0, delta
    line = access_line(envoy, "cf-closed", response)
    assert " client_ip=- " in line, line
    assert " reason=client_header " in line, line
    assert " status=403" in line, line
    assert echo.find(response.test_id) is None


def test_client_header_fail_closed_lets_good_header_and_strangers_through(envoy, counters):
    """fail_closed refuses only a bad header from an edge: a good one is used, and a client that
    is no edge needs none."""
    check(
        envoy,
        counters,
        "cf-closed",
        [(CF, "203.0.113.9")],
        r="203.0.113.9",
        xff=f"203.0.113.9, {EDGE}",
        cf="203.0.113.9",
        reason="client_header",
        decided=accepted("client_header"),
        proxy=via_lb(),
    )
    check(envoy, counters, "cf-closed", [], r=DIRECT, xff=DIRECT, reason="direct", decided=accepted("direct"), source=DIRECT)


@pytest.mark.parametrize("value", BAD_HEADER)
def test_client_header_fail_closed_in_shadow_mode(envoy, counters, value):
    """Shadow mode counts the would-be refusal and lets the request through with R kept."""
    check(
        envoy,
        counters,
        "cf-shadow",
        _cf(value),
        r=EDGE,
        xff=EDGE,
        reason="shadow_client_header",
        decided={"trustip.http.shadow_client_header": 1, "trustip.http.accept_proxy": 1},
        extra={"trustip.http.reject_client_header": 0, INVALID: 0},
        proxy=via_lb(),
    )


# --- unspecified addresses ------------------------------------------------------------------

UNSPECIFIED_XFF = [
    pytest.param(["0.0.0.0"], LB, id="ipv4"),
    pytest.param(["::"], LB, id="ipv6"),
    pytest.param(["::ffff:0.0.0.0"], LB, id="mapped"),
    pytest.param(["[::]:80"], LB, id="ipv6-bracket-port"),
    pytest.param(["0.0.0.0:443"], LB, id="ipv4-port"),
    pytest.param(["1.1.1.1, 0.0.0.0"], LB, id="rightmost"),
    # The walk passes the trusted edge, then stops at 0.0.0.0: R is the edge.
    pytest.param(["1.1.1.1, 0.0.0.0, 173.245.48.9"], "173.245.48.9", id="behind-trusted-hop"),
]


@pytest.mark.parametrize("xff,r", UNSPECIFIED_XFF)
def test_unspecified_in_x_forwarded_for(envoy, counters, xff, r):
    reason = "direct" if r == LB else "xff"
    check(
        envoy,
        counters,
        "walk",
        [("x-forwarded-for", v) for v in xff],
        r=r,
        xff=LB if r == LB else f"{r}, {LB}",
        reason=reason,
        decided=accepted(reason),
        extra={MALFORMED: 1},
    )


# Envoy's proxy_protocol listener filter refuses these itself: the connection is closed before
# any network or HTTP filter runs (Envoy counts downstream_cx_proxy_proto_error).
REFUSED_BY_ENVOY = [
    pytest.param(client.proxy_v2("0.0.0.0", "10.0.0.1", 0, 443), "v2", id="v2-ipv4"),
    pytest.param(client.proxy_v2("0.0.0.0", "10.0.0.1", 50000, 443), "v2", id="v2-ipv4-port"),
    pytest.param(client.proxy_v2("::", "2001:db8::1", 50000, 443), "v2", id="v2-ipv6"),
    pytest.param(client.proxy_v1("0.0.0.0", "10.0.0.1", 50000, 443), "v1", id="v1-ipv4"),
    pytest.param(client.proxy_v1("::", "2001:db8::1", 50000, 443), "v1", id="v1-ipv6"),
]


def _proxy_proto_stats(envoy) -> dict[str, int]:
    return envoy.stats("proxy_proto")


@pytest.mark.parametrize("listener", ["walk", "strict"])
@pytest.mark.parametrize("proxy,version", REFUSED_BY_ENVOY)
def test_unspecified_proxy_source_refused_by_envoy(envoy, counters, echo, listener, proxy, version):
    """A PROXY header from the trusted load balancer whose source is 0.0.0.0 or ::: Envoy 1.40
    closes the connection in its proxy_protocol listener filter; trustip never sees it."""
    watch = counters(envoy)
    before = _proxy_proto_stats(envoy)
    response = client.request(envoy.port(listener), [("x-forwarded-for", "203.0.113.9")], source=LB, proxy=proxy)
    after = _proxy_proto_stats(envoy)
    assert response.closed, response
    assert watch.delta() == {}, "no trustip filter ran"
    moved = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    assert moved == {"downstream_cx_proxy_proto_error": 1, f"proxy_proto.versions.{version}.error": 1}, moved
    assert echo.find(response.test_id) is None


MAPPED_UNSPECIFIED = client.proxy_v2("::ffff:0.0.0.0", "::ffff:10.0.0.1", 50000, 443)


def test_mapped_unspecified_proxy_source_is_no_client(envoy, counters, echo):
    """`::ffff:0.0.0.0` in a PROXY v2 TCP6 header passes Envoy's listener filter (Envoy makes it
    the downstream address). trustip reads it as 0.0.0.0, an unspecified PROXY source, which is
    no client information: under `use` C = D (the trusted load balancer, whose X-Forwarded-For
    is then walked), and the upstream never sees 0.0.0.0."""
    watch = counters(envoy)
    response = client.request(envoy.port("walk"), [("x-forwarded-for", "203.0.113.9")], source=LB, proxy=MAPPED_UNSPECIFIED)
    delta = watch.delta()
    assert response.status == 200, response
    assert decisions(delta) == accepted("xff"), delta
    assert response.upstream_header("x-envoy-external-address") == "203.0.113.9"
    assert response.upstream_header("x-forwarded-for") == f"203.0.113.9, {LB}"
    upstream = echo.wait_for(response.test_id)
    assert not [value for _, value in upstream.headers if b"0.0.0.0" in value], upstream.headers
    line = access_line(envoy, "walk", response)
    # Envoy took the header's source as the downstream address; trustip did not.
    assert " source=[::ffff:0.0.0.0]:50000 " in line, line
    assert " client_ip=203.0.113.9 reason=xff " in line, line


def test_mapped_unspecified_proxy_source_under_require(envoy, counters, echo):
    """Under `require` the same header is a missing PROXY header: refused, missing_proxy."""
    watch = counters(envoy)
    response = client.request(envoy.port("strict"), [("x-forwarded-for", "203.0.113.9")], source=LB, proxy=MAPPED_UNSPECIFIED)
    assert response.status == 403, response
    assert response.header(names.REJECT_HEADER) == "missing_proxy", response
    assert decisions(watch.delta()) == {"trustip.http.reject_missing_proxy": 1}
    assert echo.find(response.test_id) is None
    line = access_line(envoy, "strict", response)
    assert " client_ip=- reason=missing_proxy " in line, line


# --- trustip explain agrees -----------------------------------------------------------------

# (listener, peer, PROXY source or None, request headers)
EXPLAINED = [
    pytest.param("hops2", LB, None, [("x-forwarded-for", "6.6.6.6, 203.0.113.9, 198.51.100.1")], id="hops2-in-chain"),
    pytest.param("hops1", LB, None, [("x-forwarded-for", "203.0.113.9, bogus")], id="hops1-malformed"),
    pytest.param("hops1", DIRECT, None, [("x-forwarded-for", "203.0.113.9")], id="hops1-untrusted-peer"),
    pytest.param(
        "forwarded",
        LB,
        None,
        [("forwarded", 'for="[2001:db8:cafe::17]:4711"'), ("x-forwarded-for", "6.6.6.6")],
        id="forwarded-ipv6-port",
    ),
    pytest.param("forwarded", LB, EDGE, [("forwarded", "for=unknown, for=10.9.9.9")], id="forwarded-unknown"),
    pytest.param("cf", LB, EDGE, [(CF, "203.0.113.9"), ("x-forwarded-for", "6.6.6.6")], id="cf-edge-via-proxy"),
    pytest.param("cf", LB, None, [("x-forwarded-for", "173.245.48.9"), (CF, "2001:db8::5")], id="cf-behind-proxy"),
    pytest.param("cf", DIRECT, None, [(CF, "1.2.3.4")], id="cf-untrusted-sender"),
    pytest.param("cf", LB, EDGE, [(CF, "bogus")], id="cf-malformed"),
    pytest.param("cf-closed", LB, EDGE, [(CF, "0.0.0.0")], id="cf-fail-closed"),
    pytest.param("cf-shadow", LB, EDGE, [], id="cf-shadow-missing"),
    pytest.param("walk", LB, None, [("x-forwarded-for", "1.1.1.1, 0.0.0.0, 173.245.48.9")], id="xff-unspecified"),
]


@pytest.fixture(scope="module")
def policy_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("client-sources-policies")
    return {name: write_policy(directory, name, policy) for name, policy in POLICIES.items()}


@pytest.mark.parametrize("listener,peer,proxy,headers", EXPLAINED)
def test_explain_agrees_with_envoy(envoy, counters, echo, cli, policy_files, listener, peer, proxy, headers):  # noqa: F811
    """`trustip explain --json` on the same policy and inputs says what Envoy did: the client,
    every header it plans, the reason in the access log, the counters, or the refusal."""
    args = ["explain", "--config", policy_files[listener], "--peer", peer, "--json"]
    if proxy:
        args += ["--proxy", f"{proxy}:50000"]
    for name, value in headers:
        args += ["--header", f"{name}: {value}"]
    run = cli.run(*args, expect=None)
    assert run.code in (0, 1), run
    said = run.json()

    watch = counters(envoy)
    response = client.request(envoy.port(listener), headers, source=peer, proxy=via_lb(proxy) if proxy else b"")
    delta = watch.delta()
    assert delta == said["counters"], (said, delta)
    line = access_line(envoy, listener, response)
    assert f" reason={said['reason']} " in line, (said, line)
    if said["action"] == "reject":
        assert response.status == said["status"], (said, response)
        assert response.header(names.REJECT_HEADER) == said["reason"], response
        assert " client_ip=- " in line, line
        assert echo.find(response.test_id) is None
        return
    assert response.status == 200, (said, response)
    upstream = echo.wait_for(response.test_id)
    assert upstream.text("x-envoy-external-address") == said["client_ip"], (said, upstream.headers)
    assert f" client_ip={said['client_ip']} " in line, (said, line)
    for name, value in said["headers"].items():
        assert upstream.text(name) == value, (name, said, upstream.headers)
