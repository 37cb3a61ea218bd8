"""`trustip render --target envoy` and `--target compose` (issue 3, "trustip render").

- envoy: the printed bootstrap passes `envoy --mode validate` and serves traffic as printed
  with the built wasm, with and without --strict-proxy; the same with `--build native` (the
  dynamic module's listener and HTTP filters): the load balancer's client reaches the upstream,
  a spoofing peer is closed with no byte, a CDN's X-Forwarded-For is walked. `--build native`
  with istio or compose, --wasm with native and --module with wasm are usage errors.
- compose: the docker-compose stack has the promised structure; its envoy.yaml and haproxy.cfg
  run natively here (no Docker engine on this machine) after substituting only addresses and
  paths; the stack shipped in deploy/compose/ is exactly what render prints today.
- issue 9, both builds: --health-check-path (Envoy answers the load balancer's PROXY LOCAL /
  v1 UNKNOWN / header-less health check after trustip admitted it, 503 when failed, another
  path refused missing_proxy), --upstream-proxy v2 --upstream-tlvs (a PROXY-parsing backend
  gets the client and the VPC endpoint TLV; an ignore rule's header never reaches it),
  --tls-passthrough (SNI routing to a TLS backend behind the same outbound PROXY); each option
  alone passes `envoy --mode validate`; the meaningless combinations are one usage line."""

from __future__ import annotations

import filecmp
import hashlib
import json

import pytest
import yaml

from cli_support import (  # noqa: F401  (cli is a fixture)
    DEPLOY_COMPOSE,
    HAProxyFromConfig,
    RenderedEnvoy,
    cli,
    envoy_validate,
    localize,
    native,
    render_envoy,
    scratch_dir,
    write_policy,
)
from harness import client, net

LB = "127.0.0.5"
ATTACKER = "127.0.0.66"
VPCE = "vpce-0a1b2c3d4e5f"
POLICY = {
    "rules": [
        {"from": [f"{LB}/32"], "proxy_protocol": "require"},
        {"from": ["127.0.0.9/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": [VPCE]}},
    ],
    "headers": {"tlv": {"aws_vpce_id": "x-amzn-vpce-id"}},
}


@pytest.fixture(scope="module")
def policy_path():
    return write_policy(scratch_dir("render"), "policy", POLICY)


@pytest.fixture(scope="module", params=[False, True], ids=["allow-without-proxy", "strict-proxy"])
def rendered(request, cli, policy_path, echo, wasm):  # noqa: F811
    strict = request.param
    text, port = render_envoy(cli, policy_path, echo.port, *(["--strict-proxy"] if strict else []), wasm=wasm)
    instance = RenderedEnvoy(text, name="render-strict" if strict else "render-allow")
    check = envoy_validate(instance.config_path)
    assert check.returncode == 0, check.stdout + check.stderr
    instance.start()
    yield strict, instance, port, text
    instance.stop()


def test_rendered_bootstrap_shape(rendered, wasm):
    strict, instance, port, text = rendered
    config = yaml.safe_load(text)
    (listener,) = config["static_resources"]["listeners"]
    (pp,) = listener["listener_filters"]
    assert pp["name"] == "envoy.filters.listener.proxy_protocol"
    assert pp["typed_config"]["allow_requests_without_proxy_protocol"] is (not strict)
    assert pp["typed_config"]["tlv_location"] == "FILTER_STATE"
    # Exactly the TLV keys the policy uses.
    assert pp["typed_config"]["rules"] == [{"tlv_type": 234, "on_tlv_present": {"key": "aws_vpce_id"}}]
    filters = listener["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.network.set_filter_state",
        "envoy.filters.network.wasm",
        "envoy.filters.network.http_connection_manager",
    ]
    network_plugin = filters[1]["typed_config"]["config"]
    hcm = filters[2]["typed_config"]
    assert hcm["use_remote_address"] is True and hcm["skip_xff_append"] is True
    assert hcm["common_http_protocol_options"] == {"headers_with_underscores_action": "DROP_HEADER"}
    http_plugin = hcm["http_filters"][0]["typed_config"]["config"]
    assert [network_plugin["root_id"], http_plugin["root_id"]] == ["trustip-network", "trustip-http"]
    # Both roles in one VM (one compiled policy); a misconfigured root_id cannot trap it.
    assert [network_plugin["vm_config"]["vm_id"], http_plugin["vm_config"]["vm_id"]] == ["trustip", "trustip"]
    for plugin in (network_plugin, http_plugin):
        assert json.loads(plugin["configuration"]["value"]) == POLICY
        assert plugin["vm_config"]["code"]["local"]["filename"] == str(wasm)
        assert plugin["failure_policy"] == "FAIL_CLOSED"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert "client=%FILTER_STATE(wasm.trustip.client_ip:PLAIN)%" in hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    # The listener logs every connection, also one the network role closed.
    (connection_log,) = listener["access_log"]
    assert "reason=%FILTER_STATE(wasm.trustip.reason:PLAIN)%" in connection_log["typed_config"]["log_format"]["text_format_source"]["inline_string"]


