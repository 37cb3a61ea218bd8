"""The sample configurations in envoy/ work as shipped: each runs in Envoy (ports, the wasm path
and the bind address substituted) and handles a request from the load balancer and a spoofed
one as its comments say."""

from __future__ import annotations

import time

import pytest

from harness import client, net
from harness.envoy import REPO, Envoy

LB = "127.0.0.5"
ATTACKER = "127.0.0.66"
CLIENT = "203.0.113.9"


def load(name: str, wasm, echo_port: int) -> tuple[str, int, int]:
    text = (REPO / "envoy" / name).read_text()
    port, admin = net.free_port(), net.free_port()
    for old, new in [
        ("port_value: 10000}", f"port_value: {port}}}"),
        ("port_value: 9901}", f"port_value: {admin}}}"),
        ("port_value: 8080}", f"port_value: {echo_port}}}"),
        ("address: 0.0.0.0,", "address: 127.0.0.1,"),
        ("target/wasm32-wasip1/release/trustip.wasm", str(wasm)),
    ]:
        assert old in text, f"{name}: expected {old!r} in the sample"
        text = text.replace(old, new)
    return text, port, admin


@pytest.fixture
def sample(wasm, echo, workdir):
    started = []

    def start(name: str) -> tuple[Envoy, int]:
        text, port, admin = load(name, wasm, echo.port)
        stem = name.removesuffix(".yaml")
        envoy = Envoy(text, name=stem, admin_port=admin, workdir=workdir(f"sample-{stem}"))
        started.append(envoy)
        return envoy.start(), port

    yield start
    for envoy in started:
        envoy.stop()


def pp(source: str = CLIENT) -> bytes:
    return client.proxy_v2(source, "10.0.0.1", 1111, 80)


def wait_stdout(envoy: Envoy, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in envoy.stdout_text().splitlines():
            if needle in line:
                return line
        assert time.monotonic() < deadline, f"no stdout line with {needle!r}:\n{envoy.stdout_text()}"
        time.sleep(0.05)


def test_strict_lb_only(sample):
    envoy, port = sample("strict-lb-only.yaml")
    ok = client.request(port, [("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6")], source=LB, proxy=pp())
    assert ok.status == 200, ok
    assert ok.upstream_header("x-forwarded-for") == CLIENT
    assert ok.upstream_header("x-real-ip") == CLIENT
    assert ok.upstream_header("x-envoy-external-address") == CLIENT
    wait_stdout(envoy, f"client_ip={CLIENT} reason=proxy")
    assert client.request(port, source=ATTACKER, proxy=pp()).closed  # spoofed PROXY: closed
    assert client.request(port, source=ATTACKER).closed  # no PROXY: Envoy resets (strict)
    stats = envoy.stats()
    assert stats.get("wasmcustom.trustip.network.reject_untrusted_proxy") == 1, stats


def test_mixed_lb_and_direct(sample):
    envoy, port = sample("mixed-lb-and-direct.yaml")
    ok = client.request(port, source=LB, proxy=pp())
    assert ok.status == 200, ok
    assert ok.upstream_header("x-forwarded-for") == CLIENT
    assert ok.upstream_header("forwarded") == f"for={CLIENT}"
    direct = client.request(port, [("x-forwarded-for", "6.6.6.6")], source=ATTACKER)
    assert direct.status == 200, direct
    assert direct.upstream_header("x-forwarded-for") == ATTACKER
    assert direct.upstream_header("x-real-ip") == ATTACKER
    assert client.request(port, source=ATTACKER, proxy=pp()).closed
    assert client.request(port, source=LB).closed  # the LB without PROXY: missing_proxy
    wait_stdout(envoy, "connection client_ip=- reason=untrusted_proxy")
    wait_stdout(envoy, "client_ip=- reason=missing_proxy")


def test_http_role_only(sample):
    envoy, port = sample("http-role-only.yaml")
    ok = client.request(port, [("x-amzn-vpce-id", "spoofed")], source=LB, proxy=pp())
    assert ok.status == 200, ok
    assert ok.upstream_header("x-forwarded-for") == CLIENT
    assert ok.upstream_header("x-amzn-vpce-id") is None
    spoofed = client.request(port, source=ATTACKER, proxy=pp())
    assert spoofed.status == 403, spoofed
    assert spoofed.header("x-trustip-reject") == "untrusted_proxy"
    wait_stdout(envoy, "403 client_ip=- reason=untrusted_proxy")


def test_tcp_proxy_network_role(sample, echo):
    envoy, port = sample("tcp-proxy-network-role.yaml")
    ok = client.request(port, [("x-forwarded-for", "6.6.6.6")], source=LB, proxy=pp())
    assert ok.status == 200, ok
    # TCP: the bytes are forwarded untouched, headers included.
    assert ok.upstream_header("x-forwarded-for") == "6.6.6.6"
    assert client.request(port, source=ATTACKER, proxy=pp()).closed
    wait_stdout(envoy, f"connection client_ip={CLIENT} reason=proxy")
    wait_stdout(envoy, "connection client_ip=- reason=untrusted_proxy")
