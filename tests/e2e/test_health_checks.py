"""Issue 9, part 1: the load balancer's own health checks through PROXY (docs/health-checks.md).

With PROXY protocol on, a load balancer's health-check connections carry a PROXY header without
client information: HAProxy 2.6 (`check check-send-proxy`) sends a v2 LOCAL header, or with v1 a
`PROXY TCP4` line naming the check connection's own two addresses; others send `PROXY UNKNOWN`.
Envoy 1.40's proxy_protocol listener filter leaves the addresses unchanged for all of them, so a
filter sees such a connection exactly like one without any PROXY header (checked here in Envoy's
own access log). Under `require` trustip used to reject them (`missing_proxy`); a rule's
`health_check_paths` admits them from the rule's own peers with C = D, reason `health_check`,
and in the HTTP role only for the listed paths.

What runs here, through real Envoy (both builds) and real HAProxy 2.6:
- the bytes HAProxy sends on a check (a raw listener records them);
- Envoy's access log: LOCAL, UNKNOWN, a v1 line naming the connection's own addresses and no
  header give the same remote address (no trustip filter loaded);
- HAProxy checking `/healthz/ready` (v1 and v2, with and without the field, in each layout):
  what HAProxy marks the server and what trustip counted, compared with the table in
  docs/health-checks.md (the test prints the measured table when they differ);
- hand-built LOCAL / UNKNOWN / no-header requests: 200 with reason `health_check` for a listed
  path (query ignored), 403 `missing_proxy` for another path (also on the same connection), C = D
  upstream, nothing for a peer outside the rule or for another `require` peer;
- the field on a `use`, `ignore`, `reject` or `deny` rule is refused;
- why the checks say HTTP/1.1 (Envoy answers HTTP/1.0 with 426), and a listener shaped like
  Istio's status port 15021 (no proxy_protocol filter) answering a PROXY check with 400.
"""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from harness import client, names
from harness.envoy import REPO, EnvoyWithListeners, Listener, wait_for_line
from harness.expect import decisions, reject_body

LB = "127.0.0.5"  # the load balancer (HAProxy's source address), the rule with the field
OTHER_LB = "127.0.0.6"  # another `require` peer, without the field
ATTACKER = "127.0.0.66"  # no rule: the implicit `reject`
CLIENT = "127.0.0.42"
PATH = "/healthz/ready"
DOC = REPO / "docs" / "health-checks.md"

# The strict policy, and the same without the field. A second `require` rule shows the
# field belongs to its own rule only.
HC_RULE = {"from": [f"{LB}/32"], "proxy_protocol": "require", "health_check_paths": [PATH]}
PLAIN_RULE = {"from": [f"{LB}/32"], "proxy_protocol": "require"}
OTHER_RULE = {"from": [f"{OTHER_LB}/32"], "proxy_protocol": "require"}
HEADERS = {"set": ["x-envoy-external-address", "x-real-ip"]}
WITH_FIELD = {"rules": [HC_RULE, OTHER_RULE], "headers": HEADERS}
WITHOUT_FIELD = {"rules": [PLAIN_RULE, OTHER_RULE], "headers": HEADERS}

# What HAProxy 2.6 sends ahead of a check with `check-send-proxy` (test_haproxy_check_bytes):
# v2: signature, 0x20 (version 2, command LOCAL), 0x00 (UNSPEC), length 0.
LOCAL_V2 = client.PROXY_V2_SIGNATURE + b"\x20\x00\x00\x00"
UNKNOWN_V1 = b"PROXY UNKNOWN\r\n"


# --- layouts ------------------------------------------------------------------------------