def test_rendered_bootstrap_serves_traffic(rendered, echo):
    strict, instance, port, _ = rendered
    # The load balancer with PROXY v2: the client is the PROXY source.
    response = client.request(port, [("x-forwarded-for", "6.6.6.6")], source=LB, proxy=client.proxy_v2("203.0.113.7", "10.0.0.1", 5555, 80))
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == "203.0.113.7"
    assert response.upstream_header("x-forwarded-for") == "203.0.113.7"
    # A PrivateLink-style peer whose endpoint id is allowed; the TLV becomes a header.
    response = client.request(
        port, source="127.0.0.9", proxy=client.proxy_v2("203.0.113.8", "10.0.0.1", 5555, 80, tlvs=[client.aws_vpce_tlv(VPCE)])
    )
    assert response.status == 200, response
    assert response.upstream_header("x-amzn-vpce-id") == VPCE
    # An attacker claiming an address: closed by the network role.
    response = client.request(port, source=ATTACKER, proxy=client.proxy_v1("203.0.113.9", "10.0.0.1", 5555, 80))
    assert response.closed, response
    # A direct client without PROXY: served as itself, unless the listener is strict.
    response = client.request(port, [("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6")], source=ATTACKER)
    if strict:
        assert response.closed, response
    else:
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == ATTACKER
        assert response.upstream_header("x-forwarded-for") == ATTACKER
        assert response.upstream_header("x-real-ip") is None
    # The load balancer without PROXY: require fails closed.
    assert client.request(port, source=LB).closed


def test_rendered_bootstrap_drops_underscored_look_alikes(rendered):
    """x_real_ip / x_forwarded_for / true_client_ip: many frameworks read them as X-Real-IP and
    X-Forwarded-For (CGI maps both spellings to one variable). The HCM drops them
    (headers_with_underscores_action: DROP_HEADER) before trustip or the upstream sees them."""
    strict, instance, port, _ = rendered
    look_alikes = [("x_real_ip", "6.6.6.6"), ("x_forwarded_for", "6.6.6.6"), ("true_client_ip", "6.6.6.6"), ("X_Real_IP", "6.6.6.7")]
    response = client.request(port, look_alikes, source=LB, proxy=client.proxy_v2("203.0.113.7", "10.0.0.1", 5555, 80))
    assert response.status == 200, response
    received = response.json()["headers"]
    assert not [name for name, _ in received if "_" in name], received
    assert response.upstream_header("x-forwarded-for") == "203.0.113.7"
    # Counted by the HTTP/1 codec.
    assert instance.stats("dropped_headers_with_underscores").get("http1.dropped_headers_with_underscores", 0) >= 4


def test_rendered_bootstrap_logs_closed_connections(rendered):
    """The listener access log: a connection the network role closed still gets a line, with
    the reason."""
    strict, instance, port, _ = rendered
    response = client.request(port, source=ATTACKER, proxy=client.proxy_v2("203.0.113.9", "10.0.0.1", 5555, 80))
    assert response.closed, response
    needle = f"connection direct_peer={ATTACKER}:{response.local_port} "
    import time

    deadline = time.monotonic() + 5
    while not (lines := [line for line in instance.stderr_path.read_text(errors="replace").splitlines() if needle in line]):
        assert time.monotonic() < deadline, instance.output_text()
        time.sleep(0.05)
    assert " client=- reason=untrusted_proxy " in lines[0], lines


# Every placeholder the text templates used to substitute, where a policy can carry text.
PLACEHOLDER_POLICY = {
    "direct_peer": {"filter_state": "WASM_PATH"},
    "rules": [
        {"from": [f"{LB}/32"], "proxy_protocol": "require"},
        {"from": ["127.0.0.9/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["POLICY_JSON", "UPSTREAM_HOST", "ACCESS_LOG", "DIRECT_PEER_KEY", 'q"\\é\u2028: #x']}},
    ],
    "headers": {"tlv": {"aws_vpce_id": "x-amzn-vpce-id"}},
}


def test_policy_spelled_like_placeholders(cli, echo, wasm):  # noqa: F811
    """A policy whose text looks like the old templates' placeholders (WASM_PATH, POLICY_JSON,
    ...) or YAML syntax: the YAML still parses, the policy JSON is embedded byte for byte, and
    Envoy runs it."""
    directory = scratch_dir("placeholders")
    policy = write_policy(directory, "policy", PLACEHOLDER_POLICY)
    text, port = render_envoy(cli, policy, echo.port, wasm=wasm)
    config = yaml.safe_load(text)
    (listener,) = config["static_resources"]["listeners"]
    filters = listener["filter_chains"][0]["filters"]
    # The policy as `trustip` compacts it (serde_json: keys sorted, no spaces, UTF-8 as is).
    compact = json.dumps(PLACEHOLDER_POLICY, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    network = filters[1]["typed_config"]["config"]
    http = filters[2]["typed_config"]["http_filters"][0]["typed_config"]["config"]
    for plugin in (network, http):
        assert plugin["configuration"]["value"] == compact
        assert plugin["vm_config"]["code"]["local"]["filename"] == str(wasm)
    assert filters[0]["typed_config"]["on_new_connection"][0]["object_key"] == "WASM_PATH"
    instance = RenderedEnvoy(text, name="render-placeholders")
    check = envoy_validate(instance.config_path)
    assert check.returncode == 0, check.stdout + check.stderr
    instance.start()
    try:
        response = client.request(port, source=LB, proxy=client.proxy_v2("203.0.113.7", "10.0.0.1", 5555, 80))
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == "203.0.113.7"
    finally:
        instance.stop()


def test_rendered_bootstrap_access_log(rendered):
    strict, instance, port, _ = rendered
    response = client.request(port, source=LB, proxy=client.proxy_v2("203.0.113.77", "10.0.0.1", 5555, 80), path="/logged")
    assert response.status == 200, response
    import time

    deadline = time.monotonic() + 5
    while "GET /logged" not in instance.stderr_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, instance.output_text()
        time.sleep(0.05)
    line = next(line for line in instance.stderr_path.read_text().splitlines() if "GET /logged" in line)
    assert "client=203.0.113.77 reason=proxy" in line, line
    assert f"direct_peer={LB}:" in line, line


# --- envoy, native build ----------------------------------------------------------------

CDN = "198.51.100.7"
CLIENT = "203.0.113.7"
NATIVE_POLICY = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}],
    "xff": {"trusted": ["198.51.100.0/24"]},
    "headers": {"set": ["x-envoy-external-address", "x-real-ip"]},
}
LISTENER_MODULE = "type.googleapis.com/envoy.extensions.filters.listener.dynamic_modules.v3.DynamicModuleListenerFilter"
HTTP_MODULE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"


