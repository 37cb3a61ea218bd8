"""Issue 13: every error rule of `trustip lint`, proved in real Envoy.

For each rule the test builds the offending Envoy bootstrap with the harness and writes it to a
file, then:
(a) `trustip lint --format json FILE` reports the rule as an error for each listener of the file
    (exit 2), and no other error;
(b) Envoy 1.40 runs that very file and real sockets show the failure lint predicts (a refused
    configuration, refused traffic, a spoofed address at the upstream, a load balancer marking
    Envoy DOWN, an ignored PROXY claim at a backend);
(c) the fix lint names, written to a second file: lint reports neither the rule nor any other
    error, and Envoy running that file no longer fails.
Where a rule has several ways to go wrong, each is a listener of the same file. Both builds where
the rule applies to both (the `build` fixture); the wasm-only and native-only rules skip the
other build, saying why. The bad file and its fix run side by side, in two Envoys.

`TRUSTIP_PROOFS_SWAP=lint` (or `=envoy`) hands each proof the fixed file where it expects the bad
one and the reverse, for lint (or for Envoy) only: every proof must then fail. That is how they
were shown to be able to fail.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from cli_support import cli  # noqa: F401  (the fixture)
from harness import client, names
from harness.envoy import WELL_KNOWN_TLVS, Listener
from harness.expect import reject_body
from harness.haproxy import HAProxy
from harness.lint_cases import (
    ConfigFile,
    FileEnvoy,
    LintReport,
    PlainCheckHAProxy,
    answer_health_checks,
    dead_port,
    fetch_wasm_from,
    make_bootstrap,
    running,
    write_yaml,
)
from harness.proxy_backend import ProxyBackend

LB = "127.0.0.5"  # the load balancer: `require`
ATTACKER = "127.0.0.66"  # no rule: the implicit `reject`
IGNORED = "127.0.0.13"  # an `ignore` rule's peer
USE_PEER = "127.0.0.77"  # a `use` rule's peer
BEHIND_LB = "127.0.0.42"  # a client that reaches Envoy through HAProxy
CLIENT = "198.51.100.7"  # the client the load balancer's PROXY header names
SPOOF = "203.0.113.9"  # what an attacker claims, by PROXY header or client header
VPCE = "vpce-0a1b2c3d4e5f60718"
HEALTH_PATH = "/healthz/ready"
LB_RULE = {"from": [f"{LB}/32"], "proxy_protocol": "require"}
POLICY = {"rules": [LB_RULE]}
SWAP = os.environ.get("TRUSTIP_PROOFS_SWAP", "")


class LintMismatch(AssertionError):
    """Lint says something else about a file than Envoy showed (an xfail can name this, so that
    a failing Envoy proof is never the expected failure)."""


def expect(condition, message) -> None:
    if not condition:
        raise LintMismatch(message)


# --- the proof's three steps ---------------------------------------------------------------


class Proofs:
    def __init__(self, build: str, echo, directory, cli) -> None:
        self.build = build
        self.echo = echo
        self.directory = directory
        self.cli = cli

    def bootstrap(self, *listeners: Listener):
        return make_bootstrap(*listeners, build=self.build, upstream_port=self.echo.port)

    def lint(self, path) -> LintReport:
        run = self.cli.run("lint", "--format", "json", path, expect=None)
        return LintReport.parse(run.code, run.out, run.err)

    def pair(self, rule: str, bad, fixed) -> tuple[ConfigFile, ConfigFile]:
        """Writes both bootstraps and lints each file (`assert_lint`). Returns the two files for
        Envoy (swapped with TRUSTIP_PROOFS_SWAP=envoy)."""
        bad_file, fixed_file = self.write(bad, name=f"{rule}-bad"), self.write(fixed, name=f"{rule}-fixed")
        self.assert_lint(rule, bad_file, fixed_file)
        return (fixed_file, bad_file) if SWAP == "envoy" else (bad_file, fixed_file)

    def write(self, boot, *, name: str) -> ConfigFile:
        return ConfigFile(write_yaml(self.directory / f"{name}.yaml", boot.config), boot)

    def assert_lint(self, rule: str, bad: ConfigFile, fixed: ConfigFile) -> None:
        """The bad file has `rule` as its only error (exit 2), reported for each of its
        listeners; the fixed one has no error and no finding of `rule`. A difference raises
        LintMismatch (swapped with TRUSTIP_PROOFS_SWAP=lint)."""
        if SWAP == "lint":
            bad, fixed = fixed, bad
        report = self.lint(bad.path)
        expect(rule in report.errors, f"lint misses {rule} in {bad.path}: {report!r}")
        expect(report.errors == {rule}, f"lint reports other errors too in {bad.path}: {report!r}")
        expect(report.code == 2, report)
        findings = [f for f in report.report["findings"] if f["id"] == rule]
        expect({f["resource"] for f in findings} == set(bad.boot.listeners), f"not every bad listener is named: {report!r}")
        for finding in findings:
            expect(finding["file"] == str(bad.path), finding)
            expect(finding["severity"] == "error" and finding["runtime"] and finding["fix"], finding)
        self.assert_not_flagged(rule, fixed)

    def assert_not_flagged(self, rule: str, config: ConfigFile) -> None:
        """No finding of `rule` and no error in a file whose configuration works."""
        report = self.lint(config.path)
        expect(rule not in report.errors | report.warnings, f"lint reports {rule} in {config.path}, which works: {report!r}")
        expect(not report.errors and report.code in (0, 1), f"errors in {config.path}, which works: {report!r}")

    def upstream(self, response: client.Response):
        """What the echo upstream recorded for this request (None: it never got there)."""
        return self.echo.find(response.test_id) if response.test_id else None


@pytest.fixture(scope="module")
def proofs(request, build, echo, workdir, cli):  # noqa: F811
    request.getfixturevalue(build)  # the build's artifact must exist (fails clearly)
    return Proofs(build, echo, workdir(f"lint-proofs-{build}"), cli)


def lb_request(port: int, headers=(), *, tlvs: bytes = b"", path: str = "/") -> client.Response:
    """The load balancer's request: PROXY v2 naming CLIENT."""
    return client.request(port, list(headers), source=LB, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 50000, 443, tlvs=tlvs), path=path)


