"""`trustip explain` agrees with the filter in real Envoy (issue 3, "Done when").

One table of cases: a policy, the direct peer (the loopback address the client binds), the PROXY
header (none, v1, or v2 with a source and TLVs) and the request headers. For each case the test
runs `trustip explain --json` (HTTP role, and network role) on the same inputs and sends the same
request through Envoy running the bootstrap `trustip render --target envoy` printed for that
policy (loopback ports, the built wasm) to the recording upstream. They must agree on the action
(accept = 200; reject = the connection closed by the network role), on the client (`client_ip` =
the upstream's x-envoy-external-address), on every header explain reports (its value, or absent
when explain says null), and on the reasons Envoy's access logs print: in every case the
listener's line for the connection (for a connection the network role closed: its reason, as
`explain --role network` gives it), and for an accepted request the HCM's line.

explain's --peer has no port: the filter compares address and port to tell whether a PROXY header
was used, so "no PROXY" cases simply omit --proxy."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from cli_support import RenderedEnvoy, cli, render_envoy, scratch_dir, write_policy  # noqa: F401
from harness import client, names

VPCE_OK, VPCE_BAD = "vpce-0a1b2c3d4e5f", "vpce-0badbadbad00"

POLICIES = {
    # Each proxy_protocol word, TLV allow-lists, an XFF walk through 10/8, TLV headers.
    "main": {
        "rules": [
            {"from": ["127.0.0.5/32"], "proxy_protocol": "require"},
            {"from": ["127.0.0.6/32"], "proxy_protocol": "use"},
            {"from": ["127.0.0.7/32"], "proxy_protocol": "ignore"},
            {"from": ["127.0.0.8/32"], "proxy_protocol": "deny"},
            {"from": ["127.0.0.9/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": [VPCE_OK]}},
            {"from": ["127.0.0.10/32"], "proxy_protocol": "require", "tlvs": {"azure_link_id": ["42", "43"]}},
        ],
        "xff": {"trusted": ["10.0.0.0/8"]},
        "headers": {"tlv": {"aws_vpce_id": "x-vpce-id", "azure_link_id": "x-azure-link-id"}},
    },
    "shadow": {
        "mode": "shadow",
        "rules": [
            {"from": ["127.0.0.5/32"], "proxy_protocol": "require"},
            {"from": ["127.0.0.8/32"], "proxy_protocol": "deny"},
            {"from": ["127.0.0.9/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": [VPCE_OK]}},
        ],
        "xff": {"trusted": ["10.0.0.0/8"]},
    },
    # The other header modes.
    "headers": {
        "rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require"}],
        "xff": {"trusted": ["10.0.0.0/8"]},
        "headers": {
            "x_forwarded_for": "append",
            "forwarded": "overwrite",
            "set": ["x-envoy-external-address", "x-real-ip"],
            "strip": ["true-client-ip", "cf-connecting-ip"],
            "tlv": {"authority": "x-lb-authority", "unique_id": "x-lb-request-id", "gcp_psc_connection_id": "x-psc-id"},
        },
    },
    # Binary TLV values (bytes >= 0x80) kept intact by value_string_encoding: BASE64, which
    # render emits for this policy.
    "base64": {
        "tlv_encoding": "base64",
        "rules": [
            {"from": ["127.0.0.22/32"], "proxy_protocol": "require", "tlvs": {"gcp_psc_connection_id": [str(1234567890123456789)]}},
            {"from": ["127.0.0.21/32"], "proxy_protocol": "require", "tlvs": {"azure_link_id": [str(0x9ABCDEF0)]}},
        ],
        "headers": {"tlv": {"gcp_psc_connection_id": "x-psc-id", "azure_link_id": "x-azure-link-id"}},
    },
    "preserve": {
        "rules": [{"from": ["127.0.0.6/32"], "proxy_protocol": "use"}],
        "headers": {"x_forwarded_for": "preserve", "forwarded": "append", "strip": []},
    },
    "remove": {
        "rules": [{"from": ["127.0.0.6/32"], "proxy_protocol": "use"}],
        "headers": {"x_forwarded_for": "remove"},
    },
    # The load balancer's health checks: no client information (no header, v2 LOCAL, v1
    # UNKNOWN) admitted as C = D on the listed path only; the load balancer is trusted for
    # X-Forwarded-For, yet its health checks' own X-Forwarded-For is not walked.
    "health": {
        "rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require", "health_check_paths": ["/healthz/ready"]}],
        "xff": {"trusted": ["127.0.0.5/32"]},
        "headers": {"set": ["x-envoy-external-address", "x-real-ip"]},
    },
}


@dataclass
class Case:
    name: str
    policy: str
    peer: str
    proxy: str | None = None  # "v1" | "v2"
    source: str = "203.0.113.10"
    source_port: int = 4000
    tlvs: dict[str, str] = field(default_factory=dict)  # decoded form, as explain takes them
    headers: list[tuple[str, str]] = field(default_factory=list)
    # The request path (a query naming the case keeps access-log lines apart); None:
    # /explain/<name>. proxy "local" / "unknown": a v2 LOCAL header or a v1 UNKNOWN line.
    path: str | None = None


XFF = "x-forwarded-for"
# Binary TLV values here keep every byte below 0x80: Envoy 1.40 stores TLVs in filter state as
# UTF-8-sanitized strings (a byte >= 0x80 becomes '!'), which explain cannot know (test_tlv.py).
# fmt: off
CASES = [
    # require / use / ignore / deny / the implicit last rule (reject)
    Case("require-v2", "main", "127.0.0.5", "v2"),
    Case("require-v1", "main", "127.0.0.5", "v1", source="198.51.100.3"),
    Case("require-missing", "main", "127.0.0.5"),
    Case("use-with-proxy", "main", "127.0.0.6", "v2", headers=[(XFF, "6.6.6.6")]),
    Case("use-without-proxy", "main", "127.0.0.6", headers=[(XFF, "6.6.6.6")]),
    Case("ignore-drops-proxy", "main", "127.0.0.7", "v1"),
    Case("deny-plain", "main", "127.0.0.8"),
    Case("deny-with-proxy", "main", "127.0.0.8", "v2"),
    Case("stranger-with-proxy", "main", "127.0.0.66", "v2", source="203.0.113.66"),
    Case("stranger-with-proxy-v1", "main", "127.0.0.66", "v1", source="203.0.113.66"),
    Case("stranger-plain-spoofs-headers", "main", "127.0.0.66", headers=[
        (XFF, "1.2.3.4"), ("X-Real-IP", "1.2.3.4"), ("True-Client-IP", "1.2.3.4"),
        ("Forwarded", "for=1.2.3.4"), ("x-envoy-external-address", "1.2.3.4"), ("x-vpce-id", VPCE_OK)]),
    # TLV allow / deny, TLV headers never taken from the client
    Case("tlv-allowed", "main", "127.0.0.9", "v2", tlvs={"aws_vpce_id": VPCE_OK}, headers=[("x-vpce-id", "forged")]),
    Case("tlv-not-allowed", "main", "127.0.0.9", "v2", tlvs={"aws_vpce_id": VPCE_BAD}),
    Case("tlv-absent", "main", "127.0.0.9", "v2"),
    Case("tlv-without-proxy", "main", "127.0.0.9"),
    Case("tlv-azure-allowed", "main", "127.0.0.10", "v2", tlvs={"azure_link_id": "43"}),
    Case("tlv-azure-denied", "main", "127.0.0.10", "v2", tlvs={"azure_link_id": "7"}),
    Case("tlv-header-forged-rule-without-tlvs", "main", "127.0.0.5", "v2", headers=[("x-vpce-id", "forged")]),
    Case("tlv-header-from-proxy", "main", "127.0.0.5", "v2", tlvs={"aws_vpce_id": VPCE_BAD}),
    # the XFF walk (C trusted when it is in 10/8)
    Case("xff-walk", "main", "127.0.0.5", "v2", source="10.1.2.3", headers=[(XFF, "198.51.100.20, 10.9.9.9")]),
    Case("xff-all-trusted", "main", "127.0.0.5", "v2", source="10.1.2.3", headers=[(XFF, "10.0.0.1, 10.0.0.2")]),
    Case("xff-malformed", "main", "127.0.0.5", "v2", source="10.1.2.3", headers=[(XFF, "198.51.100.20, bogus, 10.9.9.9")]),
    Case("xff-two-lines", "main", "127.0.0.5", "v2", source="10.1.2.3", headers=[(XFF, "198.51.100.21"), (XFF, "10.7.7.7")]),
    Case("xff-port-and-brackets", "main", "127.0.0.5", "v2", source="10.1.2.3", headers=[(XFF, "[2001:db8::7]:443, 10.0.0.4:8080")]),
    Case("xff-not-walked", "main", "127.0.0.5", "v2", headers=[(XFF, "198.51.100.20")]),
    Case("xff-direct-trusted-peer", "main", "127.0.0.6", headers=[(XFF, "10.1.1.1")]),
    Case("ipv6-proxy-source", "main", "127.0.0.5", "v2", source="2001:db8::10"),
    Case("ipv4-mapped-proxy-source", "main", "127.0.0.5", "v2", source="::ffff:203.0.113.9"),
    # shadow mode: would-be rejections are only counted
    Case("shadow-stranger-with-proxy", "shadow", "127.0.0.66", "v2", source="203.0.113.66", headers=[(XFF, "6.6.6.6")]),
    Case("shadow-missing-proxy", "shadow", "127.0.0.5"),
    Case("shadow-deny", "shadow", "127.0.0.8", "v1"),
    Case("shadow-tlv", "shadow", "127.0.0.9", "v2", tlvs={"aws_vpce_id": VPCE_BAD}),
    Case("shadow-accept-walks", "shadow", "127.0.0.5", "v2", source="10.1.2.3", headers=[(XFF, "198.51.100.20")]),
    # header modes
    Case("append-forwarded-set", "headers", "127.0.0.5", "v2", source="10.1.2.3", headers=[
        (XFF, "198.51.100.7"), ("Forwarded", "for=6.6.6.6"), ("X-Real-IP", "6.6.6.6"), ("True-Client-IP", "6.6.6.6"),
        ("X-Client-IP", "6.6.6.6")]),
    Case("append-untrusted-c", "headers", "127.0.0.5", "v1", headers=[(XFF, "198.51.100.7"), ("CF-Connecting-IP", "6.6.6.6")]),
    Case("tlv-headers-authority-unique-id-gcp", "headers", "127.0.0.5", "v2",
         tlvs={"authority": "api.example.com", "unique_id": "00112233445566770a1b2c3d4e5f6071", "gcp_psc_connection_id": str(0x0102030405060708)},
         headers=[("x-lb-authority", "forged"), ("x-lb-request-id", "forged")]),
    Case("tlv-headers-removed-when-absent", "headers", "127.0.0.5", "v2", headers=[("x-lb-authority", "forged"), ("x-psc-id", "1")]),
    Case("base64-gcp-allowed", "base64", "127.0.0.22", "v2", tlvs={"gcp_psc_connection_id": str(1234567890123456789)}),
    Case("base64-gcp-denied", "base64", "127.0.0.22", "v2", tlvs={"gcp_psc_connection_id": str(1234567890123456788)}),
    Case("base64-azure-allowed", "base64", "127.0.0.21", "v2", tlvs={"azure_link_id": str(0x9ABCDEF0)}),
    Case("preserve-and-forwarded-append", "preserve", "127.0.0.6", "v2", headers=[(XFF, "6.6.6.6"), ("Forwarded", "for=6.6.6.6")]),
    Case("preserve-stranger", "preserve", "127.0.0.66", headers=[(XFF, "6.6.6.6"), ("X-Real-IP", "6.6.6.6")]),
    Case("remove-xff", "remove", "127.0.0.6", "v1", headers=[(XFF, "6.6.6.6")]),
    Case("health-local-v2", "health", "127.0.0.5", "local", path="/healthz/ready?case=local-v2",
         headers=[(XFF, "6.6.6.6"), ("X-Real-IP", "6.6.6.6")]),
    Case("health-unknown-v1", "health", "127.0.0.5", "unknown", path="/healthz/ready?case=unknown-v1"),
    Case("health-no-header", "health", "127.0.0.5", path="/healthz/ready?case=no-header"),
    Case("health-local-other-path", "health", "127.0.0.5", "local", path="/orders?case=local-other"),
    Case("health-proxy-used-as-always", "health", "127.0.0.5", "v2", path="/orders?case=proxy"),
    Case("health-proxy-from-lb-walks", "health", "127.0.0.5", "v2", source="127.0.0.5", source_port=4001,
         path="/orders?case=proxy-walk", headers=[(XFF, "198.51.100.9")]),
    Case("health-local-stranger", "health", "127.0.0.66", "local", path="/healthz/ready?case=stranger"),
]
# fmt: on


def _tlv_bytes(tlvs: dict[str, str]) -> list[bytes]:
    encoders = {
        "aws_vpce_id": lambda v: client.aws_vpce_tlv(v),
        "azure_link_id": lambda v: client.azure_link_tlv(int(v)),
        "gcp_psc_connection_id": lambda v: client.gcp_psc_tlv(int(v)),
        "authority": lambda v: client.tlv(client.PP2_TYPE_AUTHORITY, v.encode()),
        "unique_id": lambda v: client.tlv(client.PP2_TYPE_UNIQUE_ID, bytes.fromhex(v)),
    }
    return [encoders[key](value) for key, value in tlvs.items()]


def proxy_header(case: Case) -> bytes:
    destination = "2001:db8::1" if ":" in case.source else "10.0.0.1"
    if case.proxy == "v1":
        return client.proxy_v1(case.source, destination, case.source_port, 80)
    if case.proxy == "v2":
        return client.proxy_v2(case.source, destination, case.source_port, 80, tlvs=_tlv_bytes(case.tlvs))
    if case.proxy == "local":
        return client.proxy_v2(command="LOCAL")
    if case.proxy == "unknown":
        return client.proxy_v1_unknown()
    assert not case.tlvs, "TLVs travel in a PROXY v2 header"
    return b""


def explain_args(case: Case, policy_path, *, peer: str | None = None) -> list[str]:
    args = ["explain", "--config", str(policy_path), "--peer", peer or case.peer, "--json"]
    if case.path:
        args += ["--path", case.path]
    # A LOCAL or UNKNOWN header carries no client information: explain is given no --proxy.
    if case.proxy in ("v1", "v2"):
        host = f"[{case.source}]" if ":" in case.source else case.source
        args += ["--proxy", f"{host}:{case.source_port}"]
    for key, value in case.tlvs.items():
        args += ["--tlv", f"{key}={value}"]
    for name, value in case.headers:
        args += ["--header", f"{name}: {value}"]
    return args


@pytest.fixture(scope="module")
def policy_files():
    directory = scratch_dir("explain")
    return {name: write_policy(directory, name, policy) for name, policy in POLICIES.items()}


@pytest.fixture(scope="module")
def envoys(cli, policy_files, echo, wasm):  # noqa: F811
    """One Envoy per policy, each running the bootstrap `trustip render` printed, as printed."""
    started = {}
    try:
        for name, path in policy_files.items():
            text, port = render_envoy(cli, path, echo.port, wasm=wasm)
            instance = RenderedEnvoy(text, name=f"explain-{name}")
            instance.start()
            started[name] = (instance, port)
        yield started
    finally:
        for instance, _ in started.values():
            instance.stop()


def _access_log_line(instance: RenderedEnvoy, needle: str, timeout: float = 5.0) -> str:
    """The rendered access logs go to Envoy's stdout (the harness keeps it in stderr_path)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = instance.stderr_path.read_text(errors="replace")
        for line in text.splitlines():
            if needle in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no access log line with {needle!r} in {instance.stderr_path}")
        time.sleep(0.05)


