"""A root_id that names the other role (issue 7): the network filter given `trustip-http` or an
empty root_id, the HTTP filter given `trustip-network`. Envoy accepts such a configuration, so
the filter must make it harmless and loud: the misconfigured filter refuses its traffic (the
network filter closes the connection, the HTTP filter answers 500 with
`x-trustip-reject: misconfigured`), no spoofed address reaches the upstream under either failure
policy, the VM does not trap, a correctly configured listener of the same Envoy keeps working,
and Envoy's log has one error line naming the filter type and the root_id.

Each case runs in an Envoy of its own (a trapped VM would poison the next case), laid out as
rendered configurations are: every trustip filter in one VM (vm_id `trustip`), so the
misconfigured filter shares its VM with both of the good listener's filters."""

from __future__ import annotations

import re
import time

import pytest

from harness import client, names
from harness.envoy import Listener

LB = "127.0.0.5"
ATTACKER = "127.0.0.66"
CLIENT = "198.51.100.7"  # what the load balancer's PROXY header says
SPOOF = "203.0.113.9"  # what the attacker claims, by PROXY header and by client headers
PLUGIN = {"rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}]}
SPOOF_HEADERS = [
    ("x-forwarded-for", SPOOF),
    ("x-envoy-external-address", SPOOF),
    ("x-real-ip", SPOOF),
]
VM = names.VM_ID
# root_id, vm_id, failure_policy and a trapping VM are proxy-wasm's; the native filters are chosen
# by filter_name, and a filter_name that does not match the filter type is refused when Envoy
# loads the configuration (test_native_module.py, src/native/config.rs).
pytestmark = pytest.mark.wasm_only("root_id is a proxy-wasm concept: the native filters are chosen by filter_name")

# case id: (the misconfigured filter's type, its root_id)
CASES = {
    "network-filter-with-http-root-id": ("network", "trustip-http"),
    "network-filter-with-empty-root-id": ("network", ""),
    "http-filter-with-network-root-id": ("http", "trustip-network"),
}
FILTER_NAMES = {"network": "envoy.filters.network.wasm", "http": "envoy.filters.http.wasm"}
# What a broken VM leaves in the log: none of it may appear.
TRAP_SIGNS = ("panicked", "invalid context_id", "RuntimeError", "Function: proxy_on", "envoy bug")


def listeners(kind: str, root_id: str, policy: str) -> list[Listener]:
    common = dict(plugin=PLUGIN, failure_policy=policy, network_vm_id=VM, http_vm_id=VM)
    good = Listener(name="good", network_role=True, http_role=True, **common)
    if kind == "network":
        # The misconfigured network filter alone in front of the HCM: if it let a connection
        # through, the HCM would write the attacker's PROXY address into x-envoy-external-address.
        bad = Listener(name="bad", network_role=True, http_role=False, network_root_id=root_id, **common)
    else:
        bad = Listener(name="bad", network_role=False, http_role=True, http_root_id=root_id, **common)
    return [good, bad]


def lb_request(port: int) -> client.Response:
    return client.request(port, source=LB, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 1111, 80))


def spoof_attempts(port: int, kind: str) -> list[client.Response]:
    """Through the misconfigured filter: the attacker claiming SPOOF by PROXY header (v1 and
    v2), and the load balancer's ordinary request. Through an HTTP filter, each also carries
    client headers claiming SPOOF, and the attacker tries those headers alone. (Client headers
    are the HTTP role's business: a network filter alone lets them through even when correctly
    configured, so they are not sent through the network filter.)"""
    headers = SPOOF_HEADERS if kind == "http" else []
    attempts = [
        client.request(port, headers, source=ATTACKER, proxy=client.proxy_v1(SPOOF, "10.0.0.1", 1111, 80)),
        client.request(port, headers, source=ATTACKER, proxy=client.proxy_v2(SPOOF, "10.0.0.1", 1111, 80)),
        client.request(port, headers, source=LB, proxy=client.proxy_v2(CLIENT, "10.0.0.1", 1111, 80)),
    ]
    if kind == "http":
        attempts.append(client.request(port, headers, source=ATTACKER))
    return attempts


def good_listener_traffic(port: int) -> dict[str, client.Response]:
    return {
        "lb": lb_request(port),
        "attacker-proxy": client.request(
            port, SPOOF_HEADERS, source=ATTACKER, proxy=client.proxy_v1(SPOOF, "10.0.0.1", 1111, 80)
        ),
        "attacker-headers": client.request(port, SPOOF_HEADERS, source=ATTACKER),
    }


def assert_good_listener_works(echo, responses: dict[str, client.Response]) -> None:
    response = responses["lb"]
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == CLIENT
    assert response.upstream_header("x-forwarded-for") == CLIENT
    # The attacker's PROXY header: the network role closes the connection.
    response = responses["attacker-proxy"]
    assert response.closed, response
    assert echo.find(response.test_id) is None
    # The attacker's client headers: the HTTP role overwrites them with the real peer.
    response = responses["attacker-headers"]
    assert response.status == 200, response
    assert response.upstream_header("x-envoy-external-address") == ATTACKER
    assert response.upstream_header("x-forwarded-for") == ATTACKER
    assert response.upstream_header("x-real-ip") is None


@pytest.mark.parametrize("policy", ["FAIL_CLOSED", "FAIL_OPEN"])
@pytest.mark.parametrize("case", list(CASES))
def test_mismatch_is_refused_contained_and_logged_once(start_envoy, echo, case, policy):
    kind, root_id = CASES[case]
    envoy = start_envoy(*listeners(kind, root_id, policy), name=f"mismatch-{case}-{policy}")
    try:
        before = good_listener_traffic(envoy.port("good"))
        # The misconfigured filter, twice over (the error line must still be one).
        bad = spoof_attempts(envoy.port("bad"), kind) + spoof_attempts(envoy.port("bad"), kind)
        after = good_listener_traffic(envoy.port("good"))
        try:  # Envoy flushes its log every 50 ms
            envoy.wait_for_log("trustip: invalid configuration", timeout=3)
        except AssertionError:
            pass  # asserted below, after what matters more
        time.sleep(0.2)
        log = envoy.log_text()
    finally:
        envoy.stop()

    # No spoofed address reached the upstream, through any listener.
    for response in [*before.values(), *bad, *after.values()]:
        recorded = echo.find(response.test_id)
        if recorded is not None:
            assert not any(SPOOF.encode() in line for line in recorded.header_lines), (
                f"a spoofed address reached the upstream: {recorded.as_json()}"
            )

    # The misconfigured filter refuses everything, without trapping.
    for response in bad:
        if kind == "network":
            assert response.closed, response
        else:
            assert response.status == 500, response
            assert response.header("x-trustip-reject") == "misconfigured", response
        assert echo.find(response.test_id) is None, f"a request through the misconfigured {kind} filter reached the upstream"

    # No collateral failure: the good listener, whose filters share their VMs with the
    # misconfigured one, decides the same before and after.
    assert_good_listener_works(echo, before)
    assert_good_listener_works(echo, after)

    # Loud: one error line, naming the filter type and the root_id; no sign of a trap.
    expected = f'{FILTER_NAMES[kind]} has root_id "{root_id}"'
    mismatch_lines = [line for line in log.splitlines() if "trustip: invalid configuration" in line]
    assert len(mismatch_lines) == 1, mismatch_lines
    line = mismatch_lines[0]
    assert "[error]" in line and expected in line, line
    assert re.search(r'it must be "trustip-(network|http)"', line), line
    for sign in TRAP_SIGNS:
        assert sign not in log, f"{sign!r} in Envoy's log"
