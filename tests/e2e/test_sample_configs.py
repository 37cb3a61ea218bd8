"""The sample configurations in envoy/ work as shipped: each runs in Envoy (ports, the wasm path
and the bind address substituted) and handles a request from the load balancer and a spoofed
one as its comments say. They are generated (`trustip render --sample NAME`): a fresh render
must give each file exactly, and every sample follows the wiring decisions (one VM per role,
underscored header names dropped, a listener access log)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from cli_support import cli, localize  # noqa: F401  (cli is a fixture)
from harness import client, net
from harness.envoy import REPO, Envoy

LB = "127.0.0.5"
ATTACKER = "127.0.0.66"
CLIENT = "203.0.113.9"
SAMPLES = REPO / "envoy"
NAMES = ["demo", "http-role-only", "mixed-lb-and-direct", "strict-lb-only", "tcp-proxy-network-role"]


def load(name: str, wasm, echo_port: int) -> tuple[dict, int, int]:
    config = yaml.safe_load((SAMPLES / name).read_text())
    port, admin = net.free_port(), net.free_port()
    config = localize(
        config,
        addresses={("0.0.0.0", 10000): ("127.0.0.1", port), ("127.0.0.1", 9901): ("127.0.0.1", admin), ("127.0.0.1", 8080): ("127.0.0.1", echo_port)},
        wasm=wasm,
    )
    return config, port, admin


@pytest.fixture
def sample(wasm, echo, workdir):
    started = []

    def start(name: str) -> tuple[Envoy, int]:
        config, port, admin = load(name, wasm, echo.port)
        stem = name.removesuffix(".yaml")
        envoy = Envoy(config, name=stem, workdir=workdir(f"sample-{stem}"))
        started.append(envoy)
        return envoy.start(), port

    yield start
    for envoy in started:
        envoy.stop()


def test_samples_are_what_render_prints(cli):  # noqa: F811
    """envoy/ cannot drift from the model: every file is a fresh `render --sample`, and every
    sample the model knows is shipped."""
    assert sorted(path.stem for path in SAMPLES.glob("*.yaml")) == NAMES
    for name in NAMES:
        rendered = cli.run("render", "--sample", name).out
        assert rendered == (SAMPLES / f"{name}.yaml").read_text(), (
            f"envoy/{name}.yaml differs from a fresh render: regenerate with\n"
            f"  trustip render --sample {name} > envoy/{name}.yaml"
        )
    unknown = cli.run("render", "--sample", "nope", expect=2)
    assert all(name in unknown.err for name in NAMES), unknown


def _filters(listener: dict) -> list[dict]:
    filters = list(listener["filter_chains"][0]["filters"])
    for f in filters:
        if f["name"] == "envoy.filters.network.http_connection_manager":
            filters += f["typed_config"]["http_filters"]
    return filters


@pytest.mark.parametrize("name", NAMES)
def test_sample_follows_the_wiring_decisions(name):
    config = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    roles = {"envoy.filters.network.wasm": "trustip-network", "envoy.filters.http.wasm": "trustip-http"}
    policies = set()
    for listener in config["static_resources"]["listeners"]:
        assert listener["access_log"], f"{listener['name']}: no listener access log"
        for f in _filters(listener):
            if f["name"] in roles:
                plugin = f["typed_config"]["config"]
                # One VM per role: a misconfigured filter of one role cannot trap the other's VM.
                assert plugin["root_id"] == plugin["vm_config"]["vm_id"] == roles[f["name"]], plugin
                assert plugin["failure_policy"] == "FAIL_CLOSED"
                policies.add(plugin["configuration"]["value"])
                json.loads(plugin["configuration"]["value"])
            if f["name"] == "envoy.filters.network.http_connection_manager":
                hcm = f["typed_config"]
                assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
                assert hcm["use_remote_address"] is True and hcm["skip_xff_append"] is True
    assert len(policies) == 1, "both roles take the same policy"


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
    direct = client.request(port, [("x-forwarded-for", "6.6.6.6"), ("x_forwarded_for", "6.6.6.6"), ("x_real_ip", "6.6.6.6")], source=ATTACKER)
    assert direct.status == 200, direct
    assert direct.upstream_header("x-forwarded-for") == ATTACKER
    assert direct.upstream_header("x-real-ip") == ATTACKER
    # Underscored look-alikes are dropped by the HCM (headers_with_underscores_action).
    assert direct.upstream_header("x_forwarded_for") is None, direct.json()["headers"]
    assert direct.upstream_header("x_real_ip") is None, direct.json()["headers"]
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