def _connection_line(instance: RenderedEnvoy, peer: str, local_port: int) -> str:
    """The listener access log's line for one connection, found by its direct peer D (the
    client's bound address and source port). Written when the connection closes."""
    return _access_log_line(instance, f" connection direct_peer={peer}:{local_port} ")


def test_every_policy_and_word_is_covered():
    words = {rule["proxy_protocol"] for policy in POLICIES.values() for rule in policy.get("rules", [])}
    assert {"require", "use", "ignore", "deny"} <= words  # reject: the implicit last rule
    assert any(case.peer == "127.0.0.66" and case.proxy for case in CASES)
    assert {case.policy for case in CASES} == set(POLICIES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_explain_agrees_with_envoy(case: Case, cli, policy_files, envoys, echo):  # noqa: F811
    http = cli.run(*explain_args(case, policy_files[case.policy]), expect=None)
    assert http.code in (0, 1), http
    said = http.json()
    assert (said["action"] == "accept") == (http.code == 0), http
    network = cli.run(*explain_args(case, policy_files[case.policy]), "--role", "network", expect=None)
    # The roles agree, except that a health-check connection is admitted by the network role and
    # only its health-check paths by the HTTP role.
    if network.json()["reason"] != "health_check":
        assert network.json()["action"] == said["action"], network

    instance, port = envoys[case.policy]
    path = case.path or f"/explain/{case.name}"
    before = instance.stats()
    response = client.request(port, case.headers, source=case.peer, proxy=proxy_header(case), path=path)

    network_said = network.json()
    if network_said["action"] == "reject":
        # Both roles are loaded: the network role closes the connection before HTTP.
        assert response.closed, (said, response)
        assert echo.find(response.test_id) is None
    elif said["action"] == "reject":
        # The connection is admitted (a health check) and the HTTP role refuses the request.
        assert response.status == said["status"], (said, response)
        assert response.header(names.NAMES["reject_header"]) == said["reason"], response
        assert echo.find(response.test_id) is None
    else:
        assert response.status == 200, (said, response)
        upstream = echo.wait_for(response.test_id)
        assert said["client_ip"] == upstream.text("x-envoy-external-address"), (said, upstream.headers)
        for name, value in said["headers"].items():
            assert upstream.text(name) == value, (name, said, upstream.headers)
        line = _access_log_line(instance, f" {path} ")
        assert f" reason={said['reason']} " in line + " ", (said, line)
        assert f" client={said['client_ip']} " in line, (said, line)
        if said["mode"] == "shadow" and said["shadow_rejection"]:
            assert said["reason"] == f"shadow_{said['shadow_rejection']}"
    # Every case, a closed connection included: the listener's line for the connection. The
    # roles publish into the connection's filter state, the last one wins: the network role's
    # decision for a connection it closed, the HTTP role's once a request was decided.
    last = network_said if network_said["action"] == "reject" else said
    line = _connection_line(instance, case.peer, response.local_port)
    assert f" reason={last['reason']} " in line, (last, line)
    # A request the HTTP role refused leaves the connection's client as the network role
    # published it (a health-check connection, C = D).
    client_ip = last["client_ip"] or (network_said["client_ip"] if network_said["action"] == "accept" else None)
    assert f" client={client_ip or '-'} " in line, (last, line)
    if network_said["action"] == "reject":
        assert network_said["reason"] == said["reason"], (said, network_said)

    # The counters Envoy moved are the ones explain lists: the network role's for the
    # connection, then the HTTP role's for the request when the connection went on.
    after = instance.stats()
    moved = Counter(
        {
            name.removeprefix(names.WASM_STATS_PREFIX): after.get(name, 0) - before.get(name, 0)
            for name in set(after) | set(before)
            if after.get(name, 0) != before.get(name, 0)
        }
    )
    expected = Counter(network_said["counters"])
    if network_said["action"] == "accept":
        expected += Counter(said["counters"])
    assert moved == expected, (said, network_said)

    # The log lines Envoy wrote are the ones explain prints (given the connection's real port).
    peer_with_port = f"{case.peer}:{response.local_port}"
    for role, ran in (("network", True), ("http", network_said["action"] == "accept")):
        run = cli.run(*explain_args(case, policy_files[case.policy], peer=peer_with_port), "--role", role, expect=None)
        log = run.json()["log"]
        if log is None or not ran:
            continue
        body = log.split("]: ", 1)[1]
        deadline = time.monotonic() + 5
        while not any(
            f"trustip[{role} ctx " in line and line.endswith(f"]: {body}")
            for line in instance.log_text().splitlines()
        ):
            assert time.monotonic() < deadline, (role, log)
            time.sleep(0.05)


def test_explain_text_says_shadow(cli, policy_files):  # noqa: F811
    run = cli.run("explain", "--config", policy_files["shadow"], "--peer", "127.0.0.66", "--proxy", "203.0.113.66:1")
    assert run.out.startswith("ACCEPT (shadow_untrusted_proxy)"), run
    assert "shadow mode" in run.out, run
    assert re.search(r"client R:\s+127\.0\.0\.66", run.out), run
