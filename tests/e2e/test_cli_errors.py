"""Exit codes and one-line errors of `trustip explain`, `render` and `probe` (issue 3).

explain: 0 accept, 1 reject, 2 bad usage or bad configuration. render: 0, or 2. probe: 0 nothing
spoofable, 3 something spoofable, 4 unreachable, 2 usage. A bad configuration gives exactly the
line the filter logs when Envoy refuses the plugin (checked against a real Envoy below)."""

from __future__ import annotations

import pytest

from cli_support import cli, scratch_dir, write_policy  # noqa: F401  (cli is a fixture)
from harness import net
from harness.envoy import EnvoyWithListeners, Listener

BAD_CONFIGS = [
    pytest.param(
        {"rules": [{"from": ["10.0.0.0/33"], "proxy_protocol": "require"}]},
        'trustip: invalid configuration: rules[0].from[0]: "10.0.0.0/33": prefix length 33 > 32',
        id="prefix-33",
    ),
    pytest.param(
        {"rules": [{"from": ["10.0.0.0/8"], "proxy_protocol": "maybe"}]},
        "trustip: invalid configuration: rules[0].proxy_protocol: unknown variant `maybe`",
        id="unknown-word",
    ),
    pytest.param({"rulez": []}, "trustip: invalid configuration: ", id="unknown-field"),
    pytest.param("{not json", "trustip: invalid configuration: ", id="not-json"),
]


@pytest.fixture(scope="module")
def directory():
    return scratch_dir("cli-errors")


@pytest.fixture(scope="module")
def good_policy(directory):
    return write_policy(directory, "good", {"rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require"}]})


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got {text!r}"
    return lines[0]


@pytest.mark.parametrize("policy,line", BAD_CONFIGS)
@pytest.mark.parametrize(
    "command",
    [
        ["explain", "--peer", "127.0.0.66"],
        ["render", "--target", "envoy"],
        ["render", "--target", "istio", "--image", "oci://example/trustip:1"],
        ["render", "--target", "compose", "--out", "OUT"],
    ],
    ids=["explain", "render-envoy", "render-istio", "render-compose"],
)
def test_bad_config_is_one_line_and_exit_2(cli, directory, policy, line, command):  # noqa: F811
    path = write_policy(directory, "bad", policy)
    args = [str(directory / "out") if a == "OUT" else a for a in command]
    run = cli.run(*args, "--config", path, expect=2)
    assert run.out == "", run
    assert one_line(run.err).startswith(line), run
    assert not (directory / "out").exists()


def test_cli_error_is_the_line_the_filter_logs(cli, directory, echo, wasm):  # noqa: F811
    policy = {"rules": [{"from": ["10.0.0.0/33"], "proxy_protocol": "require"}]}
    run = cli.run("explain", "--config", write_policy(directory, "bad", policy), "--peer", "1.2.3.4", expect=2)
    instance = EnvoyWithListeners([Listener(plugin=policy, ipv6=False)], upstream_port=echo.port, wasm=wasm, name="cli-bad-config")
    code = instance.run_to_exit(timeout=30)
    assert code not in (None, 0)
    assert one_line(run.err) in instance.output_text()


def test_missing_config_file(cli, directory):  # noqa: F811
    run = cli.run("explain", "--config", directory / "absent.json", "--peer", "1.2.3.4", expect=2)
    assert one_line(run.err).startswith("trustip: cannot read "), run


def test_explain_exit_codes(cli, good_policy):  # noqa: F811
    accept = cli.run("explain", "--config", good_policy, "--peer", "127.0.0.5", "--proxy", "203.0.113.1:1", expect=0)
    assert accept.out.startswith("ACCEPT (proxy)")
    reject = cli.run("explain", "--config", good_policy, "--peer", "127.0.0.66", "--proxy", "203.0.113.1:1", expect=1)
    assert reject.out.startswith("REJECT (untrusted_proxy)")
    assert reject.err == ""
    as_json = cli.run("explain", "--config", good_policy, "--peer", "127.0.0.5", "--json", expect=1).json()
    assert (as_json["action"], as_json["reason"], as_json["client_ip"], as_json["rule"]) == ("reject", "missing_proxy", None, 0)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--peer", "not-an-ip"], "--peer"),
        (["--peer", "1.2.3.4", "--proxy", "999.1.1.1"], "--proxy"),
        (["--peer", "1.2.3.4", "--tlv", "aws_vpce_id=vpce-1"], "--tlv needs --proxy"),
        (["--peer", "1.2.3.4", "--proxy", "5.6.7.8:1", "--tlv", "colour=blue"], "unknown key"),
        (["--peer", "1.2.3.4", "--header", "no colon"], "--header"),
    ],
    ids=["peer", "proxy", "tlv-without-proxy", "tlv-key", "header"],
)
def test_explain_usage_errors(cli, good_policy, args, needle):  # noqa: F811
    run = cli.run("explain", "--config", good_policy, *args, expect=2)
    line = one_line(run.err)
    assert line.startswith("trustip: ") and needle in line, run


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--target", "compose"], "--out"),
        (["--target", "envoy", "--image", "oci://x/y:1"], "--image"),
        (["--target", "envoy", "--listen", "nowhere"], "--listen"),
        (["--target", "envoy", "--upstream", "host"], "--upstream"),
        (["--target", "istio", "--wasm", "/nonexistent/trustip.wasm"], "cannot read"),
        (["--target", "istio", "--image", "oci://x/y:1", "--gateway-label", "nolabel"], "--gateway-label"),
    ],
    ids=["compose-without-out", "image-for-envoy", "listen", "upstream", "istio-missing-wasm", "gateway-label"],
)
def test_render_usage_errors(cli, good_policy, args, needle):  # noqa: F811
    run = cli.run("render", "--config", good_policy, *args, expect=2)
    line = one_line(run.err)
    assert line.startswith("trustip: ") and needle in line, run


