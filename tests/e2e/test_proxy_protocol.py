"""Each `proxy_protocol` word, with and without a PROXY header, in both roles; first-match rule
order and the implicit last rule (issue 2, "Rules")."""

from __future__ import annotations

import json
import socket

import pytest

from harness import client
from harness.envoy import Listener
from harness.expect import decisions, reject_body

PROXY_SRC, PROXY_SPORT = "203.0.113.9", 1111

RULES = [
    {"from": ["127.0.0.10/32"], "proxy_protocol": "require"},
    {"from": ["127.0.0.11/32"], "proxy_protocol": "use"},
    {"from": ["127.0.0.12/32"], "proxy_protocol": "ignore"},
    {"from": ["127.0.0.13/32"], "proxy_protocol": "reject"},
    {"from": ["127.0.0.14/32"], "proxy_protocol": "deny"},
    {"from": ["127.0.0.15"], "proxy_protocol": "require"},  # a bare IP is a /32
    # First match wins: .1.1 is denied although the /24 after it would let it use PROXY.
    {"from": ["127.0.1.1/32"], "proxy_protocol": "deny"},
    {"from": ["127.0.1.0/24"], "proxy_protocol": "use"},
]
PLUGIN = {"rules": RULES}

HEADERS = {
    "v1": lambda: client.proxy_v1(PROXY_SRC, "10.0.0.1", PROXY_SPORT, 80),
    "v2": lambda: client.proxy_v2(PROXY_SRC, "10.0.0.1", PROXY_SPORT, 80),
    "none": lambda: b"",
}

ACCEPT, REJECT = "accept", "reject"
# (direct peer, PROXY header, outcome, client address or reject reason, accept reason)
TABLE = [
    ("127.0.0.10", "v1", ACCEPT, PROXY_SRC, "proxy"),
    ("127.0.0.10", "v2", ACCEPT, PROXY_SRC, "proxy"),
    ("127.0.0.10", "none", REJECT, "missing_proxy", None),
    ("127.0.0.11", "v2", ACCEPT, PROXY_SRC, "proxy"),
    ("127.0.0.11", "none", ACCEPT, "127.0.0.11", "direct"),
    ("127.0.0.12", "v2", ACCEPT, "127.0.0.12", "direct"),  # PROXY dropped (counted)
    ("127.0.0.12", "none", ACCEPT, "127.0.0.12", "direct"),
    ("127.0.0.13", "v1", REJECT, "untrusted_proxy", None),
    ("127.0.0.13", "v2", REJECT, "untrusted_proxy", None),
    ("127.0.0.13", "none", ACCEPT, "127.0.0.13", "direct"),
    ("127.0.0.14", "v2", REJECT, "denied", None),
    ("127.0.0.14", "none", REJECT, "denied", None),
    ("127.0.0.15", "v2", ACCEPT, PROXY_SRC, "proxy"),
    ("127.0.1.1", "v2", REJECT, "denied", None),
    ("127.0.1.2", "v2", ACCEPT, PROXY_SRC, "proxy"),
    ("127.0.1.2", "none", ACCEPT, "127.0.1.2", "direct"),
    # Matched by no rule: the implicit last rule {from: any, proxy_protocol: reject}.
    ("127.0.0.66", "v1", REJECT, "untrusted_proxy", None),
    ("127.0.0.66", "v2", REJECT, "untrusted_proxy", None),
    ("127.0.0.66", "none", ACCEPT, "127.0.0.66", "direct"),
]
IDS = [f"{peer}-{header}-{outcome}" for peer, header, outcome, *_ in TABLE]


@pytest.fixture(scope="module")
def envoy(start_envoy):
    return start_envoy(
        Listener(name="http", plugin=PLUGIN),
        Listener(name="network", plugin=PLUGIN, network_role=True, http_role=False),
        Listener(name="both", plugin=PLUGIN, network_role=True, http_role=True),
    )


