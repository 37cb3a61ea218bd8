"""Live reload (issue 12): Envoy reads its listener from a file (LDS, `path_config_source` with a
watched directory; harness/xds.py) and trustip's policy is swapped under load by renaming a new
file over it, in the shipped layout of each build (wasm: network + HTTP role in one VM; native:
listener + HTTP filter).

Five clients send requests one after the other while the policy changes: through HAProxy
(`send-proxy-v2`, the trusted load balancer) and from a trusted relay that sends its own PROXY
header, each on keep-alive connections and on a new connection per request, and an attacker
whose PROXY header is refused. Every request carries spoofed client headers. The two policies
differ in who the client is and where it is written:

- A: the relay's PROXY source is the client (`use`), written to `x-real-ip`;
- B: the relay itself is the client (`ignore`), written to `x-client-ip`.

What must hold: no request fails (every one gets a whole 200, the attacker's are all refused);
every upstream request carries exactly A's or B's headers, never the spoofed address, never a
mix; a connection keeps the policy it was accepted with; once a new connection has shown the
new policy, every connection opened later shows it; a refused policy (bad JSON, a CIDR with
host bits, an unknown field) is counted `lds.update_rejected`, logged in one trustip line, and
the old policy keeps serving; the next good policy applies.
"""

from __future__ import annotations

import math
import select
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest

from harness import client, names
from harness.envoy import NATIVE, WASM, Listener
from harness.load import KeepAliveConnection, Load, Record, Worker
from harness.upstream import EchoServer
from harness.xds import FileLdsEnvoy

LB = "127.0.0.5"
RELAY = "127.0.0.7"  # a trusted peer that sends its own PROXY header
ATTACKER = "127.0.0.66"
SPOOF = "6.6.6.6"
SPOOFED = [("x-forwarded-for", SPOOF), ("x-real-ip", SPOOF), ("x-client-ip", SPOOF)]
WATCHED = ("x-forwarded-for", "x-envoy-external-address", "x-real-ip", "x-client-ip")


def policy(relay_word: str, client_header: str) -> dict:
    return {
        "rules": [
            {"from": [f"{LB}/32"], "proxy_protocol": "require"},
            {"from": [f"{RELAY}/32"], "proxy_protocol": relay_word},
        ],
        "headers": {"set": ["x-envoy-external-address", client_header]},
    }


POLICIES = {"A": policy("use", "x-real-ip"), "B": policy("ignore", "x-client-ip")}
CLIENT_HEADER = {"A": "x-real-ip", "B": "x-client-ip"}
OTHER = {"A": "B", "B": "A"}

# Each client: the source it connects from, the PROXY source it claims (None: through the load
# balancer, which sends the source as PROXY v2), and R under each policy.
CLIENTS = {
    "lb-keepalive": ("127.0.0.42", None, {"A": "127.0.0.42", "B": "127.0.0.42"}),
    "lb-new": ("127.0.0.43", None, {"A": "127.0.0.43", "B": "127.0.0.43"}),
    "relay-keepalive": (RELAY, "192.0.2.77", {"A": "192.0.2.77", "B": RELAY}),
    "relay-new": (RELAY, "192.0.2.78", {"A": "192.0.2.78", "B": RELAY}),
    "probe": (RELAY, "192.0.2.79", {"A": "192.0.2.79", "B": RELAY}),
}

BAD = [
    # (id, policy text or dict, what trustip's one refusal line must say)
    ("not-json", "{not json", "trustip: invalid configuration: .: key must be a string"),
    (
        "host-bits",
        {"rules": [{"from": ["127.0.0.5/8"], "proxy_protocol": "require"}]},
        'trustip: invalid configuration: rules[0].from[0]: "127.0.0.5/8": host bits are set; did you mean 127.0.0.0/8?',
    ),
    ("unknown-field", {**POLICIES["A"], "rulez": []}, "trustip: invalid configuration: rulez"),
]
# What Envoy says when the filter refuses the policy (measured in Envoy 1.40): the wasm build's
# on_configure returns false, so the network role's plugin (the listener's first trustip
# filter) fails to load; the native build's config_new returns NULL for the listener filter.
ENVOY_REFUSAL = {
    "wasm": "lds: listener 'main' config rejected: Unable to create Wasm plugin trustip-main-network",
    "native": "lds: listener 'main' config rejected: Failed to create filter config: "
    "Failed to initialize dynamic module listener filter config",
}
# Log lines that must never appear (a panic, a VM trap, an Envoy bug, a crash).
BROKEN = ("panicked", "wasm trap", "Uncaught", "unreachable", "envoy bug", "Caught ", "Backtrace")


