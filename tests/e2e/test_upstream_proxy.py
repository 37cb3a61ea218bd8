"""Outbound PROXY (issue 9, part 2): what a backend behind Envoy's
`envoy.transport_sockets.upstream_proxy_protocol` receives, for every rule word, with and without
`upstream_proxy_protocol`, in shadow mode, and for a request whose client came from the
X-Forwarded-For walk, in both builds.

Envoy writes the outbound header from the filter-state record `envoy.network.proxy_protocol.options`:
the proxy_protocol listener filter creates it from a header it parsed (source = the header's P,
whatever trustip decided), otherwise the HCM or tcp_proxy creates it from the connection's
addresses. trustip cannot replace that record, so `upstream_proxy_protocol: true` makes it refuse
the one case where the record would hold an address it did not verify (an `ignore` rule's header:
`proxy_not_forwardable`), and refuses shadow mode with it.

Two backends read the header: the Python one in harness/proxy_backend.py (parses v1/v2 by hand,
TLVs too) and HAProxy 2.6 with `accept-proxy` (logs `%ci`, the address it believes). Layouts:
- HTTP: wasm network + HTTP roles before the HCM; native trustip-listener + trustip-http.
- TCP: wasm network role before tcp_proxy; native trustip-listener before tcp_proxy.
Each (policy, layout) runs with the outbound header in v1 and in v2 (the inbound header of a row
has the same version) and with each backend; the measured table keeps one cell per layout only
when all four agree (otherwise the cell says which differ). The table must equal the one in
docs/outbound-proxy.md, for both builds: the doc cannot drift from what this module measures.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

import pytest

from harness import client, names
from harness.envoy import REPO, EnvoyWithListeners, Listener, wait_for_line
from harness.haproxy_backend import HAProxyBackend
from harness.proxy_backend import ProxyBackend

LB = "127.0.0.11"  # require
USE = "127.0.0.12"
IGNORE = "127.0.0.13"
REJECT = "127.0.0.14"  # an explicit reject rule (the implicit one behaves the same)
DENY = "127.0.0.15"
DIRECT = "127.0.0.66"  # no rule: the implicit reject
CLIENT = "127.0.0.42"  # a client behind the HAProxy load balancer
CLAIM = "203.0.113.9"  # P: the source a hand-built PROXY header claims
HEADER_DST = "10.0.0.1"  # the destination the hand-built header claims
CDN = "198.51.100.7"  # a CDN edge, trusted for X-Forwarded-For, as P
WALKED = "203.0.113.50"  # the client the CDN names in X-Forwarded-For: R
VPCE = "vpce-0a1b2c3d4e5f60718"

PEERS = {"require": LB, "use": USE, "ignore": IGNORE, "reject": REJECT, "deny": DENY}
RULES = [{"from": [f"{peer}/32"], "proxy_protocol": word} for word, peer in PEERS.items()] + [
    {"from": ["::1/128"], "proxy_protocol": "use"}
]
BASE = {"rules": RULES, "xff": {"trusted": ["198.51.100.0/24"]}}
POLICIES = {
    "without": BASE,
    "with": {**BASE, "upstream_proxy_protocol": True},
    "shadow": {**BASE, "mode": "shadow"},
}
POLICY_LABELS = {
    "without": "enforce, without `upstream_proxy_protocol`",
    "with": "enforce, `upstream_proxy_protocol: true`",
    "shadow": "shadow, without `upstream_proxy_protocol`",
    "shadow+field": "shadow, `upstream_proxy_protocol: true`",
}
TLV_POLICY = {
    "upstream_proxy_protocol": True,
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": [VPCE]}}],
}
LAYOUTS = ("http", "tcp")
VERSIONS = ("v1", "v2")
BACKENDS = ("python", "haproxy")
DOC = REPO / "docs" / "outbound-proxy.md"
TABLE_START, TABLE_END = "<!-- measured-table:start -->", "<!-- measured-table:end -->"


@dataclass(frozen=True)
class Row:
    """One line of the table: the rule word the peer matches, what the connection starts with
    ("PROXY": a header claiming CLAIM; "none"; "PROXY + XFF": a header naming the CDN edge and
    an X-Forwarded-For naming WALKED), and the policy."""

    rule: str
    header: str
    policy: str


ROWS = [Row(word, header, policy) for policy in ("without", "with", "shadow") for word in PEERS for header in ("PROXY", "none")]
ROWS += [Row("require", "PROXY + XFF", "without"), Row("require", "PROXY + XFF", "with")]


def layout_options(build: str, layout: str) -> dict:
    """The filters of a layout in one build (module docstring)."""
    native = build == "native"
    return {
        "network_role": not native,
        "listener_role": native,
        "http_role": layout == "http",
        "tcp_proxy": layout == "tcp",
        "direct_peer_format": names.DIRECT_PEER_FORMAT,
        "connection_log": True,
        "access_log": True,
    }


def listener_name(policy: str, layout: str, version: str, backend: str) -> str:
    return f"{policy}-{layout}-{version}-{backend}"


@pytest.fixture(scope="module")
def proxy_backend():
    backend = ProxyBackend().start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def haproxy_backend(workdir):
    backend = HAProxyBackend(workdir=workdir("haproxy-backend")).start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def envoy(start_envoy, build, proxy_backend, haproxy_backend):
    ports = {"python": proxy_backend.port, "haproxy": haproxy_backend.port}
    listeners = [
        Listener(
            name=listener_name(policy, layout, version, backend),
            plugin=POLICIES[policy],
            upstream_proxy=version,
            upstream_port=ports[backend],
            **layout_options(build, layout),
        )
        for policy in ("without", "with", "shadow")
        for layout in LAYOUTS
        for version in VERSIONS
        for backend in BACKENDS
    ]
    tlv = {"plugin": TLV_POLICY, "upstream_proxy": "v2", **layout_options(build, "http")}
    listeners += [
        # The allowlisted VPC endpoint id kept by proxy_protocol and written upstream.
        Listener(name="tlv-pass", upstream_port=proxy_backend.port, proxy_pass_through_tlvs=[0xEA],
                 upstream_pass_through_tlvs=[0xEA], **tlv),
        # Neither pass_through_tlvs: Envoy writes no TLV.
        Listener(name="tlv-none", upstream_port=proxy_backend.port, **tlv),
        # A real load balancer's unique-id TLV (0x05) to HAProxy's accept-proxy backend.
        Listener(name="tlv-uid", upstream_port=haproxy_backend.port, proxy_pass_through_tlvs=[0x05],
                 upstream_pass_through_tlvs=[0x05], **{**tlv, "plugin": POLICIES["with"]}),
    ]  # fmt: skip
    # The HTTP role alone (no per-connection filter): a refusal is the 403 local reply.
    listeners += [
        Listener(name=f"http-alone-{policy}", plugin=POLICIES[policy], upstream_proxy="v2",
                 upstream_port=proxy_backend.port, direct_peer_format=names.DIRECT_PEER_FORMAT)
        for policy in ("without", "with")
    ]  # fmt: skip
    # The HCM told not to record the connection's addresses: the socket has no record at all.
    listeners += [
        Listener(name=f"no-record-{version}", plugin=POLICIES["with"], upstream_proxy=version,
                 upstream_port=proxy_backend.port, add_proxy_protocol_connection_state=False,
                 **layout_options(build, "http"))
        for version in VERSIONS
    ]  # fmt: skip
    return start_envoy(*listeners)


# --- measuring one row ---------------------------------------------------------------------


@dataclass
class Observation:
    """One request of one row through one listener: what trustip decided and what the backend
    received (`src`: the PROXY source it believed; None when no connection reached it)."""

    row: Row
    layout: str
    version: str
    backend: str
    peer: str
    closed: bool
    status: int | None
    reason: str | None  # trustip's reason (the reject reason when closed)
    # trustip's connection client C: the address its per-connection decision names (counter
    # accept_proxy: the PROXY source Envoy applied; accept_direct and shadow_*: the peer D)
    c: str | None
    # What the connection log's filter state published (checked against c; in the wasm build
    # the HTTP role publishes under the same name, so after a walk it holds R and xff).
    logged_c: str | None
    logged_reason: str | None
    r: str | None  # the request client R (HTTP layout), from the HCM access log
    r_reason: str | None
    src: str | None  # what the backend believed
    header_kind: str | None  # "v1" | "v2" as the Python backend parsed it (None for HAProxy)
    after: bytes = b""  # the Python backend: the bytes after the header
    test_id: str = ""

    def symbol(self, address: str | None) -> str:
        """An address as the table names it: D (the peer), P (the header's source), R."""
        if address is None:
            return "-"
        proxy_source = CDN if self.row.header == "PROXY + XFF" else CLAIM
        return {self.peer: "D", proxy_source: "P", WALKED: "R"}.get(address, address)

    def trustip_cell(self) -> str:
        if self.closed:
            return f"closed ({self.reason})"
        if self.status != 200:
            return f"{self.status} ({self.reason})"
        cell = f"C = {self.symbol(self.c)} ({self.reason})"
        if self.r is not None and self.r != self.c:
            cell += f"; request client {self.symbol(self.r)} ({self.r_reason})"
        return cell

    def backend_cell(self) -> str:
        if self.src is None:
            return "nothing"
        if self.closed or self.status != 200:
            return f"{self.symbol(self.src)} despite the rejection"
        if self.src != self.c:
            return f"{self.symbol(self.src)}, not C: leak"
        return self.symbol(self.src)


def _counter_snapshot(envoy) -> dict[str, int]:
    """All trustip counters of either build (wasm `wasmcustom.trustip.*`, native `trustip.*` and
    the listener filter's per-listener `listener.<address>.trustip.listener.*`)."""
    return envoy.stats("trustip")


def _connection_outcome(before: dict[str, int], after: dict[str, int]) -> str | None:
    """The per-connection role's decision counter that moved (network role in wasm, listener
    filter in native): accept_proxy, accept_direct, shadow_<reason> or reject_<reason>. The
    table reads C from it because it is the same in both builds and both layouts."""
    moved = [name for name in after if after[name] != before.get(name, 0)]
    outcomes = {
        name.rsplit(".", 1)[1]
        for name in moved
        if re.search(r"trustip\.(network|listener)\.(accept|shadow|reject)_", name)
    }
    # Shadow mode counts both the would-be rejection and what it did instead (accept_direct).
    shadow = {outcome for outcome in outcomes if outcome.startswith("shadow_")}
    outcomes = shadow or outcomes
    assert len(outcomes) <= 1, moved
    return outcomes.pop() if outcomes else None


def _log_value(line: str, key: str) -> str:
    match = re.search(rf"\b{key}=(\S*)", line)
    assert match, (key, line)
    return match.group(1)


def send(row: Row, version: str, port: int, *, peer: str | None = None) -> client.Response:
    """The row's request: its PROXY header (of `version`) and X-Forwarded-For, from its peer."""
    peer = peer or PEERS[row.rule]
    headers = []
    proxy = b""
    if row.header != "none":
        source = CDN if row.header == "PROXY + XFF" else CLAIM
        build_header = client.proxy_v1 if version == "v1" else client.proxy_v2
        proxy = build_header(source, HEADER_DST, 4444, 80)
    if row.header == "PROXY + XFF":
        headers.append(("x-forwarded-for", WALKED))
    return client.request(port, headers, source=peer, proxy=proxy, timeout=5)


def measure(envoy, row: Row, layout: str, version: str, backend: str, backends: dict) -> Observation:
    spec = envoy.listeners[listener_name(row.policy, layout, version, backend)]
    python, haproxy = backends["python"], backends["haproxy"]
    peer = PEERS[row.rule]
    before = _counter_snapshot(envoy)
    python_count, haproxy_lines = python.count, len(haproxy.output_text().splitlines())
    response = send(row, version, spec.port)
    after = _counter_snapshot(envoy)
    obs = Observation(row, layout, version, backend, peer, response.closed, response.status,
                      None, None, None, None, None, None, None, None)  # fmt: skip
    obs.test_id = response.test_id
    outcome = _connection_outcome(before, after)
    if response.closed or response.status != 200:
        if outcome and outcome.startswith("reject_"):
            obs.reason = outcome.removeprefix("reject_")
        else:
            obs.reason = response.header(names.REJECT_HEADER) or f"no reject counter ({outcome})"
        # Nothing may reach the backend: no connection (Python), no log line (HAProxy).
        if backend == "python" and python.count != python_count:
            header = python.wait_for_index(python_count, done=False).header
            obs.src = (header.src or f"{header.command} {header.family}") if header else "a connection"
        if backend == "haproxy" and len(haproxy.output_text().splitlines()) != haproxy_lines:
            found = haproxy.find(response.test_id)
            obs.src = found.ci if found else "something"
        return obs
    line = wait_for_line(spec.connection_log, f"direct={peer}:{response.local_port} ")
    obs.logged_c, obs.logged_reason = _log_value(line, "client_ip"), _log_value(line, "reason")
    if outcome == "accept_proxy":
        obs.c, obs.reason = _log_value(line, "source").rsplit(":", 1)[0], "proxy"
    elif outcome == "accept_direct":
        obs.c, obs.reason = peer, "direct"
    elif outcome and outcome.startswith("shadow_"):
        obs.c, obs.reason = peer, outcome
    else:
        obs.reason = f"no decision counter ({outcome})"
    if layout == "http":
        line = wait_for_line(spec.access_log, response.test_id)
        obs.r, obs.r_reason = _log_value(line, "client_ip"), _log_value(line, "reason")
    if backend == "python":
        record = python.wait_for(response.test_id)
        header = record.header
        # A header without addresses (v2 LOCAL, v1 UNKNOWN) is named as such, not as "nothing".
        obs.src = header.src or f"{header.command} {header.family}"
        obs.header_kind, obs.after = header.kind, record.after
    else:
        obs.src = haproxy.wait_for(response.test_id).ci
    return obs


def shadow_with_the_field_refused(build: str, layout: str, workdir, echo_port: int) -> tuple[bool, str]:
    """Starts an Envoy whose only listener has shadow mode and the field: (refused, output)."""
    spec = Listener(name="refused", build=build, plugin={**BASE, "mode": "shadow", "upstream_proxy_protocol": True},
                    upstream_proxy="v2", **layout_options(build, layout))  # fmt: skip
    instance = EnvoyWithListeners([spec], upstream_port=echo_port, name=f"refused-{layout}", workdir=workdir(f"refused-{layout}"))
    code = instance.run_to_exit(timeout=60)
    output = instance.output_text()
    refused = code not in (None, 0) and "trustip: invalid configuration: upstream_proxy_protocol" in output
    return refused, output


@dataclass
class Measurement:
    observations: list[Observation]
    refused: dict[str, tuple[bool, str]]  # layout -> (shadow + field refused, Envoy's output)

    def cell(self, row: Row, layout: str, kind: str) -> str:
        """One cell: the value every version and backend agreed on, or each one's value."""
        values = {}
        for obs in self.observations:
            if obs.row == row and obs.layout == layout:
                values[f"{obs.version}/{obs.backend}"] = obs.trustip_cell() if kind == "trustip" else obs.backend_cell()
        distinct = set(values.values())
        if len(distinct) == 1:
            return distinct.pop()
        return "; ".join(f"{key}: {value}" for key, value in sorted(values.items()))

    def table(self) -> list[list[str]]:
        rows = []
        for row in ROWS:
            cells = [row.rule, row.header, POLICY_LABELS[row.policy]]
            for layout in LAYOUTS:
                cells += [self.cell(row, layout, "trustip"), self.cell(row, layout, "backend")]
            rows.append(cells)
        refused = ["configuration refused" if self.refused[layout][0] else "configuration accepted" for layout in LAYOUTS]
        rows.append(["any", "any", POLICY_LABELS["shadow+field"], refused[0], "nothing", refused[1], "nothing"])
        return rows


HEADER = ["rule", "inbound header", "policy", "HTTP: trustip", "HTTP: backend got", "TCP: trustip", "TCP: backend got"]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def doc_table() -> list[list[str]]:
    """The table between the markers in docs/outbound-proxy.md, as rows of stripped cells."""
    text = DOC.read_text()
    assert TABLE_START in text and TABLE_END in text, f"{DOC} has no {TABLE_START} ... {TABLE_END} table"
    block = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    lines = [line.strip() for line in block.strip().splitlines() if line.strip().startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    assert rows and rows[0] == HEADER, f"the doc table's header is {rows[:1]}, expected {HEADER}"
    return rows[2:]


@pytest.fixture(scope="module")
def measured(envoy, build, proxy_backend, haproxy_backend, workdir, echo) -> Measurement:
    backends = {"python": proxy_backend, "haproxy": haproxy_backend}
    python_start = proxy_backend.count
    observations = [
        measure(envoy, row, layout, version, backend, backends)
        for row in ROWS
        for layout in LAYOUTS
        for version in VERSIONS
        for backend in BACKENDS
    ]
    # Nothing arrived late: the Python backend saw exactly one connection per request that got
    # through to it, and no refused request ever reached either backend.
    time.sleep(0.3)
    reached = [o for o in observations if o.backend == "python" and not o.closed and o.status == 200]
    assert proxy_backend.count - python_start == len(reached), (proxy_backend.count - python_start, len(reached))
    logged = {line.test_id for line in haproxy_backend.lines()}
    for obs in observations:
        if obs.closed or obs.status != 200:
            found = proxy_backend.find(obs.test_id) if obs.backend == "python" else obs.test_id in logged
            assert not found, f"a refused request reached the {obs.backend} backend: {obs}"
    refused = {layout: shadow_with_the_field_refused(build, layout, workdir, echo.port) for layout in LAYOUTS}
    return Measurement(observations, refused)


# --- the tests -------------------------------------------------------------------------------


def test_the_measured_table_is_the_one_in_the_doc(measured, build):
    """docs/outbound-proxy.md's table is what this module measures, in both builds."""
    table = measured.table()
    documented = doc_table()
    if table != documented:
        pytest.fail(
            f"{build} build: the measured table differs from {DOC.relative_to(REPO)}. Measured:\n\n"
            f"{markdown(table)}\n\nDocumented rows that differ:\n"
            + "\n".join(
                f"  measured   {m}\n  documented {d}" for m, d in zip(table, documented) if m != d
            )
            + (f"\n(row counts: measured {len(table)}, documented {len(documented)})" if len(table) != len(documented) else "")
        )


def test_every_request_was_measured_in_both_versions_and_both_backends(measured):
    """The upstream header had the listener's version, whatever the inbound header's was."""
    for obs in measured.observations:
        if obs.backend == "python" and obs.src is not None:
            assert obs.header_kind == obs.version, obs


def test_the_published_connection_client_is_c(measured, build):
    """The connection log's filter state (docs/observability.md) says the same C as the decision
    counter. One exception, the wasm build's HTTP layout after an X-Forwarded-For walk: both
    wasm roles publish under wasm.trustip.client_ip, so the connection's last value is the
    HTTP role's R (reason xff)."""
    for obs in measured.observations:
        if obs.c is None:
            continue
        if build == "wasm" and obs.layout == "http" and obs.row.header == "PROXY + XFF":
            assert (obs.logged_c, obs.logged_reason) == (WALKED, "xff"), obs
            continue
        assert (obs.logged_c, obs.logged_reason) == (obs.c, obs.reason), obs


def test_with_the_field_a_backend_only_ever_gets_c(measured):
    """The invariant, with `upstream_proxy_protocol: true`: whatever got through, the backend
    believed trustip's C (never an address trustip did not verify); a refused connection reached
    no backend."""
    rows = [o for o in measured.observations if o.row.policy == "with"]
    assert len(rows) == 11 * len(LAYOUTS) * len(VERSIONS) * len(BACKENDS)
    for obs in rows:
        if obs.closed or obs.status != 200:
            assert obs.src is None, obs
        else:
            assert obs.src == obs.c, obs
            assert obs.c in (obs.peer, CLAIM, CDN), obs


def test_without_the_field_an_ignored_claim_reaches_the_backend(measured):
    """The motivating measurement, the "without the field" row: an `ignore` rule drops the
    claim (C = D), but Envoy still forwards the header's source, which trustip never believed."""
    leaks = [o for o in measured.observations if o.row == Row("ignore", "PROXY", "without")]
    assert len(leaks) == len(LAYOUTS) * len(VERSIONS) * len(BACKENDS)
    for obs in leaks:
        assert not obs.closed and obs.status == 200, obs
        assert (obs.c, obs.reason) == (IGNORE, "direct"), obs
        assert obs.src == CLAIM, obs


def test_with_the_field_an_ignored_claim_is_refused(measured):
    for obs in (o for o in measured.observations if o.row == Row("ignore", "PROXY", "with")):
        assert obs.closed, obs
        assert obs.reason == "proxy_not_forwardable", obs
        assert obs.src is None, obs


def test_shadow_mode_with_the_field_is_refused(measured):
    for layout, (refused, output) in measured.refused.items():
        assert refused, f"{layout}: Envoy started with shadow mode and upstream_proxy_protocol:\n{output[-4000:]}"
        assert 'cannot be combined with mode "shadow"' in output


def test_the_walked_client_travels_in_headers_and_the_proxy_header_carries_c(measured):
    """X-Forwarded-For walk: R is per request; the outbound PROXY header carries C (the CDN edge
    the load balancer named), and R reaches the backend in X-Forwarded-For and
    x-envoy-external-address."""
    for obs in measured.observations:
        if obs.row.header != "PROXY + XFF" or obs.layout != "http":
            continue
        assert (obs.c, obs.r, obs.r_reason) == (CDN, WALKED, "xff"), obs
        assert obs.src == CDN, obs
        if obs.backend == "python":
            head = obs.after.decode("latin-1").lower()
            assert f"x-forwarded-for: {WALKED}, {CDN}\r\n" in head, head
            assert f"x-envoy-external-address: {WALKED}\r\n" in head, head


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_guides_check_a_raw_backend_prints_the_header_then_the_request(envoy, proxy_backend, layout):
    """kgateway's check: a raw TCP backend shows `PROXY TCP4 <client> <gateway> <ports>\\r\\n`
    followed by the HTTP request. A direct client (no header of its own): the record comes from
    the connection (HCM or tcp_proxy), so <gateway> is Envoy's listener address."""
    spec = envoy.listeners[listener_name("with", layout, "v1", "python")]
    response = client.request(spec.port, source=DIRECT)
    assert response.status == 200, response
    record = proxy_backend.wait_for(response.test_id)
    expected = f"PROXY TCP4 {DIRECT} 127.0.0.1 {response.local_port} {spec.port}\r\n".encode()
    assert record.header.raw == expected
    assert record.after.startswith(b"GET / HTTP/1.1\r\n"), record.after
    if layout == "tcp":
        # tcp_proxy forwards the client's bytes as they are.
        assert record.after == client.build_request(test_id=response.test_id)[0]


def test_the_http_role_alone_refuses_an_ignored_claim_with_a_403(envoy, proxy_backend):
    """Without a per-connection filter the HTTP role decides: with the field an ignored claim
    gets the local reply (no upstream request, so no header); without it the claim leaks."""
    proxy = client.proxy_v2(CLAIM, HEADER_DST, 4444, 80)
    count = proxy_backend.count
    refused = client.request(envoy.port("http-alone-with"), source=IGNORE, proxy=proxy)
    assert refused.status == 403, refused
    assert refused.header(names.REJECT_HEADER) == "proxy_not_forwardable"
    assert proxy_backend.count == count
    leaked = client.request(envoy.port("http-alone-without"), source=IGNORE, proxy=proxy)
    assert leaked.status == 200, leaked
    assert proxy_backend.wait_for(leaked.test_id).header.src == CLAIM


@pytest.mark.parametrize("version", VERSIONS)
def test_without_any_record_the_socket_writes_envoy_s_own_connection(envoy, proxy_backend, version):
    """Why the record matters: with the HCM's add_proxy_protocol_connection_state false and no
    inbound header, nothing records the client, and the socket falls back to the upstream
    connection itself: v1 names Envoy's own address (the backend would take Envoy for the
    client), v2 sends a LOCAL header (no address: the backend uses the TCP peer, Envoy)."""
    spec = envoy.listeners[f"no-record-{version}"]
    response = client.request(spec.port, source=DIRECT)
    assert response.status == 200, response
    header = proxy_backend.wait_for(response.test_id).header
    if version == "v1":
        assert (header.family, header.src, header.dst, header.dst_port) == ("TCP4", "127.0.0.1", "127.0.0.1", proxy_backend.port)
    else:
        assert (header.command, header.family, header.src) == ("LOCAL", "UNSPEC", None)


def test_through_a_real_load_balancer(envoy, proxy_backend, haproxy_backend, start_haproxy):
    """HAProxy (send-proxy-v2 from the require peer) -> Envoy -> both backends: each believes the
    client HAProxy carried, for both layouts."""
    for layout in LAYOUTS:
        for backend in BACKENDS:
            spec = envoy.listeners[listener_name("with", layout, "v2", backend)]
            lb = start_haproxy(spec.port, bind_ip=LB, source_ip=LB)
            response = client.request(lb.port, source=CLIENT, dest=LB)
            assert response.status == 200, (layout, backend, response)
            if backend == "python":
                header = proxy_backend.wait_for(response.test_id).header
                assert (header.kind, header.family, header.src, header.src_port) == ("v2", "TCP4", CLIENT, response.local_port)
                assert (header.dst, header.dst_port) == (LB, lb.port)
            else:
                line = haproxy_backend.wait_for(response.test_id)
                assert (line.ci, line.cp, line.fi, line.fp) == (CLIENT, str(response.local_port), LB, str(lb.port))
            lb.stop()


def test_tlv_passthrough_of_the_vpc_endpoint_id(envoy, proxy_backend):
    """With pass_through_tlvs for 0xEA on the proxy_protocol filter and on the upstream socket,
    the allowlisted VPC endpoint id the decision used reaches the backend's v2 header; without
    them, no TLV; a id not on the allowlist never reaches a backend."""
    tlv = client.aws_vpce_tlv(VPCE)
    proxy = client.proxy_v2(CLAIM, HEADER_DST, 4444, 80, tlvs=[tlv])
    response = client.request(envoy.port("tlv-pass"), source=LB, proxy=proxy)
    assert response.status == 200, response
    header = proxy_backend.wait_for(response.test_id).header
    assert header.src == CLAIM
    assert header.tlvs == [(0xEA, b"\x01" + VPCE.encode())]

    response = client.request(envoy.port("tlv-none"), source=LB, proxy=proxy)
    assert response.status == 200, response
    assert proxy_backend.wait_for(response.test_id).header.tlvs == []

    count = proxy_backend.count
    wrong = client.proxy_v2(CLAIM, HEADER_DST, 4444, 80, tlvs=[client.aws_vpce_tlv("vpce-0000000000000000")])
    response = client.request(envoy.port("tlv-pass"), source=LB, proxy=wrong)
    assert response.closed, response
    assert proxy_backend.count == count


def test_tlv_passthrough_of_a_load_balancer_s_unique_id(envoy, haproxy_backend, start_haproxy):
    """A real load balancer's TLV: HAProxy's unique id (0x05, here the client's IP as text),
    passed through Envoy to HAProxy's accept-proxy backend, which logs it with fc_pp_unique_id."""
    lb = start_haproxy(envoy.port("tlv-uid"), bind_ip=LB, source_ip=LB, proxy_v2_options="unique-id", unique_id_format="%ci")
    response = client.request(lb.port, source=CLIENT, dest=LB)
    assert response.status == 200, response
    line = haproxy_backend.wait_for(response.test_id)
    assert line.ci == CLIENT
    assert bytes.fromhex(line.unique_id) == CLIENT.encode(), line
    lb.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_ipv6(envoy, proxy_backend, version):
    """A `use` peer on ::1: its IPv6 claim goes upstream as TCP6; without a header, ::1 itself."""
    spec = envoy.listeners[listener_name("with", "http", version, "python")]
    build_header = client.proxy_v1 if version == "v1" else client.proxy_v2
    response = client.request(spec.port, source="::1", proxy=build_header("2001:db8::7", "2001:db8::1", 4444, 80))
    assert response.status == 200, response
    header = proxy_backend.wait_for(response.test_id).header
    assert (header.kind, header.family, header.src, header.dst) == (version, "TCP6", "2001:db8::7", "2001:db8::1")

    response = client.request(spec.port, source="::1")
    assert response.status == 200, response
    header = proxy_backend.wait_for(response.test_id).header
    assert (header.family, header.src, header.src_port, header.dst, header.dst_port) == (
        "TCP6", "::1", response.local_port, "::1", spec.port
    )
    assert ipaddress.ip_address(header.src).version == 6