# name: (what the doc calls it, Listener options), per build. Every listener is strict
# (allow_requests_without_proxy_protocol: false), the recommended setup, except `optional`.
def layouts(build: str) -> dict[str, tuple[str, dict]]:
    if build == "native":
        main = ("listener + HTTP filter", {"listener_role": True, "http_role": True})
    else:
        main = ("network + HTTP role", {"network_role": True, "http_role": True})
    out = {
        "main": main,
        "http": ("HTTP role alone" if build == "wasm" else "HTTP filter alone", {"http_role": True}),
        "tcp": ("network role, tcp_proxy" if build == "wasm" else "network filter, tcp_proxy",
                {"network_role": True, "http_role": False, "tcp_proxy": True}),
    }
    if build == "native":
        # The listener filter alone: the HCM writes the client headers from the remote address.
        out["listener"] = (
            "listener filter alone",
            {"listener_role": True, "http_role": False, "skip_xff_append": False},
        )
    return out


HTTP_LAYOUTS = ("main", "http")  # where trustip sees the request path


def roles(build: str, layout: str) -> tuple[str, ...]:
    """The counter roles that decide in a layout, in the order they decide."""
    return {
        ("wasm", "main"): ("network", "http"),
        ("native", "main"): ("listener", "http"),
        ("wasm", "http"): ("http",),
        ("native", "http"): ("http",),
        ("wasm", "tcp"): ("network",),
        ("native", "tcp"): ("network",),
        ("native", "listener"): ("listener",),
    }[(build, layout)]


@pytest.fixture(scope="module")
def envoy(start_envoy, build):
    listeners = []
    for layout, (_, options) in layouts(build).items():
        for field, plugin in (("field", WITH_FIELD), ("nofield", WITHOUT_FIELD)):
            listeners.append(
                Listener(
                    name=f"{layout}-{field}",
                    proxy_protocol="strict",
                    plugin=plugin,
                    direct_peer_format=names.DIRECT_PEER_FORMAT,
                    access_log=True,
                    connection_log=True,
                    **options,
                )
            )
    # A listener that also takes connections without any PROXY header (the third look-alike).
    main_options = layouts(build)["main"][1]
    listeners.append(
        Listener(
            name="main-optional",
            proxy_protocol="optional",
            plugin=WITH_FIELD,
            direct_peer_format=names.DIRECT_PEER_FORMAT,
            access_log=True,
            connection_log=True,
            **main_options,
        )
    )
    return start_envoy(*listeners)


def counter(role: str, outcome: str) -> str:
    """`trustip.<role>.<outcome>` as the suite's counters() names it (names.json lists the
    listener's native counters without the metric prefix)."""
    if role == "listener":
        name = f"listener.{outcome}"
        assert name in names.NAMES["native_counters"]["listener"], f"{name}: not a native listener counter"
        return f"{names.NAMES['metric_prefix']}.{name}"
    return names.counter(role, outcome)


# --- what HAProxy sends --------------------------------------------------------------------


def capture_check(start_haproxy, send: str) -> tuple[tuple[str, int], bytes]:
    """Lets HAProxy health-check a raw listener; returns (the check's peer, its bytes)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(10)
        lb = start_haproxy(server.getsockname()[1], bind_ip=LB, source_ip=LB, send_proxy=send, health_check=PATH)
        try:
            conn, peer = server.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while not data.endswith(b"\r\n\r\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        finally:
            lb.stop()
    return peer, data


REQUEST = f"GET {PATH} HTTP/1.1\r\nhost: trustip.test\r\nconnection: close\r\n\r\n".encode()


def test_haproxy_check_bytes_v2_local(start_haproxy):
    """send-proxy-v2 + check-send-proxy: a v2 LOCAL header (UNSPEC, no address, no TLV), then
    the HTTP check, from the server's `source` address."""
    peer, data = capture_check(start_haproxy, "v2")
    assert peer[0] == LB
    assert data == LOCAL_V2 + REQUEST, data
    assert LOCAL_V2 == client.proxy_v2(command="LOCAL")