def spoof_request(port: int, *, source: str = ATTACKER, headers=()) -> client.Response:
    """A peer's PROXY v1 header claiming SPOOF, and client headers claiming it too."""
    return client.request(port, list(headers), source=source, proxy=client.proxy_v1(SPOOF, "10.0.0.1", 1111, 80))


SPOOF_HEADERS = [("x-real-ip", SPOOF), ("x-forwarded-for", SPOOF)]


def spoof_reached(recorded) -> list[bytes]:
    """The header lines of a recorded request that carry SPOOF."""
    return [line for line in recorded.header_lines if SPOOF.encode() in line] if recorded else []


def assert_refused_by_envoy(config: ConfigFile, *needles: str) -> None:
    """Envoy exits non-zero on the file, and one `trustip: invalid configuration` line names
    each of `needles`."""
    envoy = FileEnvoy(config.path)
    code = envoy.run_to_exit(timeout=30)
    output = envoy.output_text()
    assert code not in (None, 0), f"Envoy accepted {config.path} (exit {code})\n{output}"
    lines = [line for line in output.splitlines() if "trustip: invalid configuration" in line]
    assert lines and all(needle in lines[0] for needle in needles), output


# --- policy-invalid ----------------------------------------------------------------------------


def test_policy_invalid(proofs):
    """A block with host bits set: the core refuses the policy, so Envoy refuses the whole
    bootstrap (exits non-zero, one line naming the field); the fix serves traffic."""
    rule = "policy-invalid"
    bad = proofs.bootstrap(Listener(plugin={"rules": [{"from": [f"{LB}/8"], "proxy_protocol": "require"}]}))
    fixed = proofs.bootstrap(Listener(plugin=POLICY))
    bad, fixed = proofs.pair(rule, bad, fixed)

    assert_refused_by_envoy(bad, "rules[0].from[0]", f"{LB}/8", "host bits are set")

    with running(fixed):
        response = lb_request(fixed.port())
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == CLIENT


# --- wasm-root-id-mismatch ---------------------------------------------------------------------


@pytest.mark.wasm_only("root_id is proxy-wasm's: the native filters are chosen by filter_name")
def test_wasm_root_id_mismatch(proofs):
    """The HTTP filter given the network role's root_id refuses all its traffic (500,
    `x-trustip-reject: misconfigured`), the load balancer's included."""
    rule = "wasm-root-id-mismatch"
    bad = proofs.bootstrap(Listener(plugin=POLICY, http_root_id=names.NETWORK_ROOT_ID))
    fixed = proofs.bootstrap(Listener(plugin=POLICY))
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        for response in (lb_request(bad.port()), spoof_request(bad.port(), headers=SPOOF_HEADERS)):
            assert response.status == 500, response
            assert response.header("x-trustip-reject") == "misconfigured", response
            assert proofs.upstream(response) is None

        response = lb_request(fixed.port())
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == CLIENT
        response = spoof_request(fixed.port(), headers=SPOOF_HEADERS)
        assert response.status == 403 and response.header("x-trustip-reject") == "untrusted_proxy", response


# --- wasm-fail-open ----------------------------------------------------------------------------


def fetch_failures(envoy) -> int:
    return envoy.stats("wasm.remote_load_fetch_failures").get("wasm.remote_load_fetch_failures", 0)


