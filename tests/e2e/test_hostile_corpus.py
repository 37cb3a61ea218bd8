"""The hostile corpus (issue 12): every case of tests/e2e/harness/hostile.py, 19 named categories,
through one Envoy per build carrying every listener the corpus needs.

One test per category sends that category's cases (HTTP/1.1 on fresh or shared connections,
h2c streams, raw bytes in segments) and checks each against its expected outcome and the global
invariant (hostile.upstream_problems: no spoofed address reaches the upstream); a request that
was refused must not have reached the upstream at all. After each category Envoy must still be
ready, serve a control request, and its log must hold no panic, trap or crash. The last test per
build checks that all 19 categories ran, with their case counts, and prints the table.

A case marked `known_bug` (a real spoof, trap or crash in trustip) must fail: its category is then
reported as an xfail naming it, and fails if the case passes (strict), so a fix shows up. None is
marked today.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from harness import client, h2client, hostile, names
from harness.envoy import Listener
from harness.hostile import CLOSED, TIMEOUT, Case

# What must never appear in Envoy's log (a panic in either build, a wasm trap, a crash).
BAD_LOG = ("panicked", "wasm trap", "Function: proxy_on_", "Segmentation fault")
COUNTS: dict[str, dict[str, dict]] = {}  # build -> category -> {cases, outcomes, seconds}


def listeners(build: str) -> list[Listener]:
    out = []
    for name, plugin in hostile.POLICIES.items():
        options: dict = {}
        if hostile.LAYOUTS.get(name, "http") == "both":
            options = {"listener_role": True} if build == "native" else {"network_role": True}
        out.append(
            Listener(
                name=name,
                plugin=plugin,
                proxy_protocol=hostile.PROXY_PROTOCOL.get(name, "optional"),
                dual_stack=name in hostile.DUAL_STACK,
                direct_peer_format=names.DIRECT_PEER_FORMAT,
                **options,
            )
        )
    return out


@pytest.fixture(scope="module")
def envoy(start_envoy, build):
    return start_envoy(*listeners(build))


# --- transports -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one case got: a status, CLOSED or TIMEOUT, and the response."""

    result: int | str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    leaked: int = 0  # held cases: requests the echo upstream recorded while they ran

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return values[0] if values else None


