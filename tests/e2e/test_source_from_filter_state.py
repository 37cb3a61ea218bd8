"""P read from the direct-peer filter state (`set_filter_state` recording
"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%" when the connection opens) is the
PROXY-derived source whatever the HCM does later. With `use_remote_address: false` the HCM takes
the downstream address (`source.address`) from the client's X-Forwarded-For: a one-word value
then lets a direct client's X-Forwarded-For pose as a PROXY source, a two-word value does not."""

from __future__ import annotations

import pytest

from harness import client
from harness.envoy import Listener

BOTH = "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%"
PLUGIN = {
    "rules": [
        {"from": ["127.0.0.5/32"], "proxy_protocol": "require"},
        {"from": ["127.0.0.77/32"], "proxy_protocol": "use"},
    ],
    "headers": {"set": ["x-envoy-external-address", "x-real-ip"]},
}


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="both", plugin=PLUGIN, direct_peer_format=BOTH, use_remote_address=False),
        Listener(name="both-remote", plugin=PLUGIN, direct_peer_format=BOTH),
        Listener(name="one-word", plugin=PLUGIN, use_remote_address=False),
    )


@pytest.mark.parametrize("listener", ["both", "both-remote"])
def test_xff_cannot_pose_as_the_proxy_source(envoy, listener):
    # A `use` peer without a PROXY header: C must be the peer itself, not its XFF claim.
    response = client.request(envoy.port(listener), [("x-forwarded-for", "203.0.113.9")], source="127.0.0.77")
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == "127.0.0.77"
    assert response.upstream_header("x-real-ip") == "127.0.0.77"
    assert response.upstream_header("x-forwarded-for") == "127.0.0.77"


@pytest.mark.parametrize("listener", ["both", "both-remote"])
def test_proxy_source_from_filter_state(envoy, listener):
    proxy = client.proxy_v2("198.51.100.7", "127.0.0.1", 40000, 443)
    response = client.request(envoy.port(listener), [("x-forwarded-for", "203.0.113.9")], source="127.0.0.5", proxy=proxy)
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == "198.51.100.7"


@pytest.mark.wasm_only("the one-word set_filter_state value is the wasm build's direct-peer format")
def test_one_word_value_with_use_remote_address_false_is_fooled(envoy):
    """Why the README insists on use_remote_address: true when the value holds D alone: P is
    then source.address, which the HCM took from the client's X-Forwarded-For."""
    response = client.request(envoy.port("one-word"), [("x-forwarded-for", "203.0.113.9")], source="127.0.0.77")
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == "203.0.113.9"