def test_haproxy_check_bytes_v1_own_addresses(start_haproxy):
    """send-proxy + check-send-proxy: not `PROXY UNKNOWN` but a TCP4 line naming the check
    connection's own addresses and ports (source = the direct peer, exactly)."""
    peer, data = capture_check(start_haproxy, "v1")
    assert peer[0] == LB
    line, _, rest = data.partition(b"\r\n")
    match = re.fullmatch(rb"PROXY TCP4 (\S+) (\S+) (\d+) (\d+)", line)
    assert match, data
    assert match.group(1).decode() == LB and int(match.group(3)) == peer[1], (line, peer)
    assert match.group(2) == b"127.0.0.1"
    assert rest == REQUEST, data


# --- Envoy: no client information looks like no header -------------------------------------


@pytest.fixture(scope="module")
def plain_envoy(echo, workdir):
    """Envoy with the proxy_protocol listener filter and no trustip filter (build irrelevant)."""
    instance = EnvoyWithListeners(
        [
            Listener(name="optional", build="wasm", proxy_protocol="optional", http_role=False, access_log=True, ipv6=False),
            Listener(name="strict", build="wasm", proxy_protocol="strict", http_role=False, access_log=True, ipv6=False),
            # Shaped like Istio's status port 15021: an HCM and no listener filter at all.
            Listener(name="status", build="wasm", proxy_protocol="none", http_role=False, access_log=True, ipv6=False),
        ],
        upstream_port=echo.port,
        name="health-check-facts",
        workdir=workdir("envoy-health-check-facts"),
    ).start()
    yield instance
    instance.stop()


def own_v1(sock: socket.socket) -> bytes:
    """What HAProxy's v1 check sends: a TCP4 line with the connection's own addresses."""
    source, sport = sock.getsockname()[:2]
    dest, dport = sock.getpeername()[:2]
    return client.proxy_v1(source, dest, sport, dport)


# HAProxy's LOCAL header with `proxy-v2-options crc32c`: one TLV, PP2_TYPE_CRC32C (0x03).
LOCAL_V2_CRC32C = client.PROXY_V2_SIGNATURE + b"\x20\x00\x00\x07" + client.tlv(0x03, b"\xa9\xb8\x7e\x8f")

HEADERLESS = {
    "local-v2": lambda sock: LOCAL_V2,
    "local-v2-crc32c": lambda sock: LOCAL_V2_CRC32C,
    "unknown-v1": lambda sock: UNKNOWN_V1,
    "own-addresses-v1": own_v1,
    "none": lambda sock: b"",
}


def send_request(port: int, header, *, source: str, path: str = PATH, extra: list[tuple[str, str]] = ()) -> client.Response:
    """One request (`connection: close`) whose PROXY header may depend on the socket
    (`header(sock) -> bytes`)."""
    data, test_id = client.build_request(list(extra), path=path)
    sock = client.connect(source, "127.0.0.1", port, 10.0)
    try:
        local_port = sock.getsockname()[1]
        try:
            sock.sendall(header(sock) + data)
        except (BrokenPipeError, ConnectionResetError):
            return client.Response(status=None, reset=True, test_id=test_id, local_port=local_port)
        raw, reset = client._read_all(sock, until_complete=True)
    finally:
        sock.close()
    if not raw.startswith(b"HTTP/"):
        return client.Response(status=None, reset=reset, raw=raw, test_id=test_id, local_port=local_port)
    response = client.parse_response(raw)
    response.test_id, response.local_port = test_id, local_port
    return response


def log_fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", line))


@pytest.mark.parametrize("kind", list(HEADERLESS), ids=list(HEADERLESS))
def test_envoy_cannot_tell_no_client_information_from_no_header(plain_envoy, kind):
    """Envoy 1.40's proxy_protocol filter leaves the remote address as it was for a v2 LOCAL
    header, a v1 UNKNOWN line and a v1 line naming the connection's own addresses: the access
    log's %DOWNSTREAM_REMOTE_ADDRESS% is the direct peer, exactly as without any header. A
    PROXY header with a client changes it (the control row)."""
    response = send_request(plain_envoy.port("optional"), HEADERLESS[kind], source=LB)
    assert response.status == 200, response
    fields = log_fields(wait_for_line(plain_envoy.listeners["optional"].access_log, response.test_id))
    assert fields["direct"] == f"{LB}:{response.local_port}", fields
    assert fields["source"] == fields["direct"], fields
    control = client.request(plain_envoy.port("optional"), source=LB, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 4444, 80))
    fields = log_fields(wait_for_line(plain_envoy.listeners["optional"].access_log, control.test_id))
    assert fields["source"] == f"{CLIENT}:4444" != fields["direct"], fields