@pytest.mark.parametrize("peer,header,outcome,value,reason", TABLE, ids=IDS)
def test_http_role(envoy, echo, counters, peer, header, outcome, value, reason):
    watch = counters(envoy)
    response = client.request(envoy.port("http"), [("x-forwarded-for", "6.6.6.6")], source=peer, proxy=HEADERS[header]())
    delta = watch.delta()
    if outcome == ACCEPT:
        assert response.status == 200, response
        # Default headers: XFF overwritten with the verified chain (just C: nothing trusted),
        # x-envoy-external-address set to C.
        assert response.upstream_header("x-forwarded-for") == value
        assert response.upstream_header("x-envoy-external-address") == value
        assert decisions(delta) == {f"trustip.http.accept_{reason}": 1}
        if peer == "127.0.0.12" and header != "none":
            assert delta.get("trustip.http.proxy_ignored") == 1
    else:
        assert response.status == 403, response
        assert response.body == reject_body(value)
        assert response.header("x-trustip-reject") == value
        assert echo.find(response.test_id) is None, "a rejected request reached the upstream"
        assert decisions(delta) == {f"trustip.http.reject_{value}": 1}


@pytest.mark.parametrize("peer,header,outcome,value,reason", TABLE, ids=IDS)
def test_network_role(envoy, echo, counters, peer, header, outcome, value, reason):
    watch = counters(envoy)
    response = client.request(envoy.port("network"), source=peer, proxy=HEADERS[header]())
    delta = watch.delta()
    if outcome == ACCEPT:
        assert response.status == 200, response
        assert decisions(delta) == {f"trustip.network.accept_{reason}": 1}
        if peer == "127.0.0.12" and header != "none":
            assert delta.get("trustip.network.proxy_ignored") == 1
    else:
        # The connection is closed before any byte reaches the HTTP layer: no response at all.
        assert response.closed, response
        assert echo.find(response.test_id) is None
        assert decisions(delta) == {f"trustip.network.reject_{value}": 1}


@pytest.mark.parametrize("peer,header,outcome,value,reason", TABLE, ids=IDS)
def test_both_roles_agree(envoy, echo, counters, peer, header, outcome, value, reason):
    """Network role then HTTP role on one listener: the network role decides first; what it
    accepts, the HTTP role accepts the same way."""
    watch = counters(envoy)
    response = client.request(envoy.port("both"), source=peer, proxy=HEADERS[header]())
    delta = decisions(watch.delta())
    if outcome == ACCEPT:
        assert response.status == 200, response
        assert response.upstream_header("x-forwarded-for") == value
        assert delta == {f"trustip.network.accept_{reason}": 1, f"trustip.http.accept_{reason}": 1}
    else:
        assert response.closed, response
        assert delta == {f"trustip.network.reject_{value}": 1}


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(client.proxy_v2(command="LOCAL"), id="v2-LOCAL"),
        pytest.param(client.proxy_v1_unknown(), id="v1-UNKNOWN"),
    ],
)
def test_proxy_header_without_addresses_is_no_proxy_information(envoy, counters, header):
    """A LOCAL (v2) or UNKNOWN (v1) header carries no client address: Envoy keeps the real
    peer, so P = D and the PROXY information counts as absent: `require` rejects."""
    watch = counters(envoy)
    response = client.request(envoy.port("http"), source="127.0.0.10", proxy=header)
    assert response.status == 403, response
    assert response.header("x-trustip-reject") == "missing_proxy"
    assert decisions(watch.delta()) == {"trustip.http.reject_missing_proxy": 1}
    # ...and `use` takes the direct peer.
    response = client.request(envoy.port("http"), source="127.0.0.11", proxy=header)
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == "127.0.0.11"


def test_keep_alive_requests_each_decided(envoy, echo, counters):
    """Several requests on one connection: the HTTP role decides (and counts) every request."""
    watch = counters(envoy)
    sock = socket.create_connection(("127.0.0.1", envoy.port("http")), source_address=("127.0.0.11", 0), timeout=10)
    try:
        sock.sendall(client.proxy_v2(PROXY_SRC, "10.0.0.1", PROXY_SPORT, 80))
        reader = sock.makefile("rb")
        for _ in range(3):
            data, _ = client.build_request([("x-forwarded-for", "6.6.6.6")])
            sock.sendall(data.replace(b"connection: close\r\n", b""))
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(reader.read(length))
            assert ["x-forwarded-for", PROXY_SRC] in body["headers"], body
    finally:
        sock.close()
    assert decisions(watch.delta()) == {"trustip.http.accept_proxy": 3}