@pytest.fixture(scope="module")
def rendered_native(cli, echo, native):  # noqa: F811
    policy = write_policy(scratch_dir("render-native"), "policy", NATIVE_POLICY)
    text, port = render_envoy(cli, policy, echo.port, native=native)
    instance = RenderedEnvoy(text, name="render-native")
    check = envoy_validate(instance.config_path)
    assert check.returncode == 0, check.stdout + check.stderr
    instance.start()
    yield instance, port, text
    instance.stop()


def _log_format(logger: dict) -> str:
    return logger["typed_config"]["log_format"]["text_format_source"]["inline_string"]


def test_rendered_native_bootstrap_shape(rendered_native, native):  # noqa: F811
    instance, port, text = rendered_native
    config = yaml.safe_load(text)
    (listener,) = config["static_resources"]["listeners"]
    pp, trustip_listener = listener["listener_filters"]
    assert pp["name"] == "envoy.filters.listener.proxy_protocol"
    assert pp["typed_config"]["allow_requests_without_proxy_protocol"] is True
    assert trustip_listener["name"] == "envoy.filters.listener.dynamic_modules"
    # No set_filter_state and no network filter: the listener filter reads D and P natively.
    (hcm_filter,) = listener["filter_chains"][0]["filters"]
    assert hcm_filter["name"] == "envoy.filters.network.http_connection_manager"
    hcm = hcm_filter["typed_config"]
    assert hcm["use_remote_address"] is True and hcm["skip_xff_append"] is True
    assert hcm["common_http_protocol_options"] == {"headers_with_underscores_action": "DROP_HEADER"}
    trustip_http, router = hcm["http_filters"]
    assert trustip_http["name"] == "envoy.filters.http.dynamic_modules"
    assert router["name"] == "envoy.filters.http.router"
    for f, type_url, filter_name in (
        (trustip_listener, LISTENER_MODULE, "trustip-listener"),
        (trustip_http, HTTP_MODULE, "trustip-http"),
    ):
        typed = f["typed_config"]
        assert typed["@type"] == type_url
        assert typed["filter_name"] == filter_name
        assert typed["dynamic_module_config"] == {"module": {"local": {"filename": str(native)}}, "metrics_namespace": "trustip"}
        assert typed["filter_config"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
        assert json.loads(typed["filter_config"]["value"]) == NATIVE_POLICY
    # The native filter-state keys: the HTTP filter's for requests, the listener's per connection.
    request_format = _log_format(hcm["access_log"][0])
    assert "client=%FILTER_STATE(trustip.client_ip:PLAIN)% reason=%FILTER_STATE(trustip.reason:PLAIN)%" in request_format
    (connection_log,) = listener["access_log"]
    connection_format = _log_format(connection_log)
    assert "client=%FILTER_STATE(trustip.connection.client_ip:PLAIN)% reason=%FILTER_STATE(trustip.connection.reason:PLAIN)%" in connection_format
    assert "wasm" not in text.split("\nadmin:", 1)[1]
    # Comments say what each piece does.
    header = text.split("\nadmin:", 1)[0]
    for piece in ("proxy_protocol", "trustip-listener", "use_remote_address", "skip_xff_append", "trustip-http"):
        assert piece in header, header


def _wait_line(instance: RenderedEnvoy, needle: str) -> str:
    import time

    deadline = time.monotonic() + 5
    while not (lines := [line for line in instance.stderr_path.read_text(errors="replace").splitlines() if needle in line]):
        assert time.monotonic() < deadline, instance.output_text()
        time.sleep(0.05)
    return lines[0]


def test_rendered_native_bootstrap_serves_traffic(rendered_native, echo):
    instance, port, _ = rendered_native
    # The load balancer with PROXY v2 claiming a client: the client, in Envoy's and trustip's headers.
    response = client.request(
        port, [("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6")], source=LB,
        proxy=client.proxy_v2(CLIENT, "10.0.0.1", 5555, 80), path="/native-lb",
    )  # fmt: skip
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == CLIENT
    assert response.upstream_header("x-forwarded-for") == CLIENT
    assert response.upstream_header("x-real-ip") == CLIENT
    line = _wait_line(instance, "GET /native-lb")
    assert f"source={CLIENT}:" in line and f"client={CLIENT} reason=proxy" in line, line
    # An attacker with a PROXY header: closed by the listener filter, not one byte back.
    attacker = client.request(port, source=ATTACKER, proxy=client.proxy_v2("203.0.113.9", "10.0.0.1", 5555, 80))
    assert attacker.closed and attacker.raw == b"", attacker
    assert echo.find(attacker.test_id) is None
    # The listener access log still has its line (the module's log line gives the reason).
    line = _wait_line(instance, f"connection direct_peer={ATTACKER}:{attacker.local_port} ")
    assert " client=- " in line and "bytes_received=0" in line, line
    instance.wait_for_log(f"reject untrusted_proxy: direct_peer={ATTACKER}:{attacker.local_port}")
    # The load balancer's PROXY header names a CDN edge (xff.trusted): the walk finds the client.
    walked = client.request(
        port, [("x-forwarded-for", f"6.6.6.6, {CLIENT}")], source=LB, proxy=client.proxy_v2(CDN, "10.0.0.1", 5555, 80), path="/native-cdn"
    )
    assert walked.status == 200, walked
    assert walked.upstream_header("x-envoy-external-address") == CLIENT
    assert walked.upstream_header("x-forwarded-for") == f"{CLIENT}, {CDN}"
    assert "client=" + CLIENT + " reason=xff" in _wait_line(instance, "GET /native-cdn")
    # A direct client without PROXY: served as itself; the load balancer without PROXY: closed.
    direct = client.request(port, [("x-forwarded-for", "6.6.6.6")], source=ATTACKER)
    assert direct.status == 200 and direct.upstream_header("x-envoy-external-address") == ATTACKER, direct
    assert client.request(port, source=LB).closed
    counters = {name.rsplit("trustip.", 1)[-1]: value for name, value in instance.stats("trustip.listener").items()}
    assert counters.get("listener.reject_untrusted_proxy", 0) >= 1, counters


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--target", "istio", "--build", "native"], "WasmPlugin loads wasm"),
        (["--target", "compose", "--build", "native", "--out", "OUT"], "compose stack runs the wasm build"),
        (["--target", "envoy", "--build", "native", "--wasm", "x.wasm"], "--module PATH"),
        (["--target", "envoy", "--module", "x.so"], "--module is for --build native"),
        (["--target", "envoy", "--build", "native", "--image", "oci://x/y:1"], "--image"),
    ],
    ids=["native-istio", "native-compose", "native-with-wasm", "module-with-wasm-build", "native-with-image"],
)
def test_render_build_usage_errors(cli, policy_path, args, needle):  # noqa: F811
    run = cli.run("render", "--config", policy_path, *args, expect=2)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trustip: ") and needle in lines[0], run
    assert run.out == "", run