@pytest.mark.parametrize("kind", list(HEADERLESS), ids=list(HEADERLESS))
def test_strict_proxy_protocol_listener_takes_every_header_but_not_none(plain_envoy, kind):
    """On a strict listener (allow_requests_without_proxy_protocol: false) the three headers
    without client information pass Envoy; a connection without any header is reset by Envoy
    before any filter: on such a listener only the headers reach trustip."""
    response = send_request(plain_envoy.port("strict"), HEADERLESS[kind], source=LB)
    if kind == "none":
        assert response.closed, response
    else:
        assert response.status == 200, response
        fields = log_fields(wait_for_line(plain_envoy.listeners["strict"].access_log, response.test_id))
        assert fields["source"] == fields["direct"] == f"{LB}:{response.local_port}", fields


# --- HAProxy's health checks through Envoy + trustip (both builds) -------------------------

SENDS = {"v2": "v2 LOCAL", "v1": "v1 TCP4, its own addresses"}
LAYOUT_IDS = ("main", "http", "tcp", "listener")


def row_cases() -> list:
    """(layout, send, field, path) of every measured row: each layout with v2 and v1, without
    and with the field, and the field with HAProxy checking a path it does not list."""
    cases = []
    for layout in LAYOUT_IDS:
        marks = [pytest.mark.native_only("the listener filter is the native build's")] if layout == "listener" else []
        for send in SENDS:
            for field in (False, True):
                cases.append(pytest.param(layout, send, field, PATH, marks=marks, id=f"{layout}-{send}-{'field' if field else 'nofield'}"))
        cases.append(pytest.param(layout, "v2", True, "/", marks=marks, id=f"{layout}-v2-field-other-path"))
    return cases


ROW_CASES = row_cases()
CLOSED = "closed, no answer (SOCKERR or L7RSP)"
MEASURED: dict[tuple, dict] = {}  # (build, layout, send, field, path) -> measured row


def measure(build, envoy, start_haproxy, counters, layout, send, field, path) -> dict:
    """Starts HAProxy checking `path` through one of this build's listeners, waits for its first
    finished check (rise 1, fall 1: it decides the state), stops it; returns what HAProxy made of
    the server and which trustip decision counters moved (once per row and build)."""
    key = (build, layout, send, field, path)
    if key not in MEASURED:
        listener = f"{layout}-{'field' if field else 'nofield'}"
        watch = counters(envoy)
        lb = start_haproxy(envoy.port(listener), bind_ip=LB, source_ip=LB, send_proxy=send, health_check=path)
        try:
            stat = lb.wait_for_check()
        finally:
            lb.stop()
        time.sleep(0.1)  # the check in flight when HAProxy stopped
        check = f"{stat['check_status'].removeprefix('* ')} {stat['check_code']}".strip()
        MEASURED[key] = {
            "status": stat["status"],
            # A connection closed without an answer: HAProxy says SOCKERR when it saw the reset,
            # L7RSP when it read an empty reply; which one varies from run to run.
            "check": CLOSED if check in ("SOCKERR", "L7RSP") else check,
            "counted": sorted(name.removeprefix("trustip.") for name in decisions(watch.delta())),
        }
    return MEASURED[key]


def expected_counters(build: str, layout: str, field: bool, path: str) -> list[str]:
    """What the design says each role counts for one health check from the rule's own LB."""
    first, *rest = roles(build, layout)
    if not field:
        return [f"{first}.reject_missing_proxy"]  # the first role to decide refuses it
    if path == PATH or layout not in HTTP_LAYOUTS:
        # The network role and the listener filter cannot see the path: admitted as health_check.
        return sorted(f"{role}.accept_health_check" for role in (first, *rest))
    if layout == "main":
        return sorted([f"{first}.accept_health_check", "http.reject_missing_proxy"])
    return ["http.reject_missing_proxy"]