@pytest.mark.wasm_only("failure_policy belongs to proxy-wasm filters; a native module has no VM to lose")
def test_wasm_fail_open(proofs, counters):
    """The module is fetched when Envoy starts (remote code pinned by its sha256, as from a
    registry) from a server that is down: both wasm filters are left without a VM. FAIL_OPEN
    then leaves them out of the chain, so an attacker's PROXY claim and client headers reach the
    upstream as the client; FAIL_CLOSED closes every connection and nothing reaches the
    upstream."""
    rule = "wasm-fail-open"
    down = dead_port()

    def make(policy: str):
        boot = proofs.bootstrap(Listener(plugin=POLICY, network_role=True, failure_policy=policy,
                                         direct_peer_format=names.DIRECT_PEER_FORMAT))  # fmt: skip
        fetch_wasm_from(boot, down)
        return boot

    bad, fixed = proofs.pair(rule, make("FAIL_OPEN"), make("FAIL_CLOSED"))

    with running(bad, fixed) as (bad_envoy, fixed_envoy):
        assert fetch_failures(bad_envoy) >= 1 and fetch_failures(fixed_envoy) >= 1
        watch = counters(bad_envoy)
        response = spoof_request(bad.port(), headers=SPOOF_HEADERS)
        assert response.status == 200, response
        recorded = proofs.upstream(response)
        assert recorded is not None
        assert recorded.text("x-envoy-external-address") == SPOOF, recorded.as_json()
        assert recorded.text("x-real-ip") == SPOOF, recorded.as_json()
        assert watch.delta() == {}, "trustip counted a decision although its VM never started"

        # The network filter without a VM closes every connection (the HTTP filter alone
        # answers 503 with an empty body): the load balancer's traffic stops too, until the
        # module can be fetched. That is the price of failing closed.
        for response in (spoof_request(fixed.port(), headers=SPOOF_HEADERS), lb_request(fixed.port())):
            assert response.closed, response
            assert proofs.upstream(response) is None


# --- wasm-root-id-unknown, native-filter-name-mismatch --------------------------------------


@pytest.mark.wasm_only("root_id is proxy-wasm's: the native filters are chosen by filter_name")
def test_wasm_root_id_unknown(proofs):
    """A root_id that names no role: the module refuses the configuration, Envoy exits."""
    rule = "wasm-root-id-unknown"
    # Deliberately a name no build defines (test_names.py checks every spelled-out root_id).
    unknown = "trustip-" + "other"
    bad = proofs.bootstrap(Listener(plugin=POLICY, http_root_id=unknown))
    fixed = proofs.bootstrap(Listener(plugin=POLICY))
    bad, fixed = proofs.pair(rule, bad, fixed)

    assert_refused_by_envoy(bad, f'root_id: "{unknown}"', names.HTTP_ROOT_ID)
    with running(fixed):
        response = lb_request(fixed.port())
        assert response.status == 200 and response.upstream_header("x-envoy-external-address") == CLIENT, response


@pytest.mark.native_only("filter_name selects the dynamic module's filter; the wasm filters are chosen by root_id")
def test_native_filter_name_mismatch(proofs):
    """The HTTP dynamic-module filter given the listener filter's filter_name: config_new
    refuses it, Envoy exits."""
    rule = "native-filter-name-mismatch"
    bad = proofs.bootstrap(Listener(plugin=POLICY))
    http_filters = bad.listener()["filter_chains"][0]["filters"][-1]["typed_config"]["http_filters"]
    assert http_filters[0]["typed_config"]["filter_name"] == names.NAMES["http_filter_name"]
    http_filters[0]["typed_config"]["filter_name"] = names.NAMES["listener_filter_name"]
    fixed = proofs.bootstrap(Listener(plugin=POLICY))
    bad, fixed = proofs.pair(rule, bad, fixed)

    assert_refused_by_envoy(bad, f'filter_name: "{names.NAMES["listener_filter_name"]}"', names.NAMES["http_filter_name"])
    with running(fixed):
        response = lb_request(fixed.port())
        assert response.status == 200 and response.upstream_header("x-envoy-external-address") == CLIENT, response


# --- missing-set-filter-state ------------------------------------------------------------------


@pytest.mark.wasm_only("the native filters read the TCP peer themselves; set_filter_state is the wasm build's way to D")
def test_missing_set_filter_state(proofs):
    """Without set_filter_state recording trustip.direct_peer, the wasm HTTP role has no D and
    refuses every request (`no_direct_peer`), the load balancer's included."""
    rule = "missing-set-filter-state"
    bad = proofs.bootstrap(Listener(plugin=POLICY, set_filter_state=False))
    fixed = proofs.bootstrap(Listener(plugin=POLICY, direct_peer_format=names.DIRECT_PEER_FORMAT))
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        response = lb_request(bad.port())
        assert response.status == 403 and response.header("x-trustip-reject") == "no_direct_peer", response
        assert response.body == reject_body("no_direct_peer")
        assert proofs.upstream(response) is None

        response = lb_request(fixed.port())
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == CLIENT


# --- set-filter-state-wrong-source -------------------------------------------------------------

WRONG_SOURCE = "%DOWNSTREAM_REMOTE_ADDRESS%"  # after proxy_protocol: the PROXY source


