"""Bad configurations are refused with the field named (issue 2, "Observability and errors"):
`on_configure` returns false with one log line naming the path and the value, so Envoy refuses
the plugin; with a static config Envoy exits non-zero."""

from __future__ import annotations

import json

import pytest

from harness import client
from harness.envoy import EnvoyWithListeners, Listener

GOOD_RULE = {"from": ["10.0.0.0/8"], "proxy_protocol": "require"}

BAD = [
    # (plugin configuration, strings the refusal must name)
    pytest.param({"rules": [{"from": ["10.0.0.0/33"], "proxy_protocol": "require"}]}, ["rules[0].from[0]", "10.0.0.0/33"], id="prefix-33"),
    pytest.param({"rules": [{"from": ["10.0.0.0/8"], "proxy_protocol": "maybe"}]}, ["rules[0].proxy_protocol", "maybe"], id="unknown-word"),
    pytest.param({"rules": [GOOD_RULE, {"from": ["10.0.0.0/8", "fe80::/129"], "proxy_protocol": "use"}]}, ["rules[1].from[1]", "fe80::/129"], id="ipv6-prefix"),
    pytest.param({"rules": [{"from": ["not-an-ip"], "proxy_protocol": "use"}]}, ["rules[0].from[0]", "not-an-ip"], id="not-an-ip"),
    pytest.param({"rulez": []}, ["rulez"], id="unknown-field"),
    pytest.param({"rules": [{**GOOD_RULE, "form": ["10.0.0.0/8"]}]}, ["form"], id="unknown-field-in-rule"),
    pytest.param({"xff": {"trusted": ["10.0.0.0/8", "bogus"]}}, ["xff.trusted[1]", "bogus"], id="xff-trusted"),
    pytest.param({"headers": {"x_forwarded_for": "sometimes"}}, ["headers.x_forwarded_for", "sometimes"], id="xff-mode"),
    pytest.param({"headers": {"forwarded": "always"}}, ["headers.forwarded", "always"], id="forwarded-mode"),
    pytest.param({"mode": "audit"}, ["mode", "audit"], id="mode"),
    pytest.param({"direct_peer": {"if_missing": "guess"}}, ["direct_peer.if_missing", "guess"], id="if-missing"),
    pytest.param({"reject_status": 200}, ["reject_status", "200"], id="reject-status-low"),
    pytest.param({"reject_status": 600}, ["reject_status", "600"], id="reject-status-high"),
    pytest.param("{not json", ["invalid configuration"], id="not-json"),
]


@pytest.fixture
def run_refused(wasm, echo, workdir):
    """Runs Envoy with one listener; returns (exit code, everything it logged and printed)."""

    def run(spec: Listener) -> tuple[int | None, str]:
        envoy = EnvoyWithListeners([spec], upstream_port=echo.port, wasm=wasm, name="bad-config", workdir=workdir("bad-config"))
        code = envoy.run_to_exit(timeout=30)
        return code, envoy.output_text()

    return run


@pytest.mark.parametrize("plugin,needles", BAD)
def test_bad_config_refused_http_role(run_refused, plugin, needles):
    code, output = run_refused(Listener(plugin=plugin, ipv6=False))
    assert code not in (None, 0), f"Envoy accepted the configuration (exit {code})\n{output}"
    lines = [line for line in output.splitlines() if "trustip: invalid configuration" in line]
    assert lines, output
    for needle in needles:
        assert any(needle in line for line in lines), f"{needle!r} not named in {lines}"


@pytest.mark.parametrize("plugin,needles", BAD[:2])
def test_bad_config_refused_network_role(run_refused, plugin, needles):
    code, output = run_refused(Listener(plugin=plugin, network_role=True, http_role=False, ipv6=False))
    assert code not in (None, 0), output
    lines = [line for line in output.splitlines() if "trustip: invalid configuration" in line]
    for needle in needles:
        assert any(needle in line for line in lines), f"{needle!r} not named in {lines}\n{output}"


def test_unknown_root_id_refused(run_refused):
    code, output = run_refused(Listener(plugin={}, http_root_id="trustip-other", ipv6=False))
    assert code not in (None, 0), output


def test_issue_example_configuration_accepted(wasm, echo, workdir):
    """The full example of issue 2 is a valid configuration, and a minimal `{}` too (every
    field has a default)."""
    example = {
        "mode": "enforce",
        "direct_peer": {"filter_state": "trustip.direct_peer", "if_missing": "reject"},
        "rules": [
            {"from": ["10.0.0.0/8"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f60718"]}},
            {"from": ["192.168.10.5/32"], "proxy_protocol": "use"},
        ],
        "xff": {"trusted": ["173.245.48.0/20", "2400:cb00::/32"], "max_entries": 32},
        "headers": {
            "x_forwarded_for": "overwrite",
            "forwarded": "none",
            "set": ["x-envoy-external-address", "x-real-ip"],
            "strip": ["true-client-ip", "cf-connecting-ip"],
            "tlv": {"aws_vpce_id": "x-amzn-vpce-id"},
        },
        "reject_status": 403,
    }
    envoy = EnvoyWithListeners(
        [
            Listener(name="example", plugin=json.dumps(example), network_role=True),
            Listener(name="empty", plugin={}, network_role=True),
        ],
        upstream_port=echo.port,
        wasm=wasm,
        name="good-config",
        workdir=workdir("good-config"),
    ).start()
    try:
        # Not in 10/8 nor 192.168.10.5: the implicit rule (reject PROXY, accept direct).
        response = client.request(envoy.port("example"), source="127.0.0.66")
        assert response.status == 200, response
        assert response.upstream_header("x-real-ip") == "127.0.0.66"
        response = client.request(envoy.port("empty"), source="127.0.0.66")
        assert response.status == 200, response
        assert response.upstream_header("x-forwarded-for") == "127.0.0.66"
    finally:
        envoy.stop()