@pytest.mark.parametrize("layout, send, field, path", ROW_CASES)
def test_haproxy_health_check(build, envoy, start_haproxy, counters, layout, send, field, path):
    """HAProxy checks the server through the strict setup: without the field trustip refuses
    the checks (`missing_proxy`) and HAProxy marks the server DOWN; with it UP, counted
    `accept_health_check`; a path the rule does not list is refused where trustip sees the path
    (403 `missing_proxy`: DOWN), and passes where it cannot (tcp_proxy, the listener alone)."""
    row = measure(build, envoy, start_haproxy, counters, layout, send, field, path)
    up = field and (path == PATH or layout not in HTTP_LAYOUTS)
    assert row["status"] == ("UP" if up else "DOWN"), row
    if up:
        assert row["check"] == "L7OK 200", row
    elif layout == "http" or (layout == "main" and field):
        assert row["check"] == "L7STS 403", row  # the HTTP role's local reply
    else:
        assert row["check"] == CLOSED, row  # the network role or the listener filter closed it
    assert row["counted"] == expected_counters(build, layout, field, path), row


# --- the measured table in docs/health-checks.md --------------------------------------------

TABLE_HEADER = (
    "| Build | Layout | HAProxy sends | Check path | `health_check_paths` | HAProxy marks the server | Last check | trustip counted |"
)