def listener(build: str, plugin: dict | str) -> Listener:
    """The listener each build ships (envoy/strict-lb-only.yaml, envoy/native-strict-lb-only.yaml):
    strict PROXY; wasm: set_filter_state recording D and P, both roles in one VM; native: the
    listener filter and the HTTP filter."""
    if build == "native":
        return Listener(
            name="main", build=build, plugin=plugin, proxy_protocol="strict", listener_role=True, ipv6=False
        )
    return Listener(
        name="main",
        build=build,
        plugin=plugin,
        proxy_protocol="strict",
        network_role=True,
        direct_peer_format=names.DIRECT_PEER_FORMAT,
        http_vm_id=names.VM_ID,
        network_vm_id=names.VM_ID,
        ipv6=False,
    )


@pytest.fixture(scope="module")
def upstream():
    """The module's own echo server: the load's thousands of requests are forgotten with it."""
    server = EchoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def start_lds_envoy(request, build, upstream, workdir):
    """`start_lds_envoy(policy_name, **options)`: an Envoy reading its listener from a file,
    starting with that policy; stopped after the module."""
    started: list[FileLdsEnvoy] = []
    # The artifact of the build under test must exist (fails clearly, builds nothing).
    artifact = request.getfixturevalue(build)

    def start(policy_name: str, **options) -> FileLdsEnvoy:
        instance = FileLdsEnvoy(
            [listener(build, POLICIES[policy_name])],
            upstream_port=upstream.port,
            name="live-reload",
            wasm=artifact if build == "wasm" else WASM,
            native=artifact if build == "native" else NATIVE,
            workdir=workdir(f"envoy-live-reload-{build}"),
            **options,
        )
        instance.policy = policy_name  # the policy in force, kept by apply_policy
        started.append(instance)
        return instance.start()

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="module")
def envoy(start_lds_envoy):
    instance = start_lds_envoy("A")
    assert seen_policy("probe", probe(instance)) == "A"
    instance.rss_at_start = rss_kib(instance)  # for test_envoy_sound_after_many_reloads
    return instance


@pytest.fixture(scope="module")
def lb(envoy, start_haproxy):
    return start_haproxy(envoy.port(), bind_ip=LB, source_ip=LB)


# --- what a request should show ------------------------------------------------------------


def upstream_view(response: client.Response) -> dict[str, str | None]:
    return {name: response.upstream_header(name) for name in WATCHED}


def expected_view(worker: str, policy_name: str) -> dict[str, str | None]:
    r = CLIENTS[worker][2][policy_name]
    view = {name: None for name in WATCHED}
    view.update({"x-forwarded-for": r, "x-envoy-external-address": r, CLIENT_HEADER[policy_name]: r})
    return view


def seen_policy(worker: str, response: client.Response) -> str | None:
    """"A" or "B" when the upstream got exactly that policy's headers, else None."""
    if response.status != 200:
        return None
    view = upstream_view(response)
    for name in POLICIES:
        if view == expected_view(worker, name):
            return name
    return None


def probe(envoy: FileLdsEnvoy) -> client.Response:
    source, claimed, _ = CLIENTS["probe"]
    return client.request(envoy.port(), SPOOFED, source=source, proxy=client.proxy_v2(claimed, "10.0.0.1", 4242, 80))


def workers(envoy: FileLdsEnvoy, lb) -> list[Worker]:
    made = []
    for name, (source, claimed, _) in CLIENTS.items():
        if name == "probe":
            continue
        keep_alive = name.endswith("keepalive")
        if claimed is None:
            made.append(Worker(name, lb.port, source=source, dest=LB, headers=SPOOFED, keep_alive=keep_alive))
        else:
            proxy = client.proxy_v2(claimed, "10.0.0.1", 4242, 80)
            made.append(
                Worker(name, envoy.port(), source=source, proxy=proxy, headers=SPOOFED, keep_alive=keep_alive)
            )
    attack = client.proxy_v2(SPOOF, "10.0.0.1", 4242, 80)
    made.append(
        Worker("attacker", envoy.port(), source=ATTACKER, proxy=attack, headers=SPOOFED, keep_alive=False, pause=0.02)
    )
    return made