def test_render_native_default_module(cli, policy_path):  # noqa: F811
    """Without --module the native bootstrap loads the release build's output."""
    config = yaml.safe_load(cli.run("render", "--config", policy_path, "--target", "envoy", "--build", "native").out)
    (listener,) = config["static_resources"]["listeners"]
    module = listener["listener_filters"][1]["typed_config"]["dynamic_module_config"]["module"]
    assert module == {"local": {"filename": "target/release/libtrustip.so"}}


# --- compose ----------------------------------------------------------------------------

SHIPPED_FILES = ["docker-compose.yml", "envoy.yaml", "haproxy.cfg", "policy.json"]
SHIPPED_WASM = "../../target/trustip.wasm"
COMPOSE_LB = "172.28.0.10"


def test_shipped_stack_is_what_render_prints(cli):  # noqa: F811
    """deploy/compose/ cannot drift: rendering its policy again gives the same files."""
    out = scratch_dir("compose-again")
    cli.run("render", "--config", DEPLOY_COMPOSE / "policy.json", "--target", "compose", "--out", out, "--wasm", SHIPPED_WASM)
    for name in SHIPPED_FILES:
        assert filecmp.cmp(DEPLOY_COMPOSE / name, out / name, shallow=False), (
            f"deploy/compose/{name} differs from a fresh render: regenerate with\n"
            f"  trustip render --config deploy/compose/policy.json --target compose --out deploy/compose --wasm {SHIPPED_WASM}"
        )
    assert (DEPLOY_COMPOSE / "README.md").is_file()


def test_shipped_policy_trusts_the_load_balancer():
    policy = json.loads((DEPLOY_COMPOSE / "policy.json").read_text())
    assert policy["rules"][0] == {"from": [f"{COMPOSE_LB}/32"], "proxy_protocol": "require"}


