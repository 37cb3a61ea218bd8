"""TLS passthrough at a gateway (issue 9, part 3): SNI routing to a TLS backend, trustip in
front of `tcp_proxy`, the outbound PROXY v2 header carrying C.

client (Python ssl, SNI, verifying a throwaway certificate) -> HAProxy (mode tcp, send-proxy-v2,
from the load balancer's address) -> Envoy (proxy_protocol, trustip, tls_inspector; one filter
chain matched on server_names; tcp_proxy to a cluster with the upstream PROXY v2 socket) -> a
backend that reads the PROXY header, then completes TLS with the certificate and answers inside
TLS. Envoy never terminates TLS: the client's handshake with the backend's certificate proves
the bytes went through untouched.

Layouts: wasm: set_filter_state, the network role, tcp_proxy in the matched chain; native:
trustip-listener between proxy_protocol and tls_inspector (a refused connection is closed before
Envoy waits for its ClientHello).
"""

from __future__ import annotations

import ssl
import time

import pytest

from harness import client, tls
from harness.envoy import Listener
from harness.proxy_backend import ProxyBackend, server_context

LB = "127.0.0.11"
CLIENT = "127.0.0.42"
ATTACKER = "127.0.0.66"
IGNORE = "127.0.0.13"
NAME = "backend.trustip.test"
POLICY = {
    "upstream_proxy_protocol": True,
    "rules": [
        {"from": [f"{LB}/32"], "proxy_protocol": "require"},
        {"from": [f"{IGNORE}/32"], "proxy_protocol": "ignore"},
    ],
}


@pytest.fixture(scope="module")
def certificate(workdir):
    return tls.self_signed(workdir("tls"), NAME)


@pytest.fixture(scope="module")
def backend(certificate):
    cert, key = certificate
    server = ProxyBackend(tls=server_context(str(cert), str(key))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def envoy(start_envoy, build, backend):
    native = build == "native"
    return start_envoy(
        Listener(
            name="tls",
            plugin=POLICY,
            tls_server_names=[NAME],
            upstream_proxy="v2",
            upstream_port=backend.port,
            http_role=False,
            network_role=not native,
            listener_role=native,
            connection_log=True,
            ipv6=False,
        )
    )


@pytest.fixture(scope="module")
def lb(envoy, start_haproxy):
    return start_haproxy(envoy.port("tls"), bind_ip=LB, source_ip=LB)


def exchange(sock: ssl.SSLSocket) -> tuple[str, dict]:
    """One HTTP/1.1 request inside TLS; (test id, the backend's JSON answer)."""
    data, test_id = client.build_request(host=NAME)
    sock.sendall(data)
    raw = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        raw += chunk
    response = client.parse_response(raw)
    assert response.status == 200, response
    return test_id, response.json()


def _stat(envoy, suffix: str) -> int:
    return sum(value for name, value in envoy.stats(suffix).items() if name.endswith(suffix))


def test_sni_routed_to_the_tls_backend_with_c_in_the_proxy_header(envoy, lb, backend, certificate):
    sock, local_port = tls.connect(lb.port, NAME, certificate[0], source=CLIENT, dest=LB)
    with sock:
        # The client completed TLS with the backend's certificate (verified, name checked).
        assert sock.getpeercert()["subject"] == ((("commonName", NAME),),)
        test_id, answer = exchange(sock)
    record = backend.wait_for(test_id)
    assert record.tls and record.server_name == NAME, record
    header = record.header
    # C = the client HAProxy carried: its address and port, HAProxy's frontend as destination.
    assert (header.kind, header.command, header.family) == ("v2", "PROXY", "TCP4")
    assert (header.src, header.src_port, header.dst, header.dst_port) == (CLIENT, local_port, LB, lb.port)
    assert answer["proxy"]["src"] == CLIENT and answer["tls"] is True


def test_a_spoofed_proxy_header_is_closed_and_reaches_no_backend(envoy, backend, certificate):
    count = backend.count
    rejected = _stat(envoy, "reject_untrusted_proxy")
    proxy = client.proxy_v2("203.0.113.9", "10.0.0.1", 4444, 443)
    with pytest.raises((ssl.SSLError, OSError)):
        tls.connect(envoy.port("tls"), NAME, certificate[0], source=ATTACKER, proxy=proxy)
    assert _stat(envoy, "reject_untrusted_proxy") == rejected + 1
    time.sleep(0.2)
    assert backend.count == count


def test_an_ignored_claim_is_refused_when_forwarding_proxy(envoy, backend, certificate):
    """`upstream_proxy_protocol`: the ignore rule's claim would be forwarded by tcp_proxy."""
    count = backend.count
    refused = _stat(envoy, "reject_proxy_not_forwardable")
    proxy = client.proxy_v2("203.0.113.9", "10.0.0.1", 4444, 443)
    with pytest.raises((ssl.SSLError, OSError)):
        tls.connect(envoy.port("tls"), NAME, certificate[0], source=IGNORE, proxy=proxy)
    assert _stat(envoy, "reject_proxy_not_forwardable") == refused + 1
    time.sleep(0.2)
    assert backend.count == count
    # Without a header the same peer is its own client, and that is what the backend gets.
    sock, local_port = tls.connect(envoy.port("tls"), NAME, certificate[0], source=IGNORE)
    with sock:
        test_id, _ = exchange(sock)
    header = backend.wait_for(test_id).header
    assert (header.src, header.src_port) == (IGNORE, local_port)


def test_an_unknown_sni_finds_no_filter_chain(envoy, lb, backend, certificate):
    count = backend.count
    no_chain = _stat(envoy, "no_filter_chain_match")
    with pytest.raises((ssl.SSLError, OSError)):
        tls.connect(lb.port, "unknown.trustip.test", certificate[0], source=CLIENT, dest=LB)
    deadline = time.monotonic() + 5
    while _stat(envoy, "no_filter_chain_match") == no_chain and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stat(envoy, "no_filter_chain_match") == no_chain + 1
    assert backend.count == count


def test_the_backend_answer_names_the_client(envoy, lb, certificate):
    """The same through the client's eyes: the backend's JSON answer (inside TLS) names it."""
    sock, _ = tls.connect(lb.port, NAME, certificate[0], source="127.0.0.43", dest=LB)
    with sock:
        _, answer = exchange(sock)
    assert answer["proxy"]["src"] == "127.0.0.43"
