"""The configuration matrix people hit in production, reproduced with HAProxy as the L4 load
balancer and real Envoy (issue 3, "The configuration matrix, reproduced").

Dimensions: the load balancer sends PROXY v2 or not (HAProxy `send-proxy-v2`, connecting from
127.0.0.5) x the Envoy listener has the proxy_protocol listener filter or not x, when it has it,
`allow_requests_without_proxy_protocol` on or off x trustip loaded (both roles, policy
`{"rules": [{"from": ["127.0.0.5/32"], "proxy_protocol": "require"}]}`) or not (a plain HCM with
`use_remote_address: true`, as most gateways run).

Each row asserts what a client (127.0.0.66) sees through HAProxy, which client address the
upstream got (x-envoy-external-address), and what `trustip probe` reports when pointed straight at
the Envoy listener from the client's address (not the load balancer's). `python tests/e2e/test_matrix.py`
prints the table in Markdown."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cli_support import LoadBalancer, cli  # noqa: F401  (cli is a fixture)
from harness import client
from harness.envoy import EnvoyWithListeners, Listener

LB = "127.0.0.5"
CLIENT = "127.0.0.66"
POLICY = {"rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}]}

OK_CLIENT = f"200, upstream sees {CLIENT}"
OK_LB = f"200, upstream sees {LB} (the load balancer)"
BAD_REQUEST = "400 Bad Request"
EMPTY = "empty reply (connection closed)"


@dataclass(frozen=True)
class Row:
    lb_proxy: bool  # HAProxy sends PROXY v2
    listener: str  # Envoy's proxy_protocol listener filter: none | strict | optional
    trustip: bool
    client_sees: str  # one of OK_CLIENT, OK_LB, BAD_REQUEST, EMPTY
    probe_listener: str
    proxy_spoofable: bool | None
    xff_spoofable: bool | None

    @property
    def probe_exit(self) -> int:
        return 3 if (self.proxy_spoofable or self.xff_spoofable) else 0

    @property
    def id(self) -> str:
        return f"{'trustip' if self.trustip else 'plain'}-lb_{'proxy' if self.lb_proxy else 'noproxy'}-listener_{self.listener}"


# fmt: off
MATRIX = [
    # Without trustip: the table as people meet it.
    Row(True,  "none",     False, BAD_REQUEST, "no_proxy",       False, True),
    Row(True,  "strict",   False, OK_CLIENT,   "requires_proxy", True,  True),
    Row(True,  "optional", False, OK_CLIENT,   "optional_proxy", True,  True),
    Row(False, "none",     False, OK_LB,       "no_proxy",       False, True),
    Row(False, "strict",   False, EMPTY,       "requires_proxy", True,  True),
    Row(False, "optional", False, OK_LB,       "optional_proxy", True,  True),
    # With trustip trusting PROXY only from the load balancer (require): every misconfiguration
    # fails closed, and nobody but the load balancer can claim an address.
    Row(True,  "none",     True,  EMPTY,       "no_proxy",       False, False),
    Row(True,  "strict",   True,  OK_CLIENT,   "requires_proxy", False, None),
    Row(True,  "optional", True,  OK_CLIENT,   "optional_proxy", False, False),
    Row(False, "none",     True,  EMPTY,       "no_proxy",       False, False),
    Row(False, "strict",   True,  EMPTY,       "requires_proxy", False, None),
    Row(False, "optional", True,  EMPTY,       "optional_proxy", False, False),
]
# fmt: on


def _flag(value: bool | None) -> str:
    return {True: "**yes**", False: "no", None: "unknown"}[value]


def markdown_table(rows: list[Row] = MATRIX) -> str:
    header = (
        "| LB sends PROXY v2 | Envoy proxy_protocol | allow without PROXY | trustip | client through the LB gets "
        "| `probe` listener | proxy_spoofable | xff_spoofable | probe exit |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        filter_on = "off" if row.listener == "none" else "on"
        allow = {"none": "-", "strict": "off", "optional": "on"}[row.listener]
        lines.append(
            f"| {'on' if row.lb_proxy else 'off'} | {filter_on} | {allow} | {'require LB' if row.trustip else 'none'} "
            f"| {row.client_sees} | `{row.probe_listener}` | {_flag(row.proxy_spoofable)} "
            f"| {_flag(row.xff_spoofable)} | {row.probe_exit} |"
        )
    return header + "\n".join(lines) + "\n"


def _listener_name(listener: str, trustip: bool) -> str:
    return f"{'trustip' if trustip else 'plain'}_{listener}"


@pytest.fixture(scope="module")
def envoy(wasm, echo):
    """One Envoy, six listeners: proxy_protocol none/strict/optional, with trustip or without."""
    listeners = []
    for trustip in (False, True):
        for mode in ("none", "strict", "optional"):
            listeners.append(
                Listener(
                    name=_listener_name(mode, trustip),
                    proxy_protocol=mode,
                    network_role=trustip,
                    http_role=trustip,
                    plugin=POLICY if trustip else {},
                    ipv6=False,
                )
            )
    instance = EnvoyWithListeners(listeners, upstream_port=echo.port, wasm=wasm, name="matrix")
    # Without trustip the HCM appends to X-Forwarded-For itself, as gateways do by default.
    for listener in instance.config["static_resources"]["listeners"]:
        if listener["name"].startswith("plain_"):
            hcm = listener["filter_chains"][0]["filters"][-1]["typed_config"]
            hcm["skip_xff_append"] = False
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def lb(envoy):
    """One HAProxy, a frontend per (listener, send PROXY v2 or not)."""
    routes = {}
    for row in MATRIX:
        name = row.id
        routes[name] = (envoy.port(_listener_name(row.listener, row.trustip)), row.lb_proxy)
    instance = LoadBalancer(routes, bind_ip=LB, source_ip=LB)
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.parametrize("row", MATRIX, ids=[row.id for row in MATRIX])
def test_client_through_load_balancer(row: Row, lb, echo):
    response = client.request(lb.ports[row.id], [("x-forwarded-for", "6.6.6.6")], source=CLIENT, dest=LB)
    if row.client_sees == BAD_REQUEST:
        assert response.status == 400, response
        return
    if row.client_sees == EMPTY:
        assert response.closed, response
        return
    assert response.status == 200, response
    expected = CLIENT if row.client_sees == OK_CLIENT else LB
    assert response.upstream_header("x-envoy-external-address") == expected
    if row.trustip:
        # trustip overwrote the client's X-Forwarded-For with the verified chain.
        assert response.upstream_header("x-forwarded-for") == expected


@pytest.mark.parametrize("row", MATRIX, ids=[row.id for row in MATRIX])
def test_probe_classifies_the_listener(row: Row, envoy, cli):  # noqa: F811
    run = cli.probe(envoy.port(_listener_name(row.listener, row.trustip)), "127.0.0.1", "--bind", CLIENT)
    report = run.json()
    assert report["listener"] == row.probe_listener, run
    assert report["proxy_spoofable"] is row.proxy_spoofable, run
    assert report["xff_spoofable"] is row.xff_spoofable, run
    assert run.code == row.probe_exit, run
    assert len(report["probes"]) <= 4


def test_matrix_covers_every_combination():
    combos = {(row.lb_proxy, row.listener, row.trustip) for row in MATRIX}
    assert len(combos) == len(MATRIX) == 2 * 3 * 2


if __name__ == "__main__":
    print(markdown_table())