def test_compose_structure():
    compose = yaml.safe_load((DEPLOY_COMPOSE / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"httpbin", "envoy", "haproxy"}
    assert services["envoy"]["image"] == "envoyproxy/envoy:v1.40-latest"
    assert services["haproxy"]["image"].split(":")[0] == "haproxy"
    assert services["httpbin"]["image"].split(":")[0] == "mccutchen/go-httpbin"

    envoy_mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in services["envoy"]["volumes"]}
    assert envoy_mounts["/etc/envoy/envoy.yaml"] == "./envoy.yaml"
    assert envoy_mounts["/etc/trustip/trustip.wasm"] == SHIPPED_WASM
    # The wasm path on the host is relative to deploy/compose/: it must reach the build output.
    assert (DEPLOY_COMPOSE / SHIPPED_WASM).resolve() == (DEPLOY_COMPOSE / "../../target/trustip.wasm").resolve()
    assert "/etc/envoy/envoy.yaml" in services["envoy"]["command"]
    haproxy_mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in services["haproxy"]["volumes"]}
    assert haproxy_mounts["/usr/local/etc/haproxy/haproxy.cfg"] == "./haproxy.cfg"

    # The policy trusts the load balancer's fixed address on the stack's network.
    assert services["haproxy"]["networks"]["trustip"]["ipv4_address"] == COMPOSE_LB
    assert compose["networks"]["trustip"]["ipam"]["config"][0]["subnet"] == "172.28.0.0/24"

    haproxy_cfg = (DEPLOY_COMPOSE / "haproxy.cfg").read_text()
    server = next(line for line in haproxy_cfg.splitlines() if line.strip().startswith("server "))
    assert "envoy:10000" in server and "send-proxy-v2" in server, server

    envoy_cfg = yaml.safe_load((DEPLOY_COMPOSE / "envoy.yaml").read_text())
    listener = envoy_cfg["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 10000
    cluster = envoy_cfg["static_resources"]["clusters"][0]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (endpoint["address"], endpoint["port_value"]) == ("httpbin", 8080)
    plugin = listener["filter_chains"][0]["filters"][1]["typed_config"]["config"]
    assert plugin["vm_config"]["code"]["local"]["filename"] == "/etc/trustip/trustip.wasm"
    assert json.loads(plugin["configuration"]["value"]) == json.loads((DEPLOY_COMPOSE / "policy.json").read_text())


def _substitute(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        assert old in text, f"{old!r} not in the rendered file: update the test's substitutions"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def native_stack(echo, wasm):
    """The shipped envoy.yaml and haproxy.cfg, run natively. Only addresses and paths change:
    container addresses -> loopback ports, the container's wasm path -> the built wasm, and the
    load balancer's address 172.28.0.10 -> 127.0.0.1 (where HAProxy connects from here)."""
    envoy_port, admin_port = net.free_port(), net.free_port()
    lb_ip = "127.0.0.7"
    lb_port = net.free_port(lb_ip)
    config = localize(
        yaml.safe_load((DEPLOY_COMPOSE / "envoy.yaml").read_text()),
        addresses={
            ("0.0.0.0", 10000): ("127.0.0.1", envoy_port),
            ("0.0.0.0", 9901): ("127.0.0.1", admin_port),
            ("httpbin", 8080): ("127.0.0.1", echo.port),
        },
        wasm=wasm,
        policy_text=[(COMPOSE_LB, "127.0.0.1")],
    )
    envoy_text = json.dumps(config, indent=2)
    haproxy_text = _substitute(
        (DEPLOY_COMPOSE / "haproxy.cfg").read_text(),
        [("bind :8000", f"bind {lb_ip}:{lb_port}"), ("envoy:10000", f"127.0.0.1:{envoy_port}")],
    )
    envoy = RenderedEnvoy(envoy_text, name="compose-envoy")
    assert envoy_validate(envoy.config_path).returncode == 0
    envoy.start()
    haproxy = HAProxyFromConfig(haproxy_text, bind_ip=lb_ip, port=lb_port)
    try:
        haproxy.start()
        yield envoy, envoy_port, haproxy
    finally:
        haproxy.stop()
        envoy.stop()


def test_compose_configs_run_natively(native_stack):
    envoy, envoy_port, haproxy = native_stack
    # Through the load balancer: the upstream sees the client, not HAProxy, and no spoofed XFF.
    response = client.request(haproxy.port, [("x-forwarded-for", "6.6.6.6")], source=ATTACKER, dest=haproxy.bind_ip, path="/headers")
    assert response.status == 200, (response, haproxy.output_text())
    assert response.upstream_header("x-envoy-external-address") == ATTACKER
    assert response.upstream_header("x-forwarded-for") == ATTACKER
    # Straight to Envoy, claiming an address: refused.
    claim = client.request(envoy_port, source=ATTACKER, proxy=client.proxy_v2("203.0.113.5", "10.0.0.1", 1, 80))
    assert claim.closed, claim
    # Straight to Envoy without PROXY: a direct client, served as itself.
    direct = client.request(envoy_port, source=ATTACKER)
    assert direct.status == 200 and direct.upstream_header("x-envoy-external-address") == ATTACKER


def test_probe_the_native_compose_envoy(native_stack, cli):  # noqa: F811
    envoy, envoy_port, _ = native_stack
    # From a stranger's address: PROXY refused, forged X-Forwarded-For replaced.
    report = cli.probe(envoy_port, "127.0.0.1", "--bind", ATTACKER, expect=0).json()
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("optional_proxy", False, False)
    # From the load balancer's address (127.0.0.1 here): PROXY is required of it, and believed.
    report = cli.probe(envoy_port, "127.0.0.1", "--bind", "127.0.0.1", expect=3).json()
    assert (report["listener"], report["proxy_spoofable"]) == ("requires_proxy", True)


def test_compose_render_wasm_default_and_note(cli):  # noqa: F811
    """Without --wasm the stack mounts the default build output; a policy that does not name the
    load balancer gets a note on stderr (the stack would reject its PROXY headers)."""
    directory = scratch_dir("compose-note")
    policy = write_policy(directory, "empty", {})
    run = cli.run("render", "--config", policy, "--target", "compose", "--out", directory / "out")
    assert COMPOSE_LB in run.err and "note" in run.err, run
    compose = yaml.safe_load((directory / "out" / "docker-compose.yml").read_text())
    wasm_mount = [v for v in compose["services"]["envoy"]["volumes"] if "/etc/trustip/trustip.wasm" in v]
    assert wasm_mount and wasm_mount[0].split(":")[0].endswith("target/trustip.wasm")


def test_istio_sha256_is_the_module_digest(cli, policy_path, wasm):  # noqa: F811
    out = cli.run("render", "--config", policy_path, "--target", "istio", "--wasm", wasm).out
    digest = hashlib.sha256(wasm.read_bytes()).hexdigest()
    documents = [doc for doc in yaml.safe_load_all(out) if doc]
    assert [doc["spec"].get("sha256") for doc in documents] == [digest, digest, None]


# --- issue 9: a health-check-ready gateway, outbound PROXY, TLS passthrough ---------------
#
# One rendered gateway per build with every new option: --health-check-path (Envoy's
# health_check filter after trustip's HTTP filter), --upstream-proxy v2 --upstream-tlvs
# aws_vpce_id (every cluster writes PROXY v2 to a backend that parses it), --tls-passthrough
# (a second listener routing by SNI to a TLS backend, through the same outbound PROXY socket).

HEALTH = "/healthz/ready"
SNI = "api.trustip.test"
IGNORED_PEER = "127.0.0.9"
GATEWAY_POLICY = {
    "upstream_proxy_protocol": True,
    "rules": [
        {"from": [f"{LB}/32"], "proxy_protocol": "require", "health_check_paths": [HEALTH]},
        {"from": [f"{IGNORED_PEER}/32"], "proxy_protocol": "ignore"},
    ],
    "headers": {"tlv": {"aws_vpce_id": "x-amzn-vpce-id"}},
}
LOCAL = client.proxy_v2(command="LOCAL")


def _self_signed(directory, name: str):
    import subprocess

    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _tls_get(port: int, server_name: str, ca, *, source: str, proxy: bytes = b"") -> tuple[int | None, str]:
    """GET / inside TLS (SNI `server_name`, verified against `ca`) after `proxy` in clear:
    (status, test id); status None when the connection was closed or the handshake failed."""
    import socket
    import ssl
    import uuid

    test_id = uuid.uuid4().hex
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(5)
    raw.bind((source, 0))
    try:
        raw.connect(("127.0.0.1", port))
        raw.sendall(proxy)
        with ssl.create_default_context(cafile=str(ca)).wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nhost: {server_name}\r\nx-test-id: {test_id}\r\nconnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None), test_id
    except (OSError, ssl.SSLError):
        return None, test_id
    finally:
        raw.close()


@pytest.fixture(scope="module", params=["wasm", "native"])
def gateway(request, cli, wasm, native):  # noqa: F811
    from harness.proxy_backend import ProxyBackend, server_context

    build = request.param
    directory = scratch_dir(f"render-gateway-{build}")
    policy = write_policy(directory, "policy", GATEWAY_POLICY)
    cert, key = _self_signed(directory, SNI)
    backend = ProxyBackend().start()
    tls_backend = ProxyBackend(tls=server_context(str(cert), str(key))).start()
    tls_port = net.free_port()
    text, port = render_envoy(
        cli, policy, backend.port,
        "--health-check-path", HEALTH, "--upstream-proxy", "v2", "--upstream-tlvs", "aws_vpce_id",
        "--tls-passthrough", f"{SNI}=127.0.0.1:{tls_backend.port}", "--tls-listen", f"127.0.0.1:{tls_port}",
        **({"native": native} if build == "native" else {"wasm": wasm}),
    )  # fmt: skip
    instance = RenderedEnvoy(text, name=f"render-gateway-{build}")
    check = envoy_validate(instance.config_path)
    assert check.returncode == 0, check.stdout + check.stderr
    instance.start()
    yield build, instance, port, tls_port, backend, tls_backend, cert, text
    instance.stop()
    backend.stop()
    tls_backend.stop()


def test_gateway_shape(gateway):
    build, instance, port, tls_port, backend, tls_backend, cert, text = gateway
    config = yaml.safe_load(text)
    http, tls = config["static_resources"]["listeners"]
    hcm = http["filter_chains"][0]["filters"][-1]["typed_config"]
    # trustip's HTTP filter, then the health check, then the router.
    assert [f["name"] for f in hcm["http_filters"]][1:] == ["envoy.filters.http.health_check", "envoy.filters.http.router"]
    health = hcm["http_filters"][1]["typed_config"]
    assert health["pass_through_mode"] is False
    # The path with any query, as trustip compares it.
    assert health["headers"] == [{"name": ":path", "string_match": {"safe_regex": {"regex": HEALTH + r"(\?.*)?"}}}]
    for listener in (http, tls):
        pp = listener["listener_filters"][0]["typed_config"]
        assert pp["pass_through_tlvs"] == {"match_type": "INCLUDE", "tlv_type": [234]}
    assert [f["name"] for f in tls["listener_filters"]][-1] == "envoy.filters.listener.tls_inspector"
    (chain,) = tls["filter_chains"]
    assert chain["filter_chain_match"] == {"server_names": [SNI]}
    assert chain["filters"][-1]["name"] == "envoy.filters.network.tcp_proxy"
    for cluster in config["static_resources"]["clusters"]:
        socket = cluster["transport_socket"]
        assert socket["name"] == "envoy.transport_sockets.upstream_proxy_protocol"
        assert socket["typed_config"]["config"] == {"version": "V2", "pass_through_tlvs": {"match_type": "INCLUDE", "tlv_type": [234]}}
    # The policy is embedded as given (render does not change it).
    policies = [json.loads(f["typed_config"]["filter_config"]["value"]) for f in http["listener_filters"][1:]] if build == "native" else [
        json.loads(http["filter_chains"][0]["filters"][1]["typed_config"]["config"]["configuration"]["value"])
    ]
    assert policies == [GATEWAY_POLICY]


def test_gateway_answers_the_load_balancers_health_check(gateway):
    build, instance, port, tls_port, backend, tls_backend, cert, text = gateway
    before = backend.count
    # The load balancer's health check: PROXY v2 LOCAL (or v1 UNKNOWN, or none), answered by Envoy.
    # With a query too: trustip ignores it, and so does the rendered health_check filter's match.
    for proxy, path in ((LOCAL, HEALTH), (client.proxy_v1_unknown(), HEALTH), (b"", HEALTH), (LOCAL, HEALTH + "?full=1")):
        response = client.request(port, source=LB, proxy=proxy, path=path)
        assert response.status == 200, (proxy, path, response)
        assert response.header("x-trustip-reject") is None
    # Another path on such a connection: trustip's HTTP filter refuses it.
    other = client.request(port, source=LB, proxy=LOCAL, path="/admin")
    assert (other.status, other.header("x-trustip-reject")) == (403, "missing_proxy"), other
    assert backend.count == before, "Envoy answered the health checks itself"
    # Failing (as while draining): the same health check gets 503 from Envoy.
    instance.admin("/healthcheck/fail", method="POST")
    try:
        assert client.request(port, source=LB, proxy=LOCAL, path=HEALTH).status == 503
    finally:
        instance.admin("/healthcheck/ok", method="POST")
    assert client.request(port, source=LB, proxy=LOCAL, path=HEALTH).status == 200


def test_gateway_sends_the_client_upstream(gateway):
    build, instance, port, tls_port, backend, tls_backend, cert, text = gateway
    # Through the load balancer, with the endpoint id: the backend's PROXY v2 header carries the
    # client and the TLV.
    response = client.request(port, source=LB, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 5555, 80, tlvs=[client.aws_vpce_tlv(VPCE)]))
    assert response.status == 200, response
    header = backend.wait_for(response.test_id).header
    assert (header.kind, header.command, header.src, header.src_port) == ("v2", "PROXY", CLIENT, 5555)
    assert header.tlv(0xEA) == b"\x01" + VPCE.encode()
    # A direct client without PROXY: itself.
    direct = client.request(port, source=ATTACKER)
    assert direct.status == 200, direct
    header = backend.wait_for(direct.test_id).header
    assert (header.src, header.tlvs) == (ATTACKER, [])
    # An ignore rule's PROXY header is not forwardable: closed, nothing reaches the backend.
    ignored = client.request(port, source=IGNORED_PEER, proxy=client.proxy_v2("203.0.113.66", "10.0.0.1", 5555, 80))
    assert ignored.closed, ignored
    assert backend.find(ignored.test_id) is None


