"""The realistic path: a real L4 load balancer (HAProxy, mode tcp, send-proxy-v2) bound to
127.0.0.5 in front of Envoy + trustip (both roles, strict PROXY listener)."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener, wait_for_line
from harness.expect import decisions

LB = "127.0.0.5"
CLIENT = "127.0.0.42"
PLUGIN = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}],
    "headers": {"set": ["x-envoy-external-address", "x-real-ip"], "tlv": {"unique_id": "x-lb-unique-id"}},
}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="strict", proxy_protocol="strict", plugin=PLUGIN, network_role=True, access_log=True),
        Listener(name="optional", proxy_protocol="optional", plugin=PLUGIN, network_role=True),
    )


@pytest.fixture(scope="module")
def lb(envoy, start_haproxy):
    # unique-id-format %ci: HAProxy's unique id is the client's IP, sent as TLV 0x05.
    return start_haproxy(
        envoy.port("strict"), bind_ip=LB, source_ip=LB, proxy_v2_options="unique-id,authority,crc32c", unique_id_format="%ci"
    )


@pytest.fixture(scope="module")
def lb_optional(envoy, start_haproxy):
    return start_haproxy(envoy.port("optional"), bind_ip=LB, source_ip=LB)


def test_happy_path(envoy, lb, counters):
    watch = counters(envoy)
    response = client.request(lb.port, source=CLIENT, dest=LB)
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == CLIENT
    assert response.upstream_header("x-envoy-external-address") == CLIENT
    assert response.upstream_header("x-real-ip") == CLIENT
    assert decisions(watch.delta()) == {"trustip.network.accept_proxy": 1, "trustip.http.accept_proxy": 1}
    line = wait_for_line(envoy.listeners["strict"].access_log, response.test_id)
    assert f"client_ip={CLIENT} reason=proxy direct={LB}:" in line, line


def test_unique_id_tlv_header(envoy, lb):
    response = client.request(lb.port, [("x-lb-unique-id", "spoofed")], source=CLIENT, dest=LB)
    assert response.status == 200, response
    assert response.upstream_header("x-lb-unique-id") == CLIENT.encode().hex()


def test_spoofed_xff_replaced_through_lb(envoy, lb):
    spoof = [("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6"), ("true-client-ip", "6.6.6.6")]
    response = client.request(lb.port, spoof, source=CLIENT, dest=LB)
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == CLIENT
    assert response.upstream_header("x-real-ip") == CLIENT
    assert response.upstream_header("true-client-ip") is None


def test_client_sending_its_own_proxy_header_through_lb(envoy, lb):
    """A client cannot smuggle a PROXY header through the LB: HAProxy prepends its own, and
    Envoy reads only the first; the client's lands in the HTTP stream (a bad request)."""
    response = client.request(lb.port, source=CLIENT, dest=LB, proxy=client.proxy_v1("6.6.6.6", "10.0.0.1", 1, 80))
    assert response.status != 200, response


def test_spoofed_proxy_header_direct_to_envoy(envoy, lb, counters):
    watch = counters(envoy)
    response = client.request(envoy.port("strict"), source="127.0.0.66", proxy=client.proxy_v2("6.6.6.6", "10.0.0.1", 1, 80))
    assert response.closed, response
    assert decisions(watch.delta()) == {"trustip.network.reject_untrusted_proxy": 1}


def test_direct_without_proxy_to_strict_listener_reset_by_envoy(envoy, lb, counters):
    watch = counters(envoy)
    response = client.request(envoy.port("strict"), source="127.0.0.66")
    assert response.closed, response
    assert decisions(watch.delta()) == {}  # Envoy's proxy_protocol filter, not trustip, refused it


def test_many_clients_through_lb(envoy, lb):
    for i in range(40, 50):
        source = f"127.0.0.{i}"
        response = client.request(lb.port, source=source, dest=LB)
        assert response.status == 200, response
        assert response.upstream_header("x-forwarded-for") == source


def test_lb_in_front_of_optional_listener(envoy, lb_optional):
    response = client.request(lb_optional.port, [("x-forwarded-for", "6.6.6.6")], source=CLIENT, dest=LB)
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == CLIENT
    # The LB itself connecting without PROXY (e.g. a health check misconfigured): rejected.
    assert client.request(envoy.port("optional"), source=LB).closed