@pytest.mark.parametrize(
    "flag,value,suggestion",
    [
        ("--upstream", "::1:80", "[::1]:80"),
        ("--upstream", "2001:db8::7:8080", "[2001:db8::7]:8080"),
        ("--admin", "::1:9901", "[::1]:9901"),
        ("--listen", "::1:10000", "[::1]:10000"),
    ],
    ids=["upstream", "upstream-long", "admin", "listen"],
)
def test_render_refuses_unbracketed_ipv6(cli, good_policy, flag, value, suggestion):  # noqa: F811
    """`::1:80` is ambiguous (the address ::1:80, or ::1 port 80?): every HOST:PORT flag refuses
    it, as `probe` does, and names the bracketed spelling."""
    run = cli.run("render", "--config", good_policy, "--target", "envoy", flag, value, expect=2)
    line = one_line(run.err)
    assert line.startswith(f'trustip: {flag} "{value}": ') and f"(did you mean {suggestion}?)" in line, run
    assert run.out == ""
    cli.run("render", "--config", good_policy, "--target", "envoy", flag, suggestion, expect=0)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["127.0.0.1"], "HOST:PORT"),
        (["127.0.0.1:0"], "HOST:PORT"),
        (["::1:80"], "(did you mean [::1]:80?)"),
        (["127.0.0.1:80", "--path", "headers"], "--path"),
        (["127.0.0.1:80", "--timeout", "0"], "--timeout"),
        (["127.0.0.1:80", "--host", "a b"], "--host"),
        (["127.0.0.1:80", "--bind", "::1"], "--bind"),
        (["127.0.0.1:80", "--bind", "192.0.2.1"], "--bind"),
    ],
    ids=["no-port", "port-0", "bare-ipv6", "path", "timeout", "host", "bind-family", "bind-not-local"],
)
def test_probe_usage_errors(cli, args, needle):  # noqa: F811
    run = cli.run("probe", *args, expect=2)
    line = one_line(run.err)
    assert line.startswith("trustip: probe: ") and needle in line, run
    assert run.out == ""


def test_probe_unreachable_exits_4(cli):  # noqa: F811
    port = net.free_port()  # nothing listens there
    run = cli.run("probe", f"127.0.0.1:{port}", "--json", expect=4)
    report = run.json()
    assert (report["listener"], report["proxy_spoofable"], report["xff_spoofable"]) == ("unreachable", None, None)
    assert len(report["probes"]) == 1, "stops after the first failed connect"
    text = cli.run("probe", f"127.0.0.1:{port}", expect=4).out
    assert "unreachable" in text and "fix: nothing accepted a TCP connection" in text
    unresolvable = cli.run("probe", "no-such-host.invalid:80", "--json", expect=4).json()
    assert unresolvable["listener"] == "unreachable" and unresolvable["probes"] == []


def test_clap_usage_errors_exit_2(cli):  # noqa: F811
    for args in (["explain"], ["render", "--config", "x.json"], ["probe"], ["frobnicate"], ["probe", "1.2.3.4:5", "--nope"]):
        run = cli.run(*args, expect=2)
        assert run.err.startswith("error: "), run
        assert run.out == ""


@pytest.mark.parametrize("command", [[], ["explain"], ["render"], ["probe"]], ids=["top", "explain", "render", "probe"])
def test_help_is_complete(cli, command):  # noqa: F811
    run = cli.run(*command, "--help", expect=0)
    assert f"Usage: trustip {' '.join(command)}".rstrip() in run.out, run
    if command == ["probe"]:
        for needle in ("--path", "--host", "--timeout", "--json", "--bind", "requires_proxy", "no_proxy",
                       "optional_proxy", "unreachable", "Exit status", "  3  ", "  4  ", "  2  "):  # fmt: skip
            assert needle in run.out, needle
