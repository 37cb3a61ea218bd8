"""What Envoy 1.40 itself does around the filter (no wasm loaded). trustip's design and the
other tests rely on these; if an Envoy upgrade changes one, this file says which."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener

PP = client.proxy_v2("203.0.113.9", "10.0.0.1", 1111, 80)


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="optional", http_role=False, connection_log=True),
        Listener(name="strict", proxy_protocol="strict", http_role=False),
        Listener(name="none", proxy_protocol="none", http_role=False),
        Listener(name="append", http_role=False, skip_xff_append=False),
        Listener(name="dual", http_role=False, dual_stack=True, connection_log=True),
    )


def test_repeated_xff_lines_are_coalesced(envoy, echo):
    """Envoy joins repeated X-Forwarded-For lines into one value with ',' (an inline header):
    a filter sees one comma-separated value, in line order."""
    response = client.request(envoy.port("optional"), [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2, 3.3.3.3")])
    assert response.status == 200, response
    assert echo.find(response.test_id).get_all("x-forwarded-for") == [b"1.1.1.1,2.2.2.2, 3.3.3.3"]


def test_use_remote_address_with_skip_xff_append(envoy):
    """HCM use_remote_address + skip_xff_append: XFF untouched, x-envoy-external-address = P."""
    response = client.request(envoy.port("optional"), [("x-forwarded-for", "6.6.6.6")], source="127.0.0.5", proxy=PP)
    assert response.upstream_header("x-forwarded-for") == "6.6.6.6"
    assert response.upstream_header("x-envoy-external-address") == "203.0.113.9"


def test_without_skip_xff_append_envoy_appends_the_proxy_source(envoy):
    response = client.request(envoy.port("append"), [("x-forwarded-for", "6.6.6.6")], source="127.0.0.5", proxy=PP)
    assert response.upstream_header("x-forwarded-for") == "6.6.6.6,203.0.113.9"


def test_ipv4_mapped_proxy_source_kept_mapped(envoy):
    """Envoy writes an IPv4-mapped PROXY source as ::ffff:a.b.c.d (trustip writes IPv4)."""
    mapped = client.proxy_v2("::ffff:203.0.113.9", "::ffff:10.0.0.1", 1111, 80)
    response = client.request(envoy.port("optional"), source="::1", proxy=mapped)
    assert response.upstream_header("x-envoy-external-address") == "::ffff:203.0.113.9"


def test_strict_listener_resets_connection_without_proxy(envoy):
    response = client.request(envoy.port("strict"), source="127.0.0.66")
    assert response.closed and response.raw == b"", response


def test_proxy_header_on_listener_without_proxy_protocol_is_bad_request(envoy):
    for header in (client.proxy_v1("203.0.113.9", "10.0.0.1", 1111, 80), PP):
        response = client.request(envoy.port("none"), source="127.0.0.66", proxy=header)
        assert response.status == 400, response


def test_non_utf8_header_bytes_pass_through(envoy, echo):
    response = client.request(envoy.port("optional"), [("x-forwarded-for", b"1.1.1.1\xff"), ("x-real-ip", b"\xc0\x80")])
    assert response.status == 200, response
    recorded = echo.find(response.test_id)
    assert recorded.get("x-forwarded-for") == b"1.1.1.1\xff"
    assert recorded.get("x-real-ip") == b"\xc0\x80"


def test_dual_stack_listener_sees_ipv4_mapped_peers(envoy):
    response = client.request(envoy.port("dual"), source="127.0.0.66")
    assert response.upstream_header("x-envoy-external-address") == "::ffff:127.0.0.66"


def test_the_proxy_protocol_record_cannot_be_created_by_a_filter(echo, workdir):
    """Envoy's upstream PROXY socket writes the record `envoy.network.proxy_protocol.options`
    (docs/outbound-proxy.md). No object factory is registered for that key: set_filter_state is
    refused here, naming the key. Wasm's `set_envoy_filter_state` foreign function and the dynamic
    modules' typed filter state look keys up in the same factory registry (Envoy's source,
    `Context::setEnvoyFilterState`), so no trustip filter can put C there either."""
    from harness.envoy import EnvoyWithListeners

    spec = Listener(name="record", http_role=False, set_filter_state=True, direct_peer_key="envoy.network.proxy_protocol.options")
    instance = EnvoyWithListeners([spec], upstream_port=echo.port, name="facts-record", workdir=workdir("facts-record"))
    # The harness's set_filter_state uses the envoy.string factory; ask for the record's own.
    text = instance.config
    chain = text["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    chain[0]["typed_config"]["on_new_connection"][0]["factory_key"] = "envoy.network.proxy_protocol.options"
    code = instance.run_to_exit(timeout=30)
    assert code not in (0, None), instance.output_text()
    assert "envoy.network.proxy_protocol.options" in instance.output_text(), instance.output_text()
    assert "object factory" in instance.output_text(), instance.output_text()