def table_rows(build: str) -> list[str]:
    rows = []
    for case in ROW_CASES:
        layout, send, field, path = case.values
        if layout not in layouts(build):
            continue
        row = MEASURED[(build, layout, send, field, path)]
        cells = [
            build,
            layouts(build)[layout][0],
            SENDS[send],
            f"`{path}`",
            f'`["{PATH}"]`' if field else "-",
            row["status"],
            row["check"],
            ", ".join(f"`{name}`" for name in row["counted"]) or "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def doc_rows(build: str) -> list[str]:
    """The rows of the doc's measured table for one build (normalised spacing)."""
    lines = DOC.read_text().splitlines()
    assert TABLE_HEADER in lines, f"{DOC} has no table headed {TABLE_HEADER}"
    at = lines.index(TABLE_HEADER) + 2
    rows = []
    for line in lines[at:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == build:
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def test_doc_table_is_what_was_measured(build, envoy, start_haproxy, counters):
    """docs/health-checks.md's table holds what this run measured, row for row (the rows the
    parametrised test measured are reused; missing ones are measured here)."""
    for case in ROW_CASES:
        layout, send, field, path = case.values
        if layout in layouts(build):
            measure(build, envoy, start_haproxy, counters, layout, send, field, path)
    measured = table_rows(build)
    assert doc_rows(build) == measured, (
        f"{DOC.name} differs from what was measured for the {build} build; measured:\n"
        + "\n".join(measured)
    )


# --- hand-built headers without client information (both builds) ---------------------------

HEADER_KINDS = ("local-v2", "local-v2-crc32c", "unknown-v1", "own-addresses-v1")  # what reaches a strict listener


def wait_for_connection_line(envoy, listener: str, peer: str, local_port: int) -> dict[str, str]:
    """The connection log line (written when the connection closes) of one client port."""
    return log_fields(wait_for_line(envoy.listeners[listener].connection_log, f"direct={peer}:{local_port} "))


def decided(envoy, layout: str, response, peer: str = LB) -> tuple[str, str]:
    """(client_ip, reason) trustip published for a request: the HTTP role's access log where it
    decides per request, else the connection's."""
    listener = envoy.listeners[f"{layout}-field"] if f"{layout}-field" in envoy.listeners else None
    if layout in HTTP_LAYOUTS:
        fields = log_fields(wait_for_line(listener.access_log, response.test_id))
    else:
        fields = wait_for_connection_line(envoy, listener.name, peer, response.local_port)
    return fields["client_ip"], fields["reason"]


ALL_LAYOUTS = [
    pytest.param(layout, marks=[pytest.mark.native_only("the listener filter is the native build's")] if layout == "listener" else [])
    for layout in LAYOUT_IDS
]


@pytest.mark.parametrize("kind", HEADER_KINDS)
@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_health_check_admitted_with_c_equal_d(build, envoy, counters, layout, kind):
    """LOCAL, UNKNOWN or a v1 line with the connection's own addresses, from the rule's LB, on
    a listed path: 200, C = D = the LB (upstream headers, access log), reason `health_check`,
    every deciding role counts `accept_health_check`. Its own X-Forwarded-For is not believed."""
    watch = counters(envoy)
    spoof = [("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6")]
    response = send_request(envoy.port(f"{layout}-field"), HEADERLESS[kind], source=LB, extra=spoof)
    assert response.status == 200, response
    if layout != "tcp":  # tcp_proxy writes no header: the echo answers the bytes as they came
        assert response.upstream_header("x-envoy-external-address") == LB
    if layout in HTTP_LAYOUTS:  # trustip's HTTP role writes the client headers
        assert response.upstream_header("x-forwarded-for") == LB
        assert response.upstream_header("x-real-ip") == LB
    if layout == "listener":  # the HCM appends the remote address trustip left as D
        assert response.upstream_header("x-forwarded-for") == f"6.6.6.6,{LB}"
    client_ip, reason = decided(envoy, layout, response)
    assert (client_ip, reason) == (LB, "health_check")
    assert decisions(watch.delta()) == {counter(role, "accept_health_check"): 1 for role in roles(build, layout)}


def test_no_header_at_all_is_the_same_case(build, envoy, counters):
    """A connection without any PROXY header (a listener that allows it) is what LOCAL looks
    like to trustip: admitted for the listed path, `health_check`, C = D."""
    watch = counters(envoy)
    response = send_request(envoy.port("main-optional"), HEADERLESS["none"], source=LB)
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == LB
    fields = log_fields(wait_for_line(envoy.listeners["main-optional"].access_log, response.test_id))
    assert (fields["client_ip"], fields["reason"]) == (LB, "health_check")
    assert decisions(watch.delta()) == {counter(role, "accept_health_check"): 1 for role in roles(build, "main")}
    refused = send_request(envoy.port("main-optional"), HEADERLESS["none"], source=LB, path="/")
    assert refused.status == 403 and refused.header(names.REJECT_HEADER) == "missing_proxy", refused


@pytest.mark.parametrize("path", ["/healthz/ready?x=1", "/healthz/ready?"])
@pytest.mark.parametrize("layout", HTTP_LAYOUTS)
def test_query_string_is_not_compared(envoy, layout, path):
    response = send_request(envoy.port(f"{layout}-field"), HEADERLESS["local-v2"], source=LB, path=path)
    assert response.status == 200, response
    assert decided(envoy, layout, response) == (LB, "health_check")


OTHER_PATHS = ["/", "/healthz/ready/", "/healthz", "/healthz/readyz", "/HEALTHZ/READY", "//healthz/ready"]


@pytest.mark.parametrize("path", OTHER_PATHS)
@pytest.mark.parametrize("kind", HEADER_KINDS)
@pytest.mark.parametrize("layout", HTTP_LAYOUTS)
def test_other_path_rejected_missing_proxy(build, envoy, counters, layout, kind, path):
    """Any path but a listed one, on a connection without client information: 403
    `missing_proxy`, as without the field; the upstream gets nothing."""
    watch = counters(envoy)
    response = send_request(envoy.port(f"{layout}-field"), HEADERLESS[kind], source=LB, path=path)
    assert response.status == 403, response
    assert response.header(names.REJECT_HEADER) == "missing_proxy"
    assert response.body == reject_body("missing_proxy")
    assert decided(envoy, layout, response)[1] == "missing_proxy"
    first, *rest = roles(build, layout)
    expected = {counter("http", "reject_missing_proxy"): 1}
    if rest:
        expected[counter(first, "accept_health_check")] = 1
    assert decisions(watch.delta()) == expected


def keep_alive(port: int, paths: list[str], *, source: str, proxy: bytes) -> list[client.Response]:
    """Several requests on one connection, each sent once the previous answer is read."""
    sock = client.connect(source, "127.0.0.1", port, 10.0)
    responses = []
    try:
        sock.sendall(proxy)
        for path in paths:
            test_id = uuid.uuid4().hex
            try:
                sock.sendall(f"GET {path} HTTP/1.1\r\nhost: trustip.test\r\nx-test-id: {test_id}\r\n\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                responses.append(client.Response(status=None, reset=True, test_id=test_id))
                break
            raw, reset = client._read_all(sock, until_complete=True)
            if not raw.startswith(b"HTTP/"):
                responses.append(client.Response(status=None, reset=reset, raw=raw, test_id=test_id))
                break
            response = client.parse_response(raw)
            response.test_id = test_id
            responses.append(response)
    finally:
        sock.close()
    return responses


@pytest.mark.parametrize("layout", HTTP_LAYOUTS)
def test_same_connection_other_path_rejected(build, envoy, counters, layout):
    """The path is checked on every request of the connection: a listed path twice, then
    another path on the same connection is refused `missing_proxy`."""
    watch = counters(envoy)
    responses = keep_alive(envoy.port(f"{layout}-field"), [PATH, PATH, "/admin"], source=LB, proxy=LOCAL_V2)
    assert [r.status for r in responses] == [200, 200, 403], responses
    assert responses[2].header(names.REJECT_HEADER) == "missing_proxy"
    first, *rest = roles(build, layout)
    expected = {counter("http", "accept_health_check"): 2, counter("http", "reject_missing_proxy"): 1}
    if rest:
        expected[counter(first, "accept_health_check")] = 1  # one connection
    assert decisions(watch.delta()) == expected


@pytest.mark.parametrize("path", [PATH, "/"])
@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_local_from_a_peer_outside_the_rule_is_its_own_client(build, envoy, counters, echo, layout, path):
    """A LOCAL header from a peer no rule lists: under the implicit `reject` rule a header that
    does not change the address is no PROXY information, so it is a direct client, C = D,
    reason `direct`, on any path; nothing is spoofed and the field plays no part."""
    watch = counters(envoy)
    response = send_request(envoy.port(f"{layout}-field"), HEADERLESS["local-v2"], source=ATTACKER, path=path)
    assert response.status == 200, response
    if layout != "tcp":
        assert response.upstream_header("x-envoy-external-address") == ATTACKER
    assert decided(envoy, layout, response, peer=ATTACKER) == (ATTACKER, "direct")
    assert decisions(watch.delta()) == {counter(role, "accept_direct"): 1 for role in roles(build, layout)}


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_local_from_another_require_peer_is_missing_proxy(build, envoy, counters, layout):
    """The field belongs to its rule: another `require` peer's LOCAL header on the listed path
    is refused `missing_proxy` by the first role that decides."""
    watch = counters(envoy)
    response = send_request(envoy.port(f"{layout}-field"), HEADERLESS["local-v2"], source=OTHER_LB)
    first = roles(build, layout)[0]
    if first == "http":
        assert response.status == 403 and response.header(names.REJECT_HEADER) == "missing_proxy", response
    else:
        assert response.closed, response
    assert decisions(watch.delta()) == {counter(first, "reject_missing_proxy"): 1}


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_real_proxy_header_from_the_lb_is_unchanged(build, envoy, counters, layout):
    """The field changes nothing for the LB's client traffic: a PROXY header with a client
    address is used as before (C = P, `accept_proxy`), on the health-check path too."""
    watch = counters(envoy)
    response = client.request(envoy.port(f"{layout}-field"), source=LB, path=PATH, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 4444, 80))
    assert response.status == 200, response
    if layout != "tcp":
        assert response.upstream_header("x-envoy-external-address") == CLIENT
    assert decisions(watch.delta()) == {counter(role, "accept_proxy"): 1 for role in roles(build, layout)}


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_without_the_field_local_is_missing_proxy(build, envoy, counters, layout):
    """What the issue reports: under `require` alone, LOCAL from the LB is `missing_proxy`."""
    watch = counters(envoy)
    response = send_request(envoy.port(f"{layout}-nofield"), HEADERLESS["local-v2"], source=LB)
    first = roles(build, layout)[0]
    if first == "http":
        assert response.status == 403 and response.header(names.REJECT_HEADER) == "missing_proxy", response
    else:
        assert response.closed, response
    assert decisions(watch.delta()) == {counter(first, "reject_missing_proxy"): 1}


# --- the field is for `require` rules only --------------------------------------------------


@pytest.mark.parametrize("word", ["use", "reject", "ignore", "deny"])
def test_field_refused_on_other_rules(build, echo, workdir, word):
    """On a `use`, `reject`, `ignore` or `deny` rule the field is refused (a connection without
    PROXY information is not `missing_proxy` there, so there is nothing to admit): the module
    logs the field, Envoy refuses the filter and exits."""
    plugin = {"rules": [{"from": [f"{LB}/32"], "proxy_protocol": word, "health_check_paths": [PATH]}]}
    options = {"listener_role": True, "http_role": False} if build == "native" else {"network_role": True}
    spec = Listener(name="refused", build=build, plugin=plugin, ipv6=False, **options)
    instance = EnvoyWithListeners([spec], upstream_port=echo.port, name="hc-refused", workdir=workdir("hc-refused"))
    code = instance.run_to_exit(timeout=30)
    output = instance.output_text()
    assert code not in (None, 0), f"Envoy accepted the configuration (exit {code})\n{output}"
    lines = [line for line in output.splitlines() if "trustip: invalid configuration" in line]
    assert lines and all("rules[0].health_check_paths" in line and "require" in line for line in lines), output


def test_field_accepted_on_require(build, echo, workdir):
    """The control case: the same configuration with `require` starts."""
    options = {"listener_role": True, "http_role": False} if build == "native" else {"network_role": True}
    spec = Listener(name="accepted", build=build, plugin={"rules": [HC_RULE]}, ipv6=False, **options)
    instance = EnvoyWithListeners([spec], upstream_port=echo.port, name="hc-accepted", workdir=workdir("hc-accepted")).start()
    instance.stop()


def test_envoy_answers_http_1_0_with_426(plain_envoy):
    """Why the harness's checks say HTTP/1.1 (and send a Host): HAProxy's default check request
    is HTTP/1.0, which Envoy's HCM refuses by default (426), whatever trustip decides."""
    raw, _ = client.send_raw(plain_envoy.port("optional"), LOCAL_V2 + b"GET /healthz/ready HTTP/1.0\r\n\r\n", source=LB)
    assert raw.startswith(b"HTTP/1.1 426 "), raw


def test_status_port_without_proxy_protocol_answers_400(plain_envoy, start_haproxy):
    """A listener without the proxy_protocol filter (as Istio's status port 15021, a static
    bootstrap listener no EnvoyFilter LISTENER patch or WasmPlugin reaches): the PROXY header is
    read as HTTP and Envoy answers 400, so HAProxy's check with check-send-proxy marks it DOWN."""
    response = client.request(plain_envoy.port("status"), source=LB, path=PATH, proxy=LOCAL_V2)
    assert response.status == 400, response
    # Without a PROXY header the same listener answers (here the echo stands for the agent).
    assert client.request(plain_envoy.port("status"), source=LB, path=PATH).status == 200
    lb = start_haproxy(plain_envoy.port("status"), bind_ip=LB, source_ip=LB, health_check=PATH)
    try:
        row = lb.wait_for_status("DOWN")
    finally:
        lb.stop()
    assert (row["check_status"].removeprefix("* "), row["check_code"]) == ("L7STS", "400"), row