def set_filter_state_proof(proofs, bad: ConfigFile, fixed: ConfigFile) -> None:
    """D recorded from the PROXY source: an attacker's own header names its D, P = D looks like
    no header at all, and the implicit rule admits it as a direct client with its claim as C."""
    with running(bad, fixed):
        response = spoof_request(bad.port())
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == SPOOF
        response = lb_request(bad.port())  # the load balancer's clients still pass
        assert response.status == 200 and response.upstream_header("x-envoy-external-address") == CLIENT, response

        response = spoof_request(fixed.port())
        assert response.status == 403 and response.header("x-trustip-reject") == "untrusted_proxy", response
        assert proofs.upstream(response) is None
        response = lb_request(fixed.port())
        assert response.status == 200 and response.upstream_header("x-envoy-external-address") == CLIENT, response


@pytest.mark.wasm_only("the native build's case is the next test")
def test_set_filter_state_wrong_source(proofs):
    rule = "set-filter-state-wrong-source"
    bad = proofs.bootstrap(Listener(plugin=POLICY, direct_peer_format=WRONG_SOURCE))
    fixed = proofs.bootstrap(Listener(plugin=POLICY, direct_peer_format=names.DIRECT_PEER_FORMAT))
    bad, fixed = proofs.pair(rule, bad, fixed)
    set_filter_state_proof(proofs, bad, fixed)


@pytest.mark.native_only("the wasm build's case is the previous test")
def test_set_filter_state_wrong_source_native_http_filter(proofs):
    """The native HTTP filter alone takes D (and P) from `direct_peer.filter_state` when a
    set_filter_state filter records it: the wrong source fools it the same way. Envoy first,
    then lint (which misses it)."""
    rule = "set-filter-state-wrong-source"
    bad = proofs.write(proofs.bootstrap(Listener(plugin=POLICY, direct_peer_format=WRONG_SOURCE)), name=f"{rule}-native-bad")
    fixed = proofs.write(proofs.bootstrap(Listener(plugin=POLICY, direct_peer_format=names.DIRECT_PEER_FORMAT)),
                         name=f"{rule}-native-fixed")  # fmt: skip
    if SWAP == "envoy":
        bad, fixed = fixed, bad
    set_filter_state_proof(proofs, bad, fixed)
    proofs.assert_lint(rule, bad, fixed)


# --- proxy-protocol-filter-missing -------------------------------------------------------------


def test_proxy_protocol_filter_missing(proofs):
    """`require` rules on a listener without the proxy_protocol listener filter: the load
    balancer's PROXY header reaches the HCM as bytes (400 from Envoy's HTTP codec, nothing
    upstream) and its plain requests are refused `missing_proxy`."""
    rule = "proxy-protocol-filter-missing"
    bad = proofs.bootstrap(Listener(plugin=POLICY, proxy_protocol="none"))
    fixed = proofs.bootstrap(Listener(plugin=POLICY, proxy_protocol="optional"))
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        response = lb_request(bad.port())
        assert response.status == 400 and response.header("x-trustip-reject") is None, response
        response = client.request(bad.port(), source=LB)
        assert response.status == 403 and response.header("x-trustip-reject") == "missing_proxy", response
        assert proofs.upstream(response) is None

        response = lb_request(fixed.port())
        assert response.status == 200 and response.upstream_header("x-envoy-external-address") == CLIENT, response


# --- tlv-not-readable --------------------------------------------------------------------------

TLV_POLICY = {"rules": [{**LB_RULE, "tlvs": {"aws_vpce_id": [VPCE]}}]}
TLV_VARIANTS = {
    # listener: (policy, the bad Listener's options, the fixed one's)
    "type-not-listed": (
        TLV_POLICY,
        {"tlv_rules": {kind: key for kind, key in WELL_KNOWN_TLVS.items() if kind != client.PP2_TYPE_AWS}},
        {"tlv_rules": dict(WELL_KNOWN_TLVS)},
    ),
    # The wasm roles and the native HTTP filter read TLVs from filter state only.
    "dynamic-metadata": (TLV_POLICY, {"tlv_location": None}, {"tlv_location": "FILTER_STATE"}),
    "encoding-mismatch": (
        {**TLV_POLICY, "tlv_encoding": "base64"},
        {"tlv_value_encoding": None},
        {"tlv_value_encoding": "BASE64"},
    ),
}


def test_tlv_not_readable(proofs):
    """A TLV allowlist the filter cannot read (one listener per way to get it wrong): the load
    balancer's PROXY header with the allowlisted VPC endpoint id is refused `tlv`; with the TLV
    readable it is served, and another id is still refused."""
    rule = "tlv-not-readable"
    bad = proofs.bootstrap(*[Listener(name=name, plugin=policy, **bad_options)
                             for name, (policy, bad_options, _) in TLV_VARIANTS.items()])  # fmt: skip
    fixed = proofs.bootstrap(*[Listener(name=name, plugin=policy, **fixed_options)
                               for name, (policy, _, fixed_options) in TLV_VARIANTS.items()])  # fmt: skip
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        for name in TLV_VARIANTS:
            response = lb_request(bad.port(name), tlvs=client.aws_vpce_tlv(VPCE))
            assert response.status == 403 and response.header("x-trustip-reject") == "tlv", (name, response)
            assert proofs.upstream(response) is None

            response = lb_request(fixed.port(name), tlvs=client.aws_vpce_tlv(VPCE))
            assert response.status == 200, (name, response)
            assert response.upstream_header("x-envoy-external-address") == CLIENT
            response = lb_request(fixed.port(name), tlvs=client.aws_vpce_tlv("vpce-00000000000000000"))
            assert response.status == 403 and response.header("x-trustip-reject") == "tlv", (name, response)