def test_gateway_passes_tls_through_by_sni(gateway):
    build, instance, port, tls_port, backend, tls_backend, cert, text = gateway
    # Through the load balancer: the TLS backend gets PROXY v2 with the client, then the
    # handshake for the name (Envoy never held the key).
    status, test_id = _tls_get(tls_port, SNI, cert, source=LB, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 4444, 443))
    assert status == 200, tls_backend.connections
    record = tls_backend.wait_for(test_id)
    assert (record.tls, record.server_name) == (True, SNI)
    assert (record.header.kind, record.header.src, record.header.src_port) == ("v2", CLIENT, 4444)
    # A name no route lists: no filter chain, closed.
    count = tls_backend.count
    assert _tls_get(tls_port, "other.trustip.test", cert, source=LB, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 4444, 443))[0] is None
    # A PROXY header from a stranger: trustip closes it before the ClientHello is read.
    assert _tls_get(tls_port, SNI, cert, source=ATTACKER, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 4444, 443))[0] is None
    assert tls_backend.count == count


@pytest.mark.parametrize("which", ["wasm", "native"])
@pytest.mark.parametrize(
    "extra",
    [
        ["--health-check-path", HEALTH],
        ["--upstream-proxy", "v1"],
        ["--upstream-proxy", "v2", "--upstream-tlvs", "aws_vpce_id,unique_id"],
        ["--tls-passthrough", f"{SNI}=127.0.0.1:8443", "--tls-passthrough", "*.trustip.test=backend.internal:443"],
        ["--tls-passthrough", f"{SNI}=127.0.0.1:8443", "--upstream-proxy", "v2", "--strict-proxy"],
    ],
    ids=["health-check", "upstream-v1", "upstream-v2-tlvs", "tls-passthrough", "tls-upstream-strict"],
)
def test_each_option_validates(cli, wasm, native, which, extra):  # noqa: F811
    """Every new option, alone, in both builds: `envoy --mode validate` accepts the bootstrap."""
    policy = dict(GATEWAY_POLICY)
    if "--upstream-proxy" not in extra:
        policy.pop("upstream_proxy_protocol")
    path = write_policy(scratch_dir("render-option"), "policy", policy)
    module = ["--build", "native", "--module", native] if which == "native" else ["--wasm", wasm]
    run = cli.run("render", "--config", path, "--target", "envoy", *module, *extra)
    config_path = scratch_dir("render-option-yaml") / "envoy.yaml"
    config_path.write_text(run.out)
    check = envoy_validate(config_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_compose_health_check_path(cli):  # noqa: F811
    """compose takes --health-check-path: its envoy.yaml answers the path."""
    directory = scratch_dir("compose-health")
    policy = dict(json.loads((DEPLOY_COMPOSE / "policy.json").read_text()))
    policy["rules"] = [dict(policy["rules"][0], health_check_paths=[HEALTH])]
    path = write_policy(directory, "policy", policy)
    cli.run("render", "--config", path, "--target", "compose", "--out", directory / "out", "--health-check-path", HEALTH)
    envoy = yaml.safe_load((directory / "out" / "envoy.yaml").read_text())
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][-1]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]][1:] == ["envoy.filters.http.health_check", "envoy.filters.http.router"]


