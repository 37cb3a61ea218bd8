"""Hostile bytes: header values and TLVs that are not UTF-8 must not crash the filter (no panic:
the VM would die and Envoy would fail every later request); Envoy keeps serving."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener
from harness.expect import decisions

LB = "127.0.0.5"
EDGE = "173.245.48.7"
OUTSIDER = "203.0.113.9"
PLUGIN = {
    "rules": [
        {"from": [f"{LB}/32"], "proxy_protocol": "require"},
        {"from": ["127.0.0.20/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f60718"]}},
        {"from": ["127.0.0.24/32"], "proxy_protocol": "use"},
    ],
    "xff": {"trusted": ["173.245.48.0/20"]},
    "headers": {"tlv": {"aws_vpce_id": "x-amzn-vpce-id", "authority": "x-lb-authority"}},
}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="http", plugin=PLUGIN),
        Listener(name="network", plugin=PLUGIN, network_role=True, http_role=True),
    )


def pp(source=EDGE, tlvs=()):
    return client.proxy_v2(source, "10.0.0.1", 1111, 443, tlvs=list(tlvs))


def still_serving(envoy, listener="http"):
    response = client.request(envoy.port(listener), [("x-forwarded-for", "1.1.1.1")], source=LB, proxy=pp())
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == f"1.1.1.1, {EDGE}"
    assert "panicked" not in envoy.log_text()


@pytest.mark.parametrize(
    "xff,c,expected_xff,malformed",
    [
        pytest.param(b"1.1.1.1\xff, 173.245.48.9", EDGE, f"173.245.48.9, {EDGE}", 1, id="bad-byte-in-element"),
        pytest.param(b"\xff\xfe\x80", EDGE, EDGE, 1, id="only-bad-bytes"),
        pytest.param(b"\xc3\x28, 1.1.1.1", EDGE, f"1.1.1.1, {EDGE}", 0, id="bad-bytes-left-of-client"),
        pytest.param(b"1.1.1.1\xff", OUTSIDER, OUTSIDER, 0, id="untrusted-client-overwritten"),
    ],
)
def test_non_utf8_xff(envoy, echo, counters, xff, c, expected_xff, malformed):
    watch = counters(envoy)
    response = client.request(envoy.port("http"), [("x-forwarded-for", xff)], source=LB, proxy=pp(c))
    assert response.status == 200, response
    recorded = echo.find(response.test_id)
    assert recorded.get("x-forwarded-for") == expected_xff.encode()
    assert watch.delta().get("trustip.http.xff_malformed", 0) == malformed
    still_serving(envoy)


def test_non_utf8_in_stripped_headers(envoy, echo, counters):
    watch = counters(envoy)
    bad = [("x-real-ip", b"\xc0\x80\xff"), ("forwarded", b"for=\xff"), ("x-other", b"keep \xfe me")]
    response = client.request(envoy.port("http"), bad, source=LB, proxy=pp(OUTSIDER))
    assert response.status == 200, response
    recorded = echo.find(response.test_id)
    assert recorded.get("x-real-ip") is None
    assert recorded.get("forwarded") is None
    assert recorded.get("x-other") == b"keep \xfe me"  # not ours: passed through untouched
    assert watch.delta().get("trustip.http.headers_stripped") == 2
    still_serving(envoy)


def test_non_utf8_in_tlv_mapped_header_source(envoy, echo):
    """Spoofed mapped header with bad bytes is removed; TLVs with bad bytes do not crash."""
    tlvs = [client.tlv(client.PP2_TYPE_AWS, b"\x01vpce-\xff\xfe"), client.tlv(client.PP2_TYPE_AUTHORITY, b"h\xffst")]
    response = client.request(
        envoy.port("http"), [("x-amzn-vpce-id", b"\xff")], source="127.0.0.24", proxy=pp(OUTSIDER, tlvs)
    )
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == OUTSIDER
    still_serving(envoy)


@pytest.mark.parametrize("listener", ["http", "network"])
def test_non_utf8_tlv_against_allow_list(envoy, counters, listener):
    watch = counters(envoy)
    tlvs = [client.tlv(client.PP2_TYPE_AWS, b"\x01\xff\xfe\xfd")]
    response = client.request(envoy.port(listener), source="127.0.0.20", proxy=pp(OUTSIDER, tlvs))
    if listener == "http":
        assert response.status == 403, response
        assert response.header("x-trustip-reject") == "tlv"
    else:
        assert response.closed, response
    role = "http" if listener == "http" else "network"
    assert decisions(watch.delta()) == {f"trustip.{role}.reject_tlv": 1}
    still_serving(envoy, listener)


def test_binary_garbage_tlvs(envoy):
    """Truncated/odd TLV payloads of every well-known type: decoded or refused, never a panic."""
    for kind in (client.PP2_TYPE_AWS, client.PP2_TYPE_AZURE, client.PP2_TYPE_GCP, client.PP2_TYPE_AUTHORITY, client.PP2_TYPE_UNIQUE_ID):
        for value in (b"", b"\x01", b"\x01\x02\x03", b"\xff" * 70):
            response = client.request(envoy.port("network"), source="127.0.0.24", proxy=pp(OUTSIDER, [client.tlv(kind, value)]))
            assert response.status in (200, 403) or response.closed, (kind, value, response)
    still_serving(envoy, "network")
    still_serving(envoy, "http")