@pytest.mark.native_only("the native listener filter is the one trustip filter that reads dynamic metadata")
def test_tlv_in_dynamic_metadata_read_by_the_native_listener_filter(proofs):
    """Not every layout with TLVs in dynamic metadata is wrong: trustip-listener reads them, and
    trustip-http after it takes the listener's decision and maps the TLV header from it. Lint
    must not report tlv-not-readable there."""
    rule = "tlv-not-readable"
    policy = {**TLV_POLICY, "headers": {"tlv": {"aws_vpce_id": "x-amzn-vpce-id"}}}
    config = proofs.write(proofs.bootstrap(Listener(plugin=policy, listener_role=True, tlv_location=None)),
                          name=f"{rule}-dynamic-metadata-listener-filter")  # fmt: skip
    with running(config):
        response = lb_request(config.port(), [("x-amzn-vpce-id", "forged")], tlvs=client.aws_vpce_tlv(VPCE))
        assert response.status == 200, response
        assert response.upstream_header("x-amzn-vpce-id") == VPCE
        response = lb_request(config.port(), tlvs=client.aws_vpce_tlv("vpce-00000000000000000"))
        assert response.closed, response
    proofs.assert_not_flagged(rule, config)


# --- use-remote-address-off --------------------------------------------------------------------


def test_use_remote_address_off(proofs):
    """use_remote_address false and set_filter_state recording D alone: the HCM takes the
    downstream address from the client's X-Forwarded-For, and trustip reads it as the PROXY
    source, so under a `use` rule a direct client names its own address."""
    rule = "use-remote-address-off"
    policy = {
        "rules": [LB_RULE, {"from": [f"{USE_PEER}/32"], "proxy_protocol": "use"}],
        "headers": {"set": ["x-envoy-external-address", "x-real-ip"]},
    }
    bad = proofs.bootstrap(Listener(plugin=policy, use_remote_address=False))
    fixed = proofs.bootstrap(Listener(plugin=policy, use_remote_address=True))
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        response = client.request(bad.port(), [("x-forwarded-for", SPOOF)], source=USE_PEER)
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == SPOOF
        assert response.upstream_header("x-real-ip") == SPOOF

        response = client.request(fixed.port(), [("x-forwarded-for", SPOOF)], source=USE_PEER)
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == USE_PEER
        assert response.upstream_header("x-real-ip") == USE_PEER
        assert spoof_reached(proofs.upstream(response)) == []


# --- xff-append-not-skipped --------------------------------------------------------------------

XFF_MODES = {
    # headers.x_forwarded_for: (what the upstream's X-Forwarded-For is without, and with, the fix)
    "append": (f"{SPOOF}, {IGNORED}", IGNORED),
    "preserve": (SPOOF, None),
}


def test_xff_append_not_skipped(proofs):
    """use_remote_address true without skip_xff_append: Envoy appends the connection's source to
    X-Forwarded-For before trustip runs. For a peer of an `ignore` rule that is the PROXY claim
    trustip did not believe, and `append` and `preserve` (one listener each) pass it on."""
    rule = "xff-append-not-skipped"

    def make(skip: bool):
        return proofs.bootstrap(*[
            Listener(name=mode, skip_xff_append=skip, plugin={
                "rules": [LB_RULE, {"from": [f"{IGNORED}/32"], "proxy_protocol": "ignore"}],
                "headers": {"x_forwarded_for": mode},
            })
            for mode in XFF_MODES
        ])  # fmt: skip

    bad, fixed = proofs.pair(rule, make(False), make(True))

    with running(bad, fixed):
        for mode, (leaked, verified) in XFF_MODES.items():
            response = spoof_request(bad.port(mode), source=IGNORED)
            assert response.status == 200, response
            assert response.upstream_header("x-envoy-external-address") == IGNORED  # trustip's C
            assert response.upstream_header("x-forwarded-for") == leaked, (mode, response)

            response = spoof_request(fixed.port(mode), source=IGNORED)
            assert response.status == 200, response
            assert response.upstream_header("x-envoy-external-address") == IGNORED
            assert response.upstream_header("x-forwarded-for") == verified, (mode, response)
            assert spoof_reached(proofs.upstream(response)) == []


# --- underscore-headers-allowed ----------------------------------------------------------------