def rss_kib(envoy: FileLdsEnvoy) -> int:
    for line in open(f"/proc/{envoy.process.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- swapping --------------------------------------------------------------------------------


@dataclass
class Phase:
    """One policy's time: the file renamed into place at `written`, and the first new
    connection that showed it answered at `seen` (monotonic seconds)."""

    policy: str
    written: float
    seen: float


class Timeline:
    """The phases of one run; the first is the policy Envoy had when the run began."""

    def __init__(self, policy_name: str) -> None:
        self.phases = [Phase(policy_name, -math.inf, -math.inf)]

    def allowed(self, opened: float, answered: float) -> set[str]:
        """The policies a connection opened at `opened`, first answered at `answered`, may show:
        those whose file was in place at some moment in between and had not yet been replaced
        by a policy a new connection had shown."""
        allowed = set()
        for phase, after in zip(self.phases, self.phases[1:] + [None]):
            until = after.seen if after else math.inf
            if phase.written <= answered and opened < until:
                allowed.add(phase.policy)
        return allowed


def wait_for_policy(envoy: FileLdsEnvoy, policy_name: str, timeout: float = 5.0) -> float:
    """New connections until one shows `policy_name`; returns when it was answered."""
    deadline = time.monotonic() + timeout
    while True:
        response = probe(envoy)
        seen = seen_policy("probe", response)
        assert seen is not None, f"a probe got neither policy: {response}"
        if seen == policy_name:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"new connections still show {seen} {timeout}s after {policy_name} was written")
        time.sleep(0.01)


