"""The sample configurations in envoy/ work as shipped: each runs in Envoy (ports, the module
path and the bind address substituted) and handles a request from the load balancer and a
spoofed one as its comments say. They are generated (`trustip render --sample NAME`): a fresh
render must give each file exactly, and every sample follows the wiring decisions (underscored
header names dropped, a listener access log; wasm: both roles in one VM; native: the listener filter
after proxy_protocol, no set_filter_state, the HCM appending X-Forwarded-For only when no trustip
HTTP filter owns it). The native-* samples run the native build (the dynamic module)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from cli_support import cli, localize, native  # noqa: F401  (cli and native are fixtures)
from harness import client, names, net
from harness.envoy import REPO, Envoy

LB = "127.0.0.5"
ATTACKER = "127.0.0.66"
CLIENT = "203.0.113.9"
SAMPLES = REPO / "envoy"
NAMES = [
    "demo",
    "http-role-only",
    "mixed-lb-and-direct",
    "native-lb-and-cdn",
    "native-strict-lb-only",
    "strict-lb-only",
    "tcp-proxy-network-role",
]
# A CDN edge in the native-lb-and-cdn sample's xff.trusted (a Cloudflare range).
CDN = "173.245.48.7"


def load(name: str, module, echo_port: int) -> tuple[dict, int, int]:
    """The sample with loopback ports and `module` (the native build for native-*, else wasm)."""
    config = yaml.safe_load((SAMPLES / name).read_text())
    port, admin = net.free_port(), net.free_port()
    build = {"native": module} if name.startswith("native-") else {"wasm": module}
    config = localize(
        config,
        addresses={("0.0.0.0", 10000): ("127.0.0.1", port), ("127.0.0.1", 9901): ("127.0.0.1", admin), ("127.0.0.1", 8080): ("127.0.0.1", echo_port)},
        **build,
    )
    return config, port, admin


@pytest.fixture
def sample(request, wasm, echo, workdir):
    started = []

    def start(name: str) -> tuple[Envoy, int]:
        module = request.getfixturevalue("native") if name.startswith("native-") else wasm
        config, port, admin = load(name, module, echo.port)
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


WASM_ROLES = {"envoy.filters.network.wasm": "trustip-network", "envoy.filters.http.wasm": "trustip-http"}
NATIVE_FILTERS = {
    "envoy.filters.listener.dynamic_modules": "trustip-listener",
    "envoy.filters.network.dynamic_modules": "trustip-network",
    "envoy.filters.http.dynamic_modules": "trustip-http",
}


@pytest.mark.parametrize("name", NAMES)
def test_sample_follows_the_wiring_decisions(name):
    config = yaml.safe_load((SAMPLES / f"{name}.yaml").read_text())
    native_sample = name.startswith("native-")
    policies = set()
    for listener in config["static_resources"]["listeners"]:
        assert listener["access_log"], f"{listener['name']}: no listener access log"
        listener_filters = [f["name"] for f in listener["listener_filters"]]
        assert listener_filters[0] == "envoy.filters.listener.proxy_protocol", listener_filters
        filters = _filters(listener) + listener["listener_filters"]
        names_in_chain = [f["name"] for f in filters]
        trustip_http = any(n in ("envoy.filters.http.wasm", "envoy.filters.http.dynamic_modules") for n in names_in_chain)
        if native_sample:
            # The native build reads D and P itself, decides at the listener, right after proxy_protocol.
            assert listener_filters == ["envoy.filters.listener.proxy_protocol", "envoy.filters.listener.dynamic_modules"]
            assert "envoy.filters.network.set_filter_state" not in names_in_chain
            assert not [n for n in names_in_chain if "wasm" in n], names_in_chain
        else:
            assert listener_filters == ["envoy.filters.listener.proxy_protocol"]
            assert listener["filter_chains"][0]["filters"][0]["name"] == "envoy.filters.network.set_filter_state"
            assert not [n for n in names_in_chain if "dynamic_modules" in n], names_in_chain
        for f in filters:
            if f["name"] in WASM_ROLES:
                plugin = f["typed_config"]["config"]
                # Both roles in one VM: one compiled policy, one V8 instance per thread.
                assert plugin["root_id"] == WASM_ROLES[f["name"]], plugin
                assert plugin["vm_config"]["vm_id"] == names.VM_ID, plugin
                assert plugin["failure_policy"] == "FAIL_CLOSED"
                policies.add(plugin["configuration"]["value"])
                json.loads(plugin["configuration"]["value"])
            if f["name"] in NATIVE_FILTERS:
                typed = f["typed_config"]
                # filter_name picks the filter in the one module; it must match the filter type.
                assert typed["filter_name"] == NATIVE_FILTERS[f["name"]], typed
                assert typed["dynamic_module_config"]["metrics_namespace"] == "trustip"
                assert typed["dynamic_module_config"]["module"]["local"]["filename"] == "target/release/libtrustip.so"
                policies.add(typed["filter_config"]["value"])
                json.loads(typed["filter_config"]["value"])
            if f["name"] == "envoy.filters.network.http_connection_manager":
                hcm = f["typed_config"]
                assert hcm["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"
                assert hcm["use_remote_address"] is True
                # trustip's HTTP filter owns X-Forwarded-For; without it (native listener filter
                # alone) the HCM appends the verified remote address itself.
                assert hcm["skip_xff_append"] is trustip_http, (name, hcm["skip_xff_append"])
    assert len(policies) == 1, "every trustip filter takes the same policy"


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


def native_listener_counters(envoy: Envoy) -> dict[str, int]:
    """The native listener filter's counters, without Envoy's per-listener scope prefix."""
    out: dict[str, int] = {}
    for name, value in envoy.stats("trustip.listener").items():
        short = "trustip.listener." + name.rsplit("trustip.listener.", 1)[-1]
        out[short] = out.get(short, 0) + value
    return out


def test_native_strict_lb_only(sample, echo):
    envoy, port = sample("native-strict-lb-only.yaml")
    ok = client.request(port, [("x-forwarded-for", "6.6.6.6")], source=LB, proxy=pp())
    assert ok.status == 200, ok
    # No trustip HTTP filter: Envoy's HCM writes the client the listener filter set.
    assert ok.upstream_header("x-envoy-external-address") == CLIENT
    assert ok.upstream_header("x-forwarded-for").split(",")[-1].strip() == CLIENT
    # The request's line reads the listener filter's decision (no trustip HTTP filter runs).
    line = wait_stdout(envoy, f'" 200 client_ip={CLIENT} reason=proxy direct_peer={LB}:')
    assert f"source={CLIENT}:" in line, line
    spoofed = client.request(port, source=ATTACKER, proxy=pp())  # spoofed PROXY: closed, no byte
    assert spoofed.closed and spoofed.raw == b"", spoofed
    assert echo.find(spoofed.test_id) is None
    assert client.request(port, source=ATTACKER).closed  # no PROXY: Envoy resets (strict)
    wait_stdout(envoy, f"connection client_ip=- reason=untrusted_proxy direct_peer={ATTACKER}:{spoofed.local_port} ")
    envoy.wait_for_log(f"reject untrusted_proxy: direct_peer={ATTACKER}:{spoofed.local_port}")
    assert native_listener_counters(envoy).get("trustip.listener.reject_untrusted_proxy") == 1


def test_native_lb_and_cdn(sample, echo):
    envoy, port = sample("native-lb-and-cdn.yaml")
    # The load balancer's PROXY header names a CDN edge, whose X-Forwarded-For names the client.
    walked = client.request(
        port, [("x-forwarded-for", f"6.6.6.6, {CLIENT}"), ("x-real-ip", "6.6.6.6")], source=LB, proxy=pp(CDN)
    )
    assert walked.status == 200, walked
    assert walked.upstream_header("x-envoy-external-address") == CLIENT
    assert walked.upstream_header("x-real-ip") == CLIENT
    assert walked.upstream_header("x-forwarded-for") == f"{CLIENT}, {CDN}"
    wait_stdout(envoy, f'" 200 client_ip={CLIENT} reason=xff direct_peer={LB}:')
    # The load balancer naming the client itself: no walk.
    ok = client.request(port, [("x-forwarded-for", "6.6.6.6")], source=LB, proxy=pp())
    assert ok.status == 200 and ok.upstream_header("x-forwarded-for") == CLIENT, ok
    # A direct client: itself, its own X-Forwarded-For and x_real_ip look-alike gone.
    direct = client.request(port, [("x-forwarded-for", "6.6.6.6"), ("x_real_ip", "6.6.6.6")], source=ATTACKER)
    assert direct.status == 200, direct
    assert direct.upstream_header("x-forwarded-for") == ATTACKER
    assert direct.upstream_header("x-real-ip") == ATTACKER
    assert direct.upstream_header("x_real_ip") is None, direct.json()["headers"]
    spoofed = client.request(port, source=ATTACKER, proxy=pp())
    assert spoofed.closed and spoofed.raw == b"", spoofed
    assert echo.find(spoofed.test_id) is None
    missing = client.request(port, source=LB)  # the load balancer without PROXY: missing_proxy
    assert missing.closed and missing.raw == b"", missing
    wait_stdout(envoy, f"connection client_ip=- reason=untrusted_proxy direct_peer={ATTACKER}:{spoofed.local_port} ")
    envoy.wait_for_log(f"reject untrusted_proxy: direct_peer={ATTACKER}:{spoofed.local_port}")
    envoy.wait_for_log(f"reject missing_proxy: direct_peer={LB}:{missing.local_port}")