def _connect(case: Case, port: int) -> socket.socket:
    dest = "::1" if ":" in case.peer else "127.0.0.1"
    sock = socket.socket(socket.AF_INET6 if ":" in dest else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(case.timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((case.peer, 0))
    sock.connect((dest, port))
    return sock


class Reader:
    """Reads HTTP/1.1 responses one by one from a socket (Content-Length framed, as Envoy and the
    echo upstream answer)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def response(self) -> Outcome:
        try:
            while b"\r\n\r\n" not in self.buffer:
                if not self._fill():
                    return Outcome(CLOSED)
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            if not lines[0].startswith(b"HTTP/"):
                return Outcome(CLOSED)
            status = int(lines[0].split(b" ")[1])
            headers = []
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower().decode("latin-1")
                headers.append((name, value.strip().decode("latin-1")))
                if name == "content-length":
                    length = int(value)
            if length is None:
                while self._fill():
                    pass
                length = len(rest)
            while len(rest) < length:
                if not self._fill():
                    break
                rest = self.buffer.partition(b"\r\n\r\n")[2]
            self.buffer = rest[length:]
            return Outcome(status, headers, rest[:length])
        except socket.timeout:
            return Outcome(TIMEOUT)


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def run_h1(case: Case, port: int) -> dict[str, Outcome]:
    sock = _connect(case, port)
    try:
        _send(sock, case.proxy + case.request_bytes())
        return {case.test_id: Reader(sock).response()}
    finally:
        sock.close()


def run_keepalive(cases: list[Case], port: int) -> dict[str, Outcome]:
    """One request at a time on one connection, each sent once the previous answer is read."""
    out: dict[str, Outcome] = {}
    sock = _connect(cases[0], port)
    try:
        reader = Reader(sock)
        _send(sock, cases[0].proxy)
        for i, case in enumerate(cases):
            if reader.eof or not _send(sock, case.request_bytes(close=i == len(cases) - 1)):
                out[case.test_id] = Outcome(CLOSED)
                continue
            out[case.test_id] = reader.response()
    finally:
        sock.close()
    return out


def run_pipeline(cases: list[Case], port: int) -> dict[str, Outcome]:
    """Every request of the group sent at once, then the answers read in order."""
    sock = _connect(cases[0], port)
    try:
        data = cases[0].proxy + b"".join(c.request_bytes(close=i == len(cases) - 1) for i, c in enumerate(cases))
        _send(sock, data)
        reader = Reader(sock)
        return {case.test_id: reader.response() for case in cases}
    finally:
        sock.close()


def run_h2(cases: list[Case], port: int) -> dict[str, Outcome]:
    first = cases[0]
    try:
        responses = h2client.requests(port, [c.h2_headers() for c in cases], source=first.peer, proxy=first.proxy, timeout=first.timeout)
    except socket.timeout:
        return {case.test_id: Outcome(TIMEOUT) for case in cases}
    out = {}
    for case, response in zip(cases, responses):
        if response.status is None:
            out[case.test_id] = Outcome(CLOSED)
        else:
            headers = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in response.headers]
            out[case.test_id] = Outcome(response.status, headers, response.body)
    return out


def run_raw(case: Case, port: int) -> dict[str, Outcome]:
    """The case's segments, `pause` seconds apart, then its request; read the answer."""
    sock = _connect(case, port)
    try:
        for i, segment in enumerate(case.segments):
            if i and case.pause:
                time.sleep(case.pause)
            _send(sock, segment)
        time.sleep(case.pause)
        _send(sock, case.request_bytes())
        return {case.test_id: Reader(sock).response()}
    finally:
        sock.close()


def run_held(cases: list[Case], port: int, echo=None) -> dict[str, Outcome]:
    """Partial input on many connections at once: each sends its segments, then all wait the
    longest `hold`. A connection Envoy ended (end of stream or reset) by then, or within a second
    more, is CLOSED; one that got nothing and is still open is TIMEOUT (Envoy still waits for
    bytes); an answer is its status. Then the client closes. These cases may carry no
    x-test-id: any request the echo upstream records meanwhile is counted as `leaked`."""
    first_recorded = len(echo.requests) if echo is not None else 0
    socks = []
    for case in cases:
        sock = _connect(case, port)
        for segment in case.segments:
            _send(sock, segment)
        socks.append((case, sock))
    time.sleep(max(case.hold for case in cases))
    out: dict[str, Outcome] = {}
    pending = {case.test_id: sock for case, sock in socks}
    deadline = time.monotonic() + 1.0  # a close Envoy already decided, delayed by a loaded machine
    while pending:
        left = deadline - time.monotonic()
        ready, _, _ = select.select(list(pending.values()), [], [], max(left, 0))
        for test_id, sock in list(pending.items()):
            if sock not in ready:
                continue
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if data.startswith(b"HTTP/"):
                out[test_id] = Outcome(int(data.split(b" ")[1]))
            elif not data:
                out[test_id] = Outcome(CLOSED)
            else:
                out[test_id] = Outcome(f"bytes {data[:40]!r}")
            del pending[test_id]
        if left <= 0:
            break
    for test_id in pending:
        out[test_id] = Outcome(TIMEOUT)  # no byte and no close: the connection is still open
    for _, sock in socks:
        sock.close()
    if echo is not None:
        time.sleep(0.2)
        leaked = len(echo.requests) - first_recorded
        for outcome in out.values():
            outcome.leaked = leaked
    return out


def execute(cases: list[Case], envoy, echo=None) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    held = [c for c in cases if c.hold is not None]
    groups: dict[str, list[Case]] = {}
    waiting: list[Case] = []
    for case in cases:
        if case.hold is not None:
            continue
        port = envoy.port(case.listener)
        if case.group:
            groups.setdefault(case.group, []).append(case)
        elif case.timeout < 5.0:
            waiting.append(case)
        elif case.transport == "raw":
            out.update(run_raw(case, port))
        else:
            out.update(run_h1(case, port))
    # Connections that end in a wait (Envoy's 1 s delayed close after a refusal, a PROXY header
    # Envoy still waits for) run side by side: the wait is idle time, not work.
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = []
        for group in groups.values():
            runner = {"keepalive": run_keepalive, "pipeline": run_pipeline, "h2": run_h2}[group[0].transport]
            jobs.append(pool.submit(runner, group, envoy.port(group[0].listener)))
        for case in waiting:
            jobs.append(pool.submit(run_raw if case.transport == "raw" else run_h1, case, envoy.port(case.listener)))
        for job in jobs:
            out.update(job.result())
    by_listener: dict[str, list[Case]] = {}
    for case in held:
        by_listener.setdefault(case.listener, []).append(case)
    for listener, group in by_listener.items():
        out.update(run_held(group, envoy.port(listener), echo))
    return out


# --- checks -------------------------------------------------------------------------------------


def problems_of(case: Case, outcome: Outcome, reached: set[str]) -> list[str]:
    expect = case.expect
    problems = []
    if outcome.result not in expect.outcomes:
        problems.append(f"got {outcome.result}, expected one of {sorted(map(str, expect.outcomes))}")
    if outcome.result == 200:
        headers = hostile.echo_headers(outcome.body)
        if headers is None:
            problems.append(f"200 without the echo's answer: {outcome.body[:200]!r}")
        else:
            problems += hostile.upstream_problems(case, headers)
    elif case.test_id in reached:
        problems.append(f"refused ({outcome.result}) but the upstream got the request")
    if outcome.leaked:
        problems.append(f"the upstream recorded {outcome.leaked} request(s) while the held cases ran")
    if outcome.result == 403 and expect.reason and outcome.header(names.REJECT_HEADER) != expect.reason:
        problems.append(f"403 with {names.REJECT_HEADER} {outcome.header(names.REJECT_HEADER)!r}, expected {expect.reason}")
    if isinstance(outcome.result, int) and outcome.result >= 500:
        problems.append(f"a 5xx: {outcome.result}")
    return problems


def still_serving(envoy) -> None:
    assert envoy.admin("/ready").strip() == "LIVE"
    response = client.request(envoy.port("both"), [("x-forwarded-for", hostile.SPOOF)], source=hostile.LB, proxy=hostile.via(hostile.CLIENT))
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == hostile.CLIENT
    assert envoy.process.poll() is None, "Envoy exited"


def describe(case: Case) -> str:
    headers = [(n, v if len(v) < 120 else v[:120] + "...") for n, v in case.headers][:8]
    return (f"{case.name} [{case.listener}] peer={case.peer} proxy={case.proxy[:60]!r} {case.method} {case.path[:80]} "
            f"transport={case.transport} headers={headers!r}")  # fmt: skip


def run(envoy, echo, cases: list[Case]) -> tuple[dict[str, Outcome], dict[str, list[str]], float]:
    """Sends `cases` to `envoy`; returns their outcomes, the problems of each case, the time."""
    first_recorded = len(echo.requests)
    started = time.monotonic()
    outcomes = execute(cases, envoy, echo)
    seconds = time.monotonic() - started
    reached = set()
    for recorded in list(echo.requests[first_recorded:]):
        for value in recorded.get_all("x-test-id"):
            reached.add(value.decode("latin-1"))
    return outcomes, {case.test_id: problems_of(case, outcomes[case.test_id], reached) for case in cases}, seconds


@pytest.mark.parametrize("category", hostile.CATEGORIES)
def test_category(build, envoy, echo, category):
    cases = hostile.corpus(category)
    log_start = envoy.log_size()
    outcomes, found, seconds = run(envoy, echo, cases)
    failures, unexpected_passes = [], []
    for case in cases:
        problems = found[case.test_id]
        if case.known_bug and not problems:
            unexpected_passes.append(f"{case.name}: marked known_bug ({case.known_bug}) but passes")
        elif problems and not case.known_bug:
            failures.append(f"{describe(case)}\n      " + "\n      ".join(problems))
    COUNTS.setdefault(build, {})[category] = {
        "cases": len(cases),
        "outcomes": Counter(str(o.result) for o in outcomes.values()),
        "seconds": seconds,
        "known_bugs": sum(1 for c in cases if c.known_bug),
    }
    log = envoy.log_text()[log_start:]
    bad = [line for line in log.splitlines() if any(word in line for word in BAD_LOG)]
    assert not bad, "Envoy's log:\n" + "\n".join(bad[:20])
    still_serving(envoy)
    assert not unexpected_passes, "\n".join(unexpected_passes)
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:40])
    bugs = [f"{c.name}: {c.known_bug}" for c in cases if c.known_bug]
    if bugs:  # everything else passed; the known bugs still fail, as they must (strict)
        pytest.xfail(f"{len(bugs)} known bug(s) in trustip: " + "; ".join(bugs))