@pytest.mark.parametrize(
    "policy,args,needle",
    [
        ({"rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}]}, ["--target", "envoy", "--health-check-path", HEALTH],
         f'add "health_check_paths": ["{HEALTH}"] to the load balancer\'s require rule (rules[0])'),
        ({}, ["--target", "envoy", "--upstream-proxy", "v2"], 'add "upstream_proxy_protocol": true'),
        ({"upstream_proxy_protocol": True}, ["--target", "envoy"], "give --upstream-proxy v1|v2"),
        ({"upstream_proxy_protocol": True}, ["--target", "envoy", "--upstream-proxy", "v1", "--upstream-tlvs", "aws_vpce_id"], "needs --upstream-proxy v2"),
        ({"upstream_proxy_protocol": True}, ["--target", "envoy", "--upstream-proxy", "v2", "--upstream-tlvs", "vpce"], "expected TLV keys among"),
        ({}, ["--target", "envoy", "--tls-passthrough", "nope"], "expected SNI=HOST:PORT"),
        ({}, ["--target", "envoy", "--tls-listen", "127.0.0.1:443"], "give at least one --tls-passthrough"),
        ({}, ["--target", "envoy", "--health-check-path", "/a?b"], "without spaces, query or fragment"),
        ({}, ["--target", "istio", "--health-check-path", HEALTH], "status port 15021"),
        ({}, ["--target", "istio", "--tls-passthrough", f"{SNI}=127.0.0.1:1"], "PASSTHROUGH"),
        ({}, ["--target", "compose", "--out", "OUT", "--upstream-proxy", "v2"], "httpbin"),
        ({"upstream_proxy_protocol": True}, ["--target", "compose", "--out", "OUT"], "httpbin"),
        ({}, ["--target", "envoy", "--tls-passthrough", f"{SNI}=127.0.0.1:1", "--tls-listen", "127.0.0.1:10000"],
         "the same address and port as --listen"),
        ({}, ["--target", "envoy", "--tls-passthrough", f"{SNI}=127.0.0.1:1", "--tls-listen", "127.0.0.1:9901"],
         "the same address and port as --admin"),
    ],
    ids=["health-path-not-in-policy", "upstream-without-field", "field-without-upstream", "tlvs-with-v1", "unknown-tlv",
         "bad-passthrough", "tls-listen-alone", "health-path-query", "istio-health", "istio-tls", "compose-upstream", "compose-field",
         "tls-listen-is-listen", "tls-listen-is-admin"],
)  # fmt: skip
def test_gateway_option_usage_errors(cli, policy, args, needle):  # noqa: F811
    path = write_policy(scratch_dir("render-usage"), "policy", policy)
    run = cli.run("render", "--config", path, *args, expect=2)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trustip: ") and needle in lines[0], run
    assert run.out == "", run


SOURCES_POLICY = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}],
    "xff": {"trusted": ["173.245.48.0/20"], "trusted_hops": 1},
    "client_header": {"name": "cf-connecting-ip", "trusted": ["198.51.100.0/24"]},
}