def test_underscore_headers_allowed(proofs):
    """Envoy's default forwards `X_Real_IP`, which many frameworks read as X-Real-IP; the strip
    list names the hyphenated forms. DROP_HEADER removes it before any filter."""
    rule = "underscore-headers-allowed"
    bad = proofs.bootstrap(Listener(plugin=POLICY, headers_with_underscores_action=None))
    fixed = proofs.bootstrap(Listener(plugin=POLICY, headers_with_underscores_action="DROP_HEADER"))
    bad, fixed = proofs.pair(rule, bad, fixed)

    headers = [("X_Real_IP", SPOOF), ("x-real-ip", SPOOF)]
    with running(bad, fixed) as (_, fixed_envoy):
        response = lb_request(bad.port(), headers)
        assert response.status == 200, response
        assert response.upstream_header("x_real_ip") == SPOOF
        assert response.upstream_header("x-real-ip") is None  # the hyphenated one is stripped

        response = lb_request(fixed.port(), headers)
        assert response.status == 200, response
        assert spoof_reached(proofs.upstream(response)) == []
        dropped = fixed_envoy.stats("dropped_headers_with_underscores")
        assert dropped.get("http1.dropped_headers_with_underscores") == 1, dropped


# --- trustip-filter-disabled ------------------------------------------------------------------

FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def disable_trustip_http_filter(boot, listener: str, where: str) -> None:
    """`disabled: true` on the listener's trustip HTTP filter entry (`where` "filter"), or a
    FilterConfig `disabled: true` for it in the route's typed_per_filter_config ("route")."""
    hcm = boot.listener(listener)["filter_chains"][0]["filters"][-1]["typed_config"]
    trustip = hcm["http_filters"][0]
    assert trustip["name"] in ("envoy.filters.http.wasm", names.NAMES["http_filter_name"]), trustip
    if where == "filter":
        trustip["disabled"] = True
    else:
        (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
        route["typed_per_filter_config"] = {trustip["name"]: {"@type": FILTER_CONFIG, "disabled": True}}


def test_trustip_filter_disabled(proofs):
    """The only trustip filter, the HTTP one, disabled on the HCM (`disabled: true`, no route
    enabling it) or on the route (FilterConfig `disabled: true`), one listener each: Envoy
    leaves it out, so a direct attacker's X-Real-IP and X-Forwarded-For reach the upstream as
    sent, and its PROXY claim is the client. With the filter running X-Real-IP is stripped,
    X-Forwarded-For is the attacker's own address and the claim is refused."""
    rule = "trustip-filter-disabled"
    where = ("filter", "route")
    bad = proofs.bootstrap(*[Listener(name=name, plugin=POLICY) for name in where])
    for name in where:
        disable_trustip_http_filter(bad, name, name)
    fixed = proofs.bootstrap(*[Listener(name=name, plugin=POLICY) for name in where])
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        for name in where:
            response = client.request(bad.port(name), SPOOF_HEADERS, source=ATTACKER)
            assert response.status == 200, (name, response)
            assert response.upstream_header("x-real-ip") == SPOOF, (name, response)
            assert response.upstream_header("x-forwarded-for") == SPOOF, (name, response)
            response = spoof_request(bad.port(name))
            assert response.status == 200, (name, response)
            assert response.upstream_header("x-envoy-external-address") == SPOOF, name

            response = client.request(fixed.port(name), SPOOF_HEADERS, source=ATTACKER)
            assert response.status == 200, (name, response)
            assert response.upstream_header("x-real-ip") is None, (name, response)  # stripped
            assert response.upstream_header("x-forwarded-for") == ATTACKER, (name, response)
            assert spoof_reached(proofs.upstream(response)) == [], name
            response = spoof_request(fixed.port(name))
            assert response.status == 403 and response.header("x-trustip-reject") == "untrusted_proxy", (name, response)
            assert proofs.upstream(response) is None
            response = lb_request(fixed.port(name))
            assert response.status == 200 and response.upstream_header("x-envoy-external-address") == CLIENT, response


# --- strict-proxy-health-checks ----------------------------------------------------------------


def recommended_layout(build: str) -> dict:
    """Both per-connection and per-request decisions, as rendered configurations have them."""
    if build == "native":
        return {"listener_role": True, "http_role": True, "direct_peer_format": names.DIRECT_PEER_FORMAT}
    return {"network_role": True, "http_role": True, "direct_peer_format": names.DIRECT_PEER_FORMAT}


def test_strict_proxy_health_checks(proofs, build, workdir, counters):
    """Envoy answers the load balancer's health check itself (the health_check filter), but the
    load balancer checks with plain HTTP (no PROXY header, as HAProxy does with `check port`)
    and the listener requires PROXY: Envoy resets every check, HAProxy marks the server DOWN and
    clients through it get nothing. Fixed: PROXY optional and the check path in the load
    balancer's rule (`health_check_paths`): UP, clients served."""
    rule = "strict-proxy-health-checks"
    layout = recommended_layout(build)
    bad = proofs.bootstrap(Listener(plugin=POLICY, proxy_protocol="strict", **layout))
    fixed_policy = {"rules": [{**LB_RULE, "health_check_paths": [HEALTH_PATH]}]}
    fixed = proofs.bootstrap(Listener(plugin=fixed_policy, proxy_protocol="optional", **layout))
    for boot in (bad, fixed):
        answer_health_checks(boot, HEALTH_PATH)
    bad, fixed = proofs.pair(rule, bad, fixed)

    def balancer(config: ConfigFile) -> PlainCheckHAProxy:
        return PlainCheckHAProxy(config.port(), bind_ip=LB, source_ip=LB, health_check=HEALTH_PATH,
                                 workdir=workdir("haproxy-lint-proofs")).start()  # fmt: skip

    with running(bad, fixed) as (_, fixed_envoy):
        watch = counters(fixed_envoy)
        bad_lb, fixed_lb = balancer(bad), balancer(fixed)
        try:
            row = bad_lb.wait_for_status("DOWN")
            # Envoy resets a header-less connection: HAProxy sees the reset or an empty reply.
            assert row["check_status"].removeprefix("* ") in ("L7RSP", "SOCKERR"), row
            response = client.request(bad_lb.port, source=BEHIND_LB, dest=LB)
            assert response.closed, response

            row = fixed_lb.wait_for_status("UP")
            assert row["check_status"].removeprefix("* ") == "L7OK" and row["check_code"] == "200", row
            response = client.request(fixed_lb.port, source=BEHIND_LB, dest=LB)
            assert response.status == 200, response
            assert response.upstream_header("x-envoy-external-address") == BEHIND_LB
            counted = watch.delta()
            assert counted.get("trustip.http.accept_health_check", 0) >= 1, counted
        finally:
            bad_lb.stop()
            fixed_lb.stop()


def test_strict_proxy_with_health_check_paths_depends_on_the_load_balancer(proofs, build, workdir):
    """What lint cannot see: with the path listed but PROXY still strict, lint reports no error,
    and the outcome depends on the load balancer's checks. HAProxy sending PROXY on its checks
    (a v2 LOCAL header, `check-send-proxy`) keeps Envoy UP; the same check without PROXY is
    reset and Envoy is DOWN."""
    rule = "strict-proxy-health-checks"
    policy = {"rules": [{**LB_RULE, "health_check_paths": [HEALTH_PATH]}]}
    boot = proofs.bootstrap(Listener(plugin=policy, proxy_protocol="strict", **recommended_layout(build)))
    answer_health_checks(boot, HEALTH_PATH)
    config = proofs.write(boot, name=f"{rule}-listed-but-strict")
    report = proofs.lint(config.path)
    assert rule not in report.errors and not report.errors, report

    options = dict(bind_ip=LB, source_ip=LB, health_check=HEALTH_PATH)
    with running(config):
        local = HAProxy(config.port(), workdir=workdir("haproxy-local-check"), **options).start()
        plain = PlainCheckHAProxy(config.port(), workdir=workdir("haproxy-plain-check"), **options).start()
        try:
            row = local.wait_for_status("UP")
            assert row["check_status"].removeprefix("* ") == "L7OK", row
            row = plain.wait_for_status("DOWN")
            assert row["check_status"].removeprefix("* ") in ("L7RSP", "SOCKERR"), row
        finally:
            local.stop()
            plain.stop()


def test_plain_check_haproxy_sends_no_proxy_header(workdir):
    """The load balancer of the proof above: its traffic carries PROXY v2, its checks none."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(10)
        lb = PlainCheckHAProxy(server.getsockname()[1], bind_ip=LB, source_ip=LB, health_check=HEALTH_PATH,
                               workdir=workdir("haproxy-plain-check")).start()  # fmt: skip
        try:
            connection, peer = server.accept()
            with connection:
                connection.settimeout(5)
                first = connection.recv(4096)
        finally:
            lb.stop()
    assert peer[0] == LB
    assert first.startswith(f"GET {HEALTH_PATH} HTTP/1.1\r\n".encode()), first
    assert "send-proxy-v2" in lb.config_path.read_text()


# --- upstream-proxy-unverified -----------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_backend():
    backend = ProxyBackend().start()
    yield backend
    backend.stop()


def test_upstream_proxy_unverified(proofs, build, proxy_backend, counters):
    """Envoy sends PROXY on to a backend and writes into it what its proxy_protocol filter
    parsed. An `ignore` rule's peer claims SPOOF: trustip decides C = D, the backend believes
    SPOOF. With `upstream_proxy_protocol: true` such a connection is refused
    (`proxy_not_forwardable`) and the backend never sees the claim."""
    rule = "upstream-proxy-unverified"
    policy = {"rules": [LB_RULE, {"from": [f"{IGNORED}/32"], "proxy_protocol": "ignore"}]}
    options = dict(upstream_proxy="v2", upstream_port=proxy_backend.port, **recommended_layout(build))
    bad = proofs.bootstrap(Listener(plugin=policy, **options))
    fixed = proofs.bootstrap(Listener(plugin={**policy, "upstream_proxy_protocol": True}, **options))
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed) as (_, fixed_envoy):
        response = spoof_request(bad.port(), source=IGNORED)
        assert response.status == 200, response
        header = proxy_backend.wait_for(response.test_id).header
        assert header.src == SPOOF, header  # trustip's C is IGNORED

        watch = counters(fixed_envoy)
        response = spoof_request(fixed.port(), source=IGNORED)
        assert response.closed, response
        assert proxy_backend.find(response.test_id) is None
        role = "listener" if build == "native" else "network"
        counted = watch.delta()
        assert counted.get(f"trustip.{role}.reject_proxy_not_forwardable") == 1, counted
        # The load balancer's verified client still goes upstream.
        response = lb_request(fixed.port())
        assert response.status == 200, response
        assert proxy_backend.wait_for(response.test_id).header.src == CLIENT


# --- proxy-without-trust -----------------------------------------------------------------------

TRUST_VARIANTS = {
    # listener: (the bad Listener's options, the fixed one's)
    "no-trustip-filter": ({"plugin": POLICY, "http_role": False}, {"plugin": POLICY, "http_role": True}),
    "trusts-everyone": (
        {"plugin": {"rules": [{"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "use"}]}},
        {"plugin": POLICY},
    ),
}


def test_proxy_without_trust(proofs):
    """proxy_protocol believes any peer's header: without trustip, or with a policy that trusts
    every address (one listener each), an attacker's PROXY claim becomes the client the upstream
    sees."""
    rule = "proxy-without-trust"
    bad = proofs.bootstrap(*[Listener(name=name, **options) for name, (options, _) in TRUST_VARIANTS.items()])
    fixed = proofs.bootstrap(*[Listener(name=name, **options) for name, (_, options) in TRUST_VARIANTS.items()])
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        for name in TRUST_VARIANTS:
            response = spoof_request(bad.port(name))
            assert response.status == 200, (name, response)
            assert response.upstream_header("x-envoy-external-address") == SPOOF, name

            response = spoof_request(fixed.port(name))
            assert response.status == 403 and response.header("x-trustip-reject") == "untrusted_proxy", (name, response)
            assert proofs.upstream(response) is None
            response = lb_request(fixed.port(name))
            assert response.status == 200 and response.upstream_header("x-envoy-external-address") == CLIENT, response


# --- native-listener-order ---------------------------------------------------------------------


@pytest.mark.native_only("trustip-listener is the native build's listener filter")
def test_native_listener_order(proofs, counters):
    """trustip-listener before proxy_protocol decides before any PROXY header is parsed: the
    load balancer's connections look header-less and are refused (`missing_proxy`), an
    attacker's look direct and are admitted, and proxy_protocol then makes its claim the
    client (the listener filter alone: Envoy's HCM writes the client headers)."""
    rule = "native-listener-order"
    options = dict(plugin=POLICY, proxy_protocol="strict", listener_role=True, http_role=False, skip_xff_append=False)
    bad = proofs.bootstrap(Listener(**options))
    bad.listener()["listener_filters"].reverse()
    assert bad.listener()["listener_filters"][0]["name"] == names.NAMES["listener_filter_name"]
    fixed = proofs.bootstrap(Listener(**options))
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed) as (bad_envoy, _):
        watch = counters(bad_envoy)
        response = lb_request(bad.port())
        assert response.closed, response
        response = spoof_request(bad.port())
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == SPOOF
        assert response.upstream_header("x-forwarded-for") == SPOOF
        counted = watch.delta()
        assert counted == {"trustip.listener.reject_missing_proxy": 1, "trustip.listener.accept_direct": 1}, counted

        response = lb_request(fixed.port())
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == CLIENT
        response = spoof_request(fixed.port())
        assert response.closed, response
        assert proofs.upstream(response) is None


# --- native-policy-mismatch --------------------------------------------------------------------


@pytest.mark.native_only("the native filters compare the policy's bytes; the wasm roles are the previous rules")
def test_native_policy_mismatch(proofs):
    """trustip-listener and trustip-http given the same policy written differently: the HTTP
    filter does not take the listener's decision (another policy, by its bytes), decides again
    from the TCP peer alone (P = D), and refuses the load balancer's clients `missing_proxy`."""
    rule = "native-policy-mismatch"
    options = dict(plugin=POLICY, listener_role=True, http_role=True, direct_peer_format=names.DIRECT_PEER_FORMAT)
    bad = proofs.bootstrap(Listener(**options))
    (listener_filter,) = (f for f in bad.listener()["listener_filters"] if f["name"] == names.NAMES["listener_filter_name"])
    config = listener_filter["typed_config"]["filter_config"]
    respelled = json.dumps(json.loads(config["value"]), indent=2)
    assert json.loads(respelled) == json.loads(config["value"]) and respelled != config["value"]
    config["value"] = respelled
    fixed = proofs.bootstrap(Listener(**options))
    bad, fixed = proofs.pair(rule, bad, fixed)

    with running(bad, fixed):
        response = lb_request(bad.port())
        assert response.status == 403 and response.header("x-trustip-reject") == "missing_proxy", response
        assert proofs.upstream(response) is None

        response = lb_request(fixed.port())
        assert response.status == 200, response
        assert response.upstream_header("x-envoy-external-address") == CLIENT
