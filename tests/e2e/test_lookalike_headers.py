"""Look-alike client headers (issue 7): names a framework may read as the client address but
that differ from the classic ones by an underscore or a word. An untrusted client's copies never
reach the upstream; a trusted proxy's hyphenated ones do (the strip step applies only when C is
not trusted).

Underscore variants (`x_real_ip`, `x_forwarded_for`, `true_client_ip`) are not the filter's to
strip: Envoy accepts them by default and many frameworks map `_` and `-` to the same variable
(CGI's `HTTP_X_REAL_IP`). Rendered configurations, samples and this suite's harness set the
HCM's `headers_with_underscores_action: DROP_HEADER`, so they never reach the upstream from
anyone; `test_underscore_variants_pass_without_the_hcm_setting` shows why it is needed."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener

LB = "127.0.0.5"
EDGE = "173.245.48.7"  # trusted C
OUTSIDER = "203.0.113.9"  # untrusted C
PLUGIN = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}],
    "xff": {"trusted": ["173.245.48.0/20"]},
}
UNDERSCORED = ["x_real_ip", "x_forwarded_for", "true_client_ip"]
HYPHENATED = ["client-ip", "x-originating-ip", "forwarded-for", "x-forwarded"]
SPOOFED = "6.6.6.6"


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="default", plugin=PLUGIN),
        Listener(name="envoy-default", plugin=PLUGIN, headers_with_underscores_action=None),
    )


def send(envoy, listener, names, *, c):
    headers = [(name, SPOOFED) for name in names] + [("x-keep", "yes")]
    response = client.request(envoy.port(listener), headers, source=LB, proxy=client.proxy_v2(c, "10.0.0.1", 50000, 443))
    assert response.status == 200, response
    assert response.upstream_header("x-keep") == "yes"
    return response


def reached(response, names):
    return {name: response.upstream_header(name) for name in names if response.upstream_header(name) is not None}


def test_untrusted_client_lookalikes_never_reach_upstream(envoy, echo):
    response = send(envoy, "default", UNDERSCORED + HYPHENATED, c=OUTSIDER)
    assert reached(response, UNDERSCORED + HYPHENATED) == {}
    # Not in another spelling either: no header of the recorded request carries the value.
    recorded = echo.find(response.test_id)
    assert [name for name, value in recorded.headers if value == SPOOFED.encode()] == []
    assert response.upstream_header("x-envoy-external-address") == OUTSIDER


def test_trusted_proxy_lookalikes_pass(envoy, counters):
    """C is a trusted proxy: its client-ip etc. are its business and pass untouched."""
    watch = counters(envoy)
    response = send(envoy, "default", HYPHENATED, c=EDGE)
    assert reached(response, HYPHENATED) == {name: SPOOFED for name in HYPHENATED}
    assert watch.delta().get("trustip.http.headers_stripped", 0) == 0


def test_underscore_variants_dropped_whoever_sends_them(envoy):
    response = send(envoy, "default", UNDERSCORED, c=EDGE)
    assert reached(response, UNDERSCORED) == {}


def test_underscore_variants_pass_without_the_hcm_setting(envoy):
    """Envoy's default (ALLOW) forwards an untrusted client's x_real_ip: the HCM setting, not
    the strip list, is what keeps underscore variants out."""
    response = send(envoy, "envoy-default", UNDERSCORED, c=OUTSIDER)
    assert reached(response, UNDERSCORED) == {name: SPOOFED for name in UNDERSCORED}