@pytest.mark.parametrize("which", ["wasm", "native"])
def test_rendered_policy_with_the_other_client_sources(cli, echo, wasm, native, which):  # noqa: F811
    """A policy with a hop count and a CDN's client header, rendered for each build and run as
    printed: the load balancer hands over a CDN edge (PROXY); the edge's X-Forwarded-For is
    believed for one hop, which reaches a second CDN's edge, whose client header names the client.
    `explain` says the same for the same inputs."""
    directory = scratch_dir(f"render-sources-{which}")
    path = write_policy(directory, "policy", SOURCES_POLICY)
    text, port = render_envoy(cli, path, echo.port, wasm=wasm, native=native if which == "native" else None)
    instance = RenderedEnvoy(text, name=f"render-sources-{which}")
    instance.start()
    try:
        headers = [("x-forwarded-for", "6.6.6.6, 198.51.100.20"), ("cf-connecting-ip", "203.0.113.9")]
        response = client.request(port, headers, source=LB, proxy=client.proxy_v2("173.245.48.7", "10.0.0.1", 5555, 80))
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == "203.0.113.9"
        assert response.upstream_header("cf-connecting-ip") == "203.0.113.9"
        assert response.upstream_header("x-forwarded-for") == "203.0.113.9, 198.51.100.20, 173.245.48.7"
        # The same header from a client the load balancer carries directly: removed, not believed.
        response = client.request(port, [("cf-connecting-ip", "203.0.113.9")], source=LB, proxy=client.proxy_v2("192.0.2.44", "10.0.0.1", 5555, 80))
        assert response.upstream_header("x-envoy-external-address") == "192.0.2.44"
        assert response.upstream_header("cf-connecting-ip") is None
    finally:
        instance.stop()
    said = cli.run(
        "explain", "--config", path, "--peer", LB, "--proxy", "173.245.48.7:5555", "--json",
        "--header", "x-forwarded-for: 6.6.6.6, 198.51.100.20", "--header", "cf-connecting-ip: 203.0.113.9",
    ).json()  # fmt: skip
    assert (said["reason"], said["client_ip"]) == ("client_header", "203.0.113.9"), said
