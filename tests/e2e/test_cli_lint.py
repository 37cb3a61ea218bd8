"""`trustip lint` (issue 13), through the real binary.

- Every fixture in tests/data/lint/<rule-id>/: a `bad*` file reports that rule with its
  severity (an error rule as its only error, a warning rule as its only finding) and the exit
  status 2 (errors) or 1 (warnings only), in both output formats; a `fixed*` file lints clean
  (exit 0). docs/lint.md describes every rule that has fixtures.
- What trustip ships lints clean: the samples in envoy/ and deploy/compose/, and what
  `trustip render` writes for every target (envoy and compose with the wasm and the native
  build and each option, istio, envoy-gateway native). The one expected finding: Envoy
  Gateway's wasm build (render accepts it only with if_missing trust_source) is reported as
  the warning direct-peer-trust-source, the caveat render itself writes into that YAML.
- Every Envoy bootstrap among the fixtures passes `envoy --mode validate`, except the bad files
  of the rules whose run-time effect is Envoy refusing the configuration, which fail it.
- Input handling: several files are one deployment (Istio resources split across files),
  standard input (`-`), a missing or broken file (unreadable-input, exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from cli_support import DEPLOY_COMPOSE, cli, envoy_validate, scratch_dir, write_policy  # noqa: F401  (cli is a fixture)
from harness.envoy import REPO

FIXTURES = REPO / "tests" / "data" / "lint"
DOCS = REPO / "docs" / "lint.md"
ERROR_RULES = {
    "unreadable-input", "policy-invalid", "wasm-root-id-mismatch", "wasm-root-id-unknown",
    "native-filter-name-mismatch", "wasm-fail-open", "missing-set-filter-state",
    "set-filter-state-wrong-source", "tlv-not-readable", "use-remote-address-off",
    "xff-append-not-skipped", "underscore-headers-allowed", "strict-proxy-health-checks",
    "upstream-proxy-unverified", "proxy-without-trust", "native-listener-order",
    "proxy-protocol-filter-missing", "native-policy-mismatch", "trustip-filter-disabled",
}  # fmt: skip


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*/*") if p.is_file())


def lint_json(cli, *files, expect=None):  # noqa: F811
    run = cli.run("lint", "--format", "json", *files, expect=expect)
    return run, run.json()


def ids(report: dict, severity: str | None = None) -> set[str]:
    return {f["id"] for f in report["findings"] if severity is None or f["severity"] == severity}


def test_every_rule_has_fixtures_and_docs():
    rules = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
    assert ERROR_RULES <= set(rules), ERROR_RULES - set(rules)
    docs = DOCS.read_text()
    for rule in rules:
        assert any(p.name.startswith("bad") for p in (FIXTURES / rule).iterdir()), rule
        assert f"`{rule}`" in docs, f"docs/lint.md does not describe {rule}"


def test_every_rule_in_the_readme_and_every_error_proved_in_envoy():
    """The README's lint section lists every rule; every error rule but `unreadable-input` (a
    file nothing can parse: Envoy refuses it too) has its proof in real Envoy,
    tests/e2e/test_lint_proofs.py."""
    rules = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Check the wiring before it ships"):]
    section = section[: section.index("\n## ", 1)]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.M))
    assert listed == rules, (rules - listed, listed - rules)
    proofs = (REPO / "tests" / "e2e" / "test_lint_proofs.py").read_text()
    proved = set(re.findall(r'rule = "([a-z0-9-]+)"', proofs))
    assert proved == ERROR_RULES - {"unreadable-input"}, (ERROR_RULES - proved, proved - ERROR_RULES)


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture(cli, path):  # noqa: F811
    rule = path.parent.name
    severity = "error" if rule in ERROR_RULES else "warning"
    bad = path.name.startswith("bad")
    expect = (2 if severity == "error" else 1) if bad else 0
    run, report = lint_json(cli, path, expect=expect)
    assert report["files"] == [str(path)]
    assert report["errors"] == len([f for f in report["findings"] if f["severity"] == "error"])
    assert report["warnings"] == len([f for f in report["findings"] if f["severity"] == "warning"])
    if not bad:
        assert report["findings"] == [], run
        text = cli.run("lint", path, expect=0).out
        assert text == "1 file: no findings\n", text
        return
    if severity == "error":
        assert ids(report, "error") == {rule}, run
    else:
        assert ids(report) == {rule}, run
    for finding in report["findings"]:
        assert set(finding) == {"id", "severity", "file", "resource", "path", "runtime", "fix"}, finding
        assert finding["file"] == str(path)
        assert finding["runtime"] and finding["fix"] and "\n" not in finding["fix"], finding
        if finding["id"] == rule:
            assert finding["severity"] == severity
            if rule not in ("unreadable-input", "no-config-found"):
                assert finding["resource"], finding
                # A bare policy file's finding is at its root (path "").
                assert finding["path"] or finding["resource"] == "policy", finding
    # The text form: one block per finding, then the count; the same exit status.
    text = cli.run("lint", "--format", "text", path, expect=expect).out
    assert f"{severity}[{rule}] {path}" in text, text
    assert "\n  at run time: " in text and "\n  fix: " in text, text
    errors, warnings = report["errors"], report["warnings"]
    plural = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"  # noqa: E731
    assert text.endswith(f"{plural(errors, 'error')}, {plural(warnings, 'warning')} in 1 file\n"), text


# The rules whose bad configurations Envoy itself refuses (the run-time effect they name).
REFUSED_BY_ENVOY = {"unreadable-input", "policy-invalid", "wasm-root-id-unknown", "native-filter-name-mismatch"}


def envoy_fixtures() -> list[Path]:
    return [p for p in fixture_files() if p.suffix == ".yaml" and p.read_text().count("\nstatic_resources:") == 1]


@pytest.mark.parametrize("path", envoy_fixtures(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_envoy_fixture_is_what_envoy_takes(path, wasm, native, directory):
    """Every Envoy bootstrap among the fixtures is a configuration Envoy 1.40 accepts (`envoy
    --mode validate`, with the module paths pointed at the built artifacts), so each rule is
    shown on real wiring; except the bad files of the rules whose run-time effect is that
    Envoy refuses the configuration: Envoy refuses exactly those."""
    text = path.read_text().replace("/etc/envoy/trustip.wasm", str(wasm)).replace("/usr/lib/envoy/libtrustip.so", str(native))
    config = directory / f"validate-{path.parent.name}-{path.name}"
    config.write_text(text)
    done = envoy_validate(config)
    if path.name.startswith("bad") and path.parent.name in REFUSED_BY_ENVOY:
        assert done.returncode != 0, done.stdout + done.stderr
    else:
        assert done.returncode == 0, done.stdout + done.stderr


def shipped_samples() -> list[Path]:
    return sorted((REPO / "envoy").glob("*.yaml")) + [DEPLOY_COMPOSE / "envoy.yaml", DEPLOY_COMPOSE / "policy.json"]


@pytest.mark.parametrize("path", shipped_samples(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_sample_lints_clean(cli, path):  # noqa: F811
    run, report = lint_json(cli, path, expect=0)
    assert report["findings"] == [], run


def test_all_samples_in_one_call(cli):  # noqa: F811
    run, report = lint_json(cli, *shipped_samples(), expect=0)
    assert report == {"files": [str(p) for p in shipped_samples()], "findings": [], "errors": 0, "warnings": 0}


# --- what render writes -------------------------------------------------------------------

LB = "10.0.0.0/8"
POLICIES = {
    "lb-only": {"rules": [{"from": [LB], "proxy_protocol": "require"}]},
    # docs/configuration.md's example.
    "configuration-example": {
        "mode": "enforce",
        "direct_peer": {"filter_state": "trustip.direct_peer", "if_missing": "reject"},
        "rules": [
            {"from": [LB], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f60718"]}},
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
    },
    "health-checks-binary-tlvs": {
        "rules": [{"from": [LB], "proxy_protocol": "require", "health_check_paths": ["/healthz/ready"],
                   "tlvs": {"azure_link_id": ["4294967295"], "gcp_psc_connection_id": ["1"]}}],
        "tlv_encoding": "base64",
    },  # fmt: skip
    "upstream-proxy": {
        "rules": [{"from": [LB], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": ["vpce-1"]}},
                  {"from": ["192.168.0.0/16"], "proxy_protocol": "ignore"}],
        "upstream_proxy_protocol": True,
    },  # fmt: skip
}
DIGEST = "sha256:" + "ab" * 32
SAMPLES = [
    "strict-lb-only", "mixed-lb-and-direct", "http-role-only", "tcp-proxy-network-role", "demo",
    "native-strict-lb-only", "native-lb-and-cdn",
]  # fmt: skip


def render_cases():
    for name in POLICIES:
        for build in ("wasm", "native"):
            module = ["--build", "native", "--module", "/usr/lib/envoy/libtrustip.so"] if build == "native" else []
            options = [[], ["--strict-proxy"], ["--tls-passthrough", "api.example.com=10.0.3.7:443"]]
            if name == "health-checks-binary-tlvs":
                options += [["--health-check-path", "/healthz/ready"], ["--strict-proxy", "--health-check-path", "/healthz/ready"]]
            if name == "upstream-proxy":
                options = [["--upstream-proxy", "v2", "--upstream-tlvs", "aws_vpce_id"], ["--upstream-proxy", "v1", "--strict-proxy"],
                           ["--upstream-proxy", "v2", "--tls-passthrough", "api.example.com=10.0.3.7:443"]]  # fmt: skip
            for extra in options:
                yield pytest.param(name, ["--target", "envoy", *module, *extra], id=f"envoy-{build}-{name}-{'_'.join(extra) or 'plain'}")
        if name != "upstream-proxy":
            yield pytest.param(name, ["--target", "istio", "--image", "oci://registry.example.com/trustip:0.1.0",
                                      "--image-digest", DIGEST], id=f"istio-{name}")  # fmt: skip
            yield pytest.param(name, ["--target", "istio", "--wasm", str(REPO / "target" / "trustip.wasm")], id=f"istio-wasm-file-{name}")
        if "tlv" not in json.dumps(POLICIES[name]):
            yield pytest.param(name, ["--target", "envoy-gateway", "--build", "native", "--module",
                                      "/usr/lib/envoy/libtrustip.so"], id=f"envoy-gateway-native-{name}")  # fmt: skip


@pytest.fixture(scope="module")
def directory():
    return scratch_dir("cli-lint")


def lint_rendered(cli, directory, text: str, name: str):  # noqa: F811
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return lint_json(cli, path)


@pytest.mark.parametrize("name,args", list(render_cases()))
def test_render_output_lints_clean(cli, directory, name, args):  # noqa: F811
    policy = write_policy(directory, name, POLICIES[name])
    rendered = cli.run("render", "--config", policy, *args)
    run, report = lint_rendered(cli, directory, rendered.out, "rendered")
    assert run.code == 0 and report["findings"] == [], (rendered.args, run)


@pytest.mark.parametrize("sample", SAMPLES)
def test_render_sample_lints_clean(cli, directory, sample):  # noqa: F811
    rendered = cli.run("render", "--sample", sample)
    run, report = lint_rendered(cli, directory, rendered.out, f"sample-{sample}")
    assert run.code == 0 and report["findings"] == [], run


@pytest.mark.parametrize("policy_name", ["lb-only", "health-checks-binary-tlvs"])
def test_render_compose_lints_clean(cli, directory, policy_name):  # noqa: F811
    policy = write_policy(directory, "compose", POLICIES[policy_name])
    out = directory / f"compose-{policy_name}"
    cli.run("render", "--config", policy, "--target", "compose", "--out", out)
    run, report = lint_json(cli, out / "envoy.yaml", out / "policy.json", expect=0)
    assert report["findings"] == [], run
    # docker-compose.yml is nothing lint reads: said as a warning, not passed silently.
    run, report = lint_json(cli, out / "docker-compose.yml", expect=1)
    assert ids(report) == {"no-config-found"}, run


def test_render_envoy_gateway_wasm_only_warns_trust_source(cli, directory):  # noqa: F811
    """The wasm build on Envoy Gateway has no TCP peer (no set_filter_state there): render takes
    it only with if_missing trust_source, and lint says what that assumes, as a warning."""
    policy = write_policy(directory, "eg-wasm", {"direct_peer": {"if_missing": "trust_source"},
                                                 "rules": [{"from": [LB], "proxy_protocol": "use"}]})  # fmt: skip
    rendered = cli.run("render", "--config", policy, "--target", "envoy-gateway",
                       "--image", "oci://registry.example.com/trustip:0.1.0", "--image-digest", DIGEST)  # fmt: skip
    run, report = lint_rendered(cli, directory, rendered.out, "eg-wasm")
    assert run.code == 1 and ids(report) == {"direct-peer-trust-source"}, run


# --- inputs -------------------------------------------------------------------------------


def test_files_are_one_deployment(cli, directory):  # noqa: F811
    """Istio's WasmPlugins in one file, the EnvoyFilter and the Deployment in another: linted
    together they are one gateway, clean; the plugins alone lack the wiring."""
    documents = (FIXTURES / "wasm-fail-open" / "fixed-istio.yaml").read_text().split("\n---\n")
    plugins, wiring = directory / "plugins.yaml", directory / "wiring.yaml"
    plugins.write_text("\n---\n".join(documents[:2]))
    wiring.write_text("\n---\n".join(documents[2:]))
    lint_json(cli, plugins, wiring, expect=0)
    run, report = lint_json(cli, plugins, expect=2)
    assert {"missing-set-filter-state", "underscore-headers-allowed", "xff-append-extra-hop"} <= ids(report), run


def test_worst_finding_decides_the_exit_status(cli):  # noqa: F811
    clean = REPO / "envoy" / "strict-lb-only.yaml"
    warning = FIXTURES / "shadow-mode" / "bad.yaml"
    error = FIXTURES / "wasm-fail-open" / "bad.yaml"
    lint_json(cli, clean, expect=0)
    _, report = lint_json(cli, clean, warning, expect=1)
    assert report["errors"] == 0 and report["warnings"] >= 1, report
    _, report = lint_json(cli, clean, warning, error, expect=2)
    assert report["files"] == [str(clean), str(warning), str(error)]
    assert {f["file"] for f in report["findings"]} == {str(warning), str(error)}


def test_standard_input(cli):  # noqa: F811
    bad = (FIXTURES / "wasm-root-id-mismatch" / "bad.yaml").read_text()
    done = subprocess.run([str(cli.path), "lint", "--format", "json", "-"], input=bad, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    report = json.loads(done.stdout)
    assert ids(report) == {"wasm-root-id-mismatch"} and report["findings"][0]["file"] == "-"


def test_unreadable_input(cli, directory):  # noqa: F811
    missing = directory / "missing.yaml"
    run, report = lint_json(cli, missing, expect=2)
    assert ids(report) == {"unreadable-input"}, run
    assert str(missing) in report["findings"][0]["runtime"]
    broken = directory / "broken.json"
    broken.write_text('{"static_resources": ')
    run, report = lint_json(cli, broken, expect=2)
    assert ids(report) == {"unreadable-input"}, run
    # Usage errors are clap's: no file at all.
    run = cli.run("lint", expect=2)
    assert "FILE" in run.err, run