def weak(plugin: dict) -> dict:
    """The same policy, weakened the way a bad configuration would: the attacker's addresses are a
    `use` rule, trusted for X-Forwarded-For and for the client header."""
    attacker = [f"{hostile.ATTACKER}/32", f"{hostile.ATTACKER6}/128"]
    plugin = json.loads(json.dumps(plugin))
    plugin["rules"] = [{"from": attacker, "proxy_protocol": "use"}, *plugin["rules"]]
    plugin.setdefault("xff", {}).setdefault("trusted", []).extend(attacker)
    if "client_header" in plugin:
        plugin["client_header"]["trusted"].extend(attacker)
    return plugin


def test_invariant_catches_a_weak_policy(build, start_envoy, echo, capsys):
    """The checks can fail: the same cases, with the expectations of the real policies, against an
    Envoy whose policies trust the attacker. The attacker's X-Forwarded-For, Forwarded, client
    header, look-alike headers and PROXY headers are then believed, and the invariant must report
    the spoofed addresses (or the wrong R) that reach the upstream, in every category."""
    specs = listeners(build)
    for spec in specs:
        spec.plugin = weak(spec.plugin)
    weak_envoy = start_envoy(*specs, name="hostile-weak")
    reported = {}
    for category in hostile.CATEGORIES:
        cases = hostile.corpus(category)
        _, found, _ = run(weak_envoy, echo, cases)
        spoofs = [c for c in cases if any("spoofed address" in p or p.startswith("R = ") for p in found[c.test_id])]
        reported[category] = (len(spoofs), len(cases))
        assert spoofs, f"{category}: no case reported a spoof against a policy that trusts the attacker"
    with capsys.disabled():
        print(f"\nweak policy ({build}): cases reporting a spoofed address: "
              + ", ".join(f"{c} {n}/{t}" for c, (n, t) in reported.items()))  # fmt: skip


def test_all_categories_ran(build, envoy, capsys):
    """All 19 categories ran for this build, each with its cases counted; prints the table."""
    ran = COUNTS.get(build, {})
    assert list(ran) == list(hostile.CATEGORIES), f"categories that ran: {list(ran)}"
    assert len(ran) == 19
    for category, counted in ran.items():
        assert counted["cases"] == len(hostile.corpus(category)) and counted["cases"] >= 60, (category, counted)
    total = sum(c["cases"] for c in ran.values())
    lines = [f"hostile corpus, {build} build: {total} hostile requests over {len(ran)} categories", "",
             "| # | category | cases | outcomes | seconds |", "|---|---|---|---|---|"]  # fmt: skip
    for i, (category, counted) in enumerate(ran.items(), 1):
        outcomes = ", ".join(f"{k} x{v}" for k, v in sorted(counted["outcomes"].items()))
        lines.append(f"| {i} | {category} | {counted['cases']} | {outcomes} | {counted['seconds']:.1f} |")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    log = envoy.log_text()
    assert not [line for line in log.splitlines() if any(word in line for word in BAD_LOG)]
    still_serving(envoy)