def wait_for_stat(envoy: FileLdsEnvoy, name: str, value: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while envoy.listener_stats().get(name) != value:
        if time.monotonic() > deadline:
            raise AssertionError(f"listener_manager.{name} is {envoy.listener_stats().get(name)}, not {value}")
        time.sleep(0.02)


def change(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after.get(name, 0) - before.get(name, 0) for name in after if not name.startswith("lds.update_time")}


def apply_policy(envoy: FileLdsEnvoy, build: str, policy_name: str) -> Phase:
    """Renames `policy_name` into place and checks Envoy took it: one successful LDS update that
    modified the listener, the old filter chain (wasm: updated in place) or the old listener
    (native: the listener filter changed, so the listener is replaced) draining, and a new
    connection showing the policy."""
    before = envoy.listener_stats()
    written = time.monotonic()
    envoy.update([listener(build, POLICIES[policy_name])])
    after = envoy.wait_for_update(before)
    delta = change(before, after)
    assert (delta["lds.update_success"], delta["lds.update_rejected"], delta["listener_modified"]) == (1, 0, 1), delta
    assert delta["listener_in_place_updated"] == (1 if build == "wasm" else 0), delta
    assert after["lds.version"] != before["lds.version"], delta
    seen = wait_for_policy(envoy, policy_name)
    draining = "total_filter_chains_draining" if build == "wasm" else "total_listeners_draining"
    wait_for_stat(envoy, draining, before[draining] + 1)
    envoy.policy = policy_name
    return Phase(policy_name, written, seen)


# --- checking a run ---------------------------------------------------------------------------


@dataclass
class Summary:
    requests: int
    connections: int
    attacks: int
    # Keep-alive connections Envoy ended with `connection: close` on a response.
    closed_by_envoy: int
    # After each swap: requests that old keep-alive connections still sent under the old policy
    # once new connections had the new one, and how long after the write the last was answered.
    drained_requests: int
    drain_seconds: float


def check_run(records: list[Record], timeline: Timeline) -> Summary:
    """Every assertion of a run, all failures reported at once."""
    failures: list[str] = []
    connections: dict[int, list[tuple[Record, str]]] = defaultdict(list)
    attacks = 0
    for record in records:
        where = f"{record.worker} connection {record.connection} request {record.index}"
        if record.worker == "attacker":
            attacks += 1
            if record.error or not record.response.closed:
                outcome = record.error or record.response
                failures.append(f"{where}: the attacker's PROXY header was not refused: {outcome}")
            continue
        if record.error:
            failures.append(f"{where}: failed: {record.error}")
            continue
        response = record.response
        if response.status != 200:
            failures.append(f"{where}: {response}")
            continue
        if any(SPOOF in value for _, value in response.json()["headers"]):
            failures.append(f"{where}: the spoofed address reached the upstream: {response.json()['headers']}")
        seen = seen_policy(record.worker, response)
        if seen is None:
            failures.append(f"{where}: neither policy's headers (a mix?): {upstream_view(response)}")
            continue
        connections[record.connection].append((record, seen))

    drained_requests, drain_seconds = 0, 0.0
    for number, requests in connections.items():
        requests.sort(key=lambda item: item[0].index)
        first = requests[0][0]
        shown = {seen for _, seen in requests}
        if len(shown) > 1:
            failures.append(f"{first.worker} connection {number} changed policy: {[seen for _, seen in requests]}")
        allowed = timeline.allowed(first.opened, first.done)
        if not shown <= allowed:
            failures.append(
                f"{first.worker} connection {number} opened at {first.opened:.3f} showed {shown}, allowed {allowed} "
                f"(phases {timeline.phases})"
            )
        for phase in timeline.phases[1:]:
            old = [record for record, seen in requests if seen != phase.policy and record.sent > phase.seen]
            if old and first.opened < phase.written:
                drained_requests += len(old)
                drain_seconds = max(drain_seconds, max(record.done for record in old) - phase.written)

    # Not vacuous: in every phase, new connections of both kinds opened after it was seen and
    # before the next write, and showed it.
    for phase, after in zip(timeline.phases[1:], timeline.phases[2:] + [None]):
        until = after.written if after else math.inf
        for worker in ("lb-new", "relay-new"):
            later = [
                seen
                for requests in connections.values()
                for record, seen in requests
                if record.worker == worker and phase.seen < record.opened < until
            ]
            if not later:
                failures.append(f"{worker}: no new connection opened while {phase.policy} was in force")
    assert not failures, f"{len(failures)} failures in {len(records)} requests:\n" + "\n".join(failures[:30])
    closed_by_envoy = sum(1 for record in records if record.closing and record.worker.endswith("keepalive"))
    return Summary(len(records), len(connections), attacks, closed_by_envoy, drained_requests, drain_seconds)


# --- the tests --------------------------------------------------------------------------------


def test_policy_swaps_under_load(build, envoy, lb, counters):
    """Four swaps (A, B, A, B, A) under load: no failed request, no mix, no spoof; new
    connections see each new policy, old keep-alive connections keep the old one until Envoy
    closes them after a response with `connection: close`."""
    timeline = Timeline(envoy.policy)
    watch = counters(envoy)
    with Load(workers(envoy, lb)) as load:
        time.sleep(1.0)
        for _ in range(4):
            timeline.phases.append(apply_policy(envoy, build, OTHER[envoy.policy]))
            time.sleep(1.5)
    summary = check_run(load.records, timeline)
    refused = "trustip.network.reject_untrusted_proxy" if build == "wasm" else "trustip.listener.reject_untrusted_proxy"
    assert watch.delta().get(refused) == summary.attacks, watch.delta()
    visible = [round(phase.seen - phase.written, 3) for phase in timeline.phases[1:]]
    print(f"\n[{build}] {summary}; new policy seen by a new connection {visible} s after the rename")


@pytest.mark.parametrize("bad_id,bad,refusal", BAD, ids=[bad_id for bad_id, _, _ in BAD])
def test_refused_policy_keeps_the_old_one_under_load(build, envoy, lb, bad_id, bad, refusal):
    """A bad policy under load: Envoy counts the update rejected, trustip logs one line naming
    the error, Envoy says which filter refused, the old policy keeps serving old and new
    connections with no failed request, and the next good policy applies."""
    timeline = Timeline(envoy.policy)
    with Load(workers(envoy, lb)) as load:
        time.sleep(0.5)
        offset = envoy.log_size()
        before = envoy.listener_stats()
        envoy.update([listener(build, bad)])
        after = envoy.wait_for_update(before)
        delta = change(before, after)
        counted = (delta["lds.update_rejected"], delta["lds.update_success"], delta["listener_modified"])
        assert counted == (1, 0, 0), delta
        assert after["lds.version"] == before["lds.version"]
        envoy.wait_for_log(ENVOY_REFUSAL[build], start=offset)
        lines = [line for line in envoy.log_text()[offset:].splitlines() if "trustip: invalid configuration" in line]
        assert len(lines) == 1 and refusal in lines[0], lines
        if build == "wasm":
            envoy.wait_for_log("Plugin trustip-main-network failed to load", start=offset)
        for _ in range(5):
            assert seen_policy("probe", probe(envoy)) == envoy.policy
        time.sleep(1.0)  # the load runs on under the old policy
        timeline.phases.append(apply_policy(envoy, build, OTHER[envoy.policy]))
        time.sleep(1.0)
    summary = check_run(load.records, timeline)
    print(f"\n[{build}] {bad_id}: {lines[0].split('trustip: ', 1)[1]}; {summary}")


@pytest.mark.parametrize("strategy", ["gradual", "immediate"])
def test_old_connection_keeps_its_policy_until_drained(build, start_lds_envoy, strategy):
    """With `--drain-time-s 5`: a connection accepted under A keeps A after the swap to B while
    new connections get B. Envoy's default `gradual` strategy closes it after some response
    (`connection: close`, more likely as the drain time runs out); `immediate` after its next
    one. An idle one is closed when the drain time ends, with no response in flight. Then the
    old filter chain (wasm) or listener (native), and trustip's configuration with it, is gone
    and Envoy serves on."""
    envoy = start_lds_envoy("A", drain_time_s=5, drain_strategy=strategy)
    source, claimed, _ = CLIENTS["relay-keepalive"]
    proxy = client.proxy_v2(claimed, "10.0.0.1", 4242, 80)
    used = KeepAliveConnection(envoy.port(), source=source, proxy=proxy)
    idle = KeepAliveConnection(envoy.port(), source=source, proxy=proxy)
    for connection in (used, idle):
        assert seen_policy("relay-keepalive", connection.request(SPOOFED, "before")) == "A"
    phase = apply_policy(envoy, build, "B")
    response = used.request(SPOOFED, "after")
    assert seen_policy("relay-keepalive", response) == "A"
    if strategy == "immediate":
        assert response.header("connection") == "close", response
    ready, _, _ = select.select([idle.sock], [], [], 20)
    closed = time.monotonic() - phase.written
    assert ready and idle.sock.recv(1) == b"", "Envoy did not close the idle old connection"
    draining = "total_filter_chains_draining" if build == "wasm" else "total_listeners_draining"
    wait_for_stat(envoy, draining, 0)
    assert seen_policy("probe", probe(envoy)) == "B"
    assert envoy.process.poll() is None
    assert not [line for line in envoy.log_text().splitlines() if any(word in line for word in BROKEN)]
    used.close()
    idle.close()
    envoy.stop()
    print(
        f"\n[{build}] {strategy}: old connection's next response connection={response.header('connection')}; "
        f"idle old connection closed {closed:.2f} s after the rename (drain time 5 s)"
    )


def test_envoy_sound_after_many_reloads(build, envoy):
    """Twenty more swaps, each checked by a new connection; then Envoy still runs, logged no
    panic, trap or crash (the only critical lines are the wasm build's refused plugins), and
    its memory did not grow out of bounds."""
    for _ in range(20):
        apply_policy(envoy, build, OTHER[envoy.policy])
    assert envoy.process.poll() is None
    log = envoy.log_text()
    assert not [line for line in log.splitlines() if any(word in line for word in BROKEN)]
    # The wasm build logs each refused policy at critical level: its plugin "failed to load",
    # once, and Envoy's thread-local slot for that (never used) plugin says "configured to fail
    # closed failed to load" on the threads it reached before the listener was refused.
    critical = [line for line in log.splitlines() if "[critical]" in line]
    refused = envoy.listener_stats()["lds.update_rejected"] if build == "wasm" else 0
    failed = [line for line in critical if "Plugin trustip-main-network failed to load" in line]
    fail_closed = [line for line in critical if "Plugin configured to fail closed failed to load" in line]
    assert len(failed) == refused and len(fail_closed) <= 2 * refused, critical
    assert len(failed) + len(fail_closed) == len(critical), critical
    growth = rss_kib(envoy) - envoy.rss_at_start
    stats = envoy.listener_stats()
    print(f"\n[{build}] RSS {envoy.rss_at_start // 1024} MiB at start, +{growth // 1024} MiB after "
          f"{stats['listener_modified']} swaps and {stats['lds.update_rejected']} refused updates")
    assert growth < 16 * 1024, f"RSS grew by {growth} KiB"
