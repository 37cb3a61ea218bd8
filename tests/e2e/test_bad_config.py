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
    # Issue 7: a repeated key is refused at every level (serde_json's last-wins would believe
    # anyone's PROXY header below, while a reviewer reads `reject`).
    pytest.param(
        '{"rules":[{"from":["0.0.0.0/0"],"proxy_protocol":"reject","proxy_protocol":"use"}]}',
        ["rules[0].proxy_protocol: duplicate key"],
        id="duplicate-key-in-rule",
    ),
    pytest.param('{"mode":"shadow","mode":"enforce"}', ["mode: duplicate key"], id="duplicate-key-top"),
    pytest.param('{"mode":"shadow","\\u006dode":"enforce"}', ["mode: duplicate key"], id="duplicate-key-escaped"),
    pytest.param(
        '{"headers":{"tlv":{"authority":"x-a","authority":"x-b"}}}', ["headers.tlv.authority: duplicate key"], id="duplicate-tlv-key"
    ),
    # Issue 7: framing, hop-by-hop and pseudo-headers are not trustip's to write (or strip).
    pytest.param({"headers": {"set": ["Transfer-Encoding"]}}, ["headers.set[0]", "Transfer-Encoding", "framing"], id="set-transfer-encoding"),
    pytest.param({"headers": {"set": ["x-real-ip", "content-length"]}}, ["headers.set[1]", "content-length"], id="set-content-length"),
    pytest.param({"headers": {"set": ["host"]}}, ["headers.set[0]", "host"], id="set-host"),
    pytest.param({"headers": {"set": [":authority"]}}, ["headers.set[0]", ":authority", "pseudo-header"], id="set-pseudo"),
    pytest.param({"headers": {"tlv": {"authority": "connection"}}}, ["headers.tlv.authority", "connection", "hop-by-hop"], id="tlv-connection"),
    pytest.param({"headers": {"strip": ["x-real-ip", "host"]}}, ["headers.strip[1]", "host"], id="strip-host"),
    # Issue 7: bounded header lists (each entry costs host calls on every request).
    pytest.param({"headers": {"set": [f"x-h{i}" for i in range(17)]}}, ["headers.set: 17 entries, more than the limit of 16"], id="set-too-long"),
    pytest.param({"headers": {"strip": [f"x-h{i}" for i in range(65)]}}, ["headers.strip: 65 entries, more than the limit of 64"], id="strip-too-long"),
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


ONE_LINE = [
    # (plugin configuration, what the refusal line must say after the hostile text)
    pytest.param('{"a\\nb": 1}', '["a\\nb"]: unknown field `a\\nb`, expected one of', id="key"),
    pytest.param('{"mode": "x\\r\\n[2026-01-01 00:00:00.000][1][critical][main] forged"}', "forged`, expected one of", id="value"),
    pytest.param(
        '{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use","tlvs":{"x\\u2028y\\u0085z":[]}}]}',
        'tlvs["x\\u{2028}y\\u{85}z"]: unknown variant',
        id="tlv-key",
    ),
    pytest.param('{"headers":{"x\\u001b[31m":1,"x\\u001b[31m":2}}', 'headers["x\\u{1b}[31m"]: duplicate key', id="duplicate-key"),
]


@pytest.mark.parametrize("plugin,tail", ONE_LINE)
def test_refusal_is_one_line(run_refused, plugin, tail):
    """Issue 7: control characters in keys and values are escaped, so the refusal is one log
    line and a configuration cannot forge log lines (each of Envoy's starts with a timestamp)."""
    code, output = run_refused(Listener(plugin=plugin, ipv6=False))
    assert code not in (None, 0), output
    lines = [line for line in output.splitlines() if "trustip: invalid configuration" in line]
    assert len(lines) == 1, output
    assert tail in lines[0], f"{tail!r} not in {lines[0]!r}"
    assert not [ch for ch in lines[0] if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0], lines[0]
    # The log line after it is one of Envoy's, starting with the "[" of its timestamp.
    log = output.split("--- log (", 1)[1].split("--- stdout/stderr ---", 1)[0].splitlines()
    at = next(i for i, line in enumerate(log) if "trustip: invalid configuration" in line)
    assert log[at + 1].startswith("["), log[at : at + 2]


def test_large_cidr_lists_accepted(wasm, echo, workdir):
    """The list limits leave room for large CIDR lists (tens of thousands of blocks)."""
    trusted = [f"100.{i // 256}.{i % 256}.0/24" for i in range(20000)]
    rule_from = [f"10.{i // 256}.{i % 256}.0/24" for i in range(10000)] + ["127.0.0.5/32"]
    plugin = {"rules": [{"from": rule_from, "proxy_protocol": "require"}], "xff": {"trusted": trusted}}
    envoy = EnvoyWithListeners(
        [Listener(name="large", plugin=plugin, ipv6=False)],
        upstream_port=echo.port,
        wasm=wasm,
        name="large-config",
        workdir=workdir("large-config"),
    ).start()
    try:
        response = client.request(
            envoy.port("large"),
            [("x-forwarded-for", "1.1.1.1, 100.78.31.9")],
            source="127.0.0.5",
            proxy=client.proxy_v2("100.0.9.1", "10.0.0.1", 50000, 443),
        )
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == "1.1.1.1"
    finally:
        envoy.stop()


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
