"""The client-IP comparison of docs/client-ip-sources.md (issue 10), measured on loopback.

The same requests go to three systems, each run for real:
- Envoy 1.40 (.venv/bin/envoy) without trustip, one listener per setting: the HCM's
  `use_remote_address: true` + `xff_num_trusted_hops: 1` / `2` (what Istio's `numTrustedProxies`
  sets), and its original-IP-detection extensions `envoy.http.original_ip_detection.xff` (with
  `xff_trusted_cidrs`) and `envoy.http.original_ip_detection.custom_header` (`cf-connecting-ip`,
  without and with `reject_with_status: 403`). The client Envoy decided is its downstream remote
  address after detection: the route adds it to the upstream request as a header
  (`%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`), read back from the recording echo server. That
  formatter reads the stream's address provider, which the HCM overwrites with the detected
  address, so it holds whatever Envoy would log, rate-limit or authorize on. Envoy's own
  `x-envoy-external-address` would not do: Envoy sets it only with `use_remote_address: true`,
  which the detection extensions cannot be combined with (checked below).
- Debian's nginx with the realip module (harness/nginx.py), one server per setting:
  X-Forwarded-For with `real_ip_recursive off` and `on`, and CF-Connecting-IP, each with
  `set_real_ip_from 127.0.0.5`. The body is `$remote_addr`.
- trustip in real Envoy, in the build under test (wasm and native), one listener per policy; R is
  the `x-envoy-external-address` trustip sets (`headers.set`'s default) as the upstream got it, or
  the rejection's status and `x-trustip-reject` reason.

Peers: 127.0.0.5 is the trusted proxy or CDN edge, 127.0.0.66 a client connecting directly.
A cell is the client address the system decided, `(peer)` after it when that is the TCP peer,
`rejected (403 ...)`, or `config refused` when the system would not start with the setting.

The measured tables must equal the ones between the markers in docs/client-ip-sources.md, for
both builds (the Envoy and nginx cells are measured once per module run): the document cannot
claim a result no run produced. Reproduce with
`.venv/bin/pytest tests/e2e/test_client_ip_comparison.py -q`; with `TRUSTIP_UPDATE_DOC=1` the
run writes the measured tables between the markers instead (the first build's; the second must
then measure the same, or the test fails).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import pytest

from harness import client, names
from harness.envoy import ENVOY_BIN, REPO, WASM, Envoy, EnvoyWithListeners, Listener
from harness.nginx import NGINX_BIN, Nginx, RealIp
from harness.net import free_port

EDGE = "127.0.0.5"  # the trusted proxy / CDN edge
INNER = "10.0.0.2"  # a second trusted proxy, named in X-Forwarded-For only
DIRECT = "127.0.0.66"  # a client connecting directly, trusted by no one
DOC = REPO / "docs" / "client-ip-sources.md"
TABLE_START, TABLE_END = "<!-- comparison:start -->", "<!-- comparison:end -->"
DECIDED = "x-decided-client"  # what the plain Envoy's route adds: the address Envoy decided


@dataclass(frozen=True)
class Input:
    peer: str
    headers: tuple[tuple[str, str], ...] = ()

    def peer_cell(self) -> str:
        return f"edge {self.peer}" if self.peer == EDGE else f"client {self.peer}"

    def headers_cell(self) -> str:
        if not self.headers:
            return "(none)"
        short = {"x-forwarded-for": "XFF", "cf-connecting-ip": "CF-Connecting-IP", "forwarded": "Forwarded"}
        return "; ".join(f"{short[name]}: `{value}`" for name, value in self.headers)


def xff(value: str, peer: str = EDGE) -> Input:
    return Input(peer, (("x-forwarded-for", value),))


def cf(value: str, peer: str = EDGE) -> Input:
    return Input(peer, (("cf-connecting-ip", value),))


def fwd(value: str, peer: str = EDGE) -> Input:
    return Input(peer, (("forwarded", value),))


INPUTS = [
    xff("203.0.113.9"),  # one hop: the edge names the client
    xff("198.51.100.1, 203.0.113.9"),  # two elements: a claim, then what the edge saw
    xff(f"192.0.2.66, 203.0.113.9, {INNER}"),  # spoofed leftmost, through a second trusted proxy
    Input(EDGE),  # no header: fewer elements than any hop count
    xff("bogus, 203.0.113.9"),  # malformed left of the client
    xff("203.0.113.9, bogus"),  # malformed rightmost
    xff("203.0.113.9:8080"),  # an element with a port
    xff("0.0.0.0"),  # the unspecified address
    xff("2001:db8::7"),  # IPv6
    xff("[2001:db8::7]:443"),  # IPv6 with brackets and a port
    xff("203.0.113.9", peer=DIRECT),  # an untrusted direct client sending XFF
    cf("203.0.113.9"),  # the CDN edge's one-address header
    cf("203.0.113.9", peer=DIRECT),  # the same header from an untrusted direct client
    cf("bogus"),  # malformed
    fwd('for="[2001:db8::7]:443"'),  # RFC 7239 Forwarded, IPv6 with a port
    fwd("for=unknown"),  # RFC 7239's unknown client
]


# --- the systems and their settings -------------------------------------------------------

ALL = ["0.0.0.0/0", "::/0"]
TRUSTED = [f"{EDGE}/32", "10.0.0.0/8"]  # the edge and the internal proxies

# trustip policies, one listener each (name -> plugin JSON).
TRUSTIP = {
    "hops1-all": {"xff": {"trusted": ALL, "trusted_hops": 1}},
    "hops2-all": {"xff": {"trusted": ALL, "trusted_hops": 2}},
    "hops1-edge": {"xff": {"trusted": TRUSTED, "trusted_hops": 1}},
    "walk": {"xff": {"trusted": TRUSTED}},
    "walk-forwarded": {"xff": {"trusted": TRUSTED, "source": "forwarded"}},
    "cf": {"client_header": {"name": "cf-connecting-ip", "trusted": TRUSTED}},
    "cf-closed": {"client_header": {"name": "cf-connecting-ip", "trusted": TRUSTED, "fail_closed": True}},
}

# Envoy without trustip: name -> what the HCM gets on top of the route and the router.
XFF_EXTENSION = "envoy.http.original_ip_detection.xff"
CUSTOM_HEADER_EXTENSION = "envoy.http.original_ip_detection.custom_header"


def _xff_extension(**config) -> dict:
    return {
        "name": XFF_EXTENSION,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.original_ip_detection.xff.v3.XffConfig",
            **config,
        },
    }


def _custom_header(**config) -> dict:
    return {
        "name": CUSTOM_HEADER_EXTENSION,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.original_ip_detection.custom_header.v3.CustomHeaderConfig",
            "header_name": "cf-connecting-ip",
            **config,
        },
    }


ENVOY = {
    "hcm-hops1": {"use_remote_address": True, "xff_num_trusted_hops": 1},
    "hcm-hops2": {"use_remote_address": True, "xff_num_trusted_hops": 2},
    # The extensions are refused together with use_remote_address (Envoy's HCM documentation).
    "ext-xff-cidrs": {
        "original_ip_detection_extensions": [
            _xff_extension(
                xff_trusted_cidrs={
                    "cidrs": [
                        {"address_prefix": cidr.split("/")[0], "prefix_len": int(cidr.split("/")[1])} for cidr in TRUSTED
                    ]
                }
            )
        ]
    },
    "ext-custom": {"original_ip_detection_extensions": [_custom_header()]},
    "ext-custom-403": {"original_ip_detection_extensions": [_custom_header(reject_with_status={"code": "Forbidden"})]},
}

NGINX = [
    RealIp("xff-off", TRUSTED, "X-Forwarded-For", real_ip_recursive=False),
    RealIp("xff-on", TRUSTED, "X-Forwarded-For", real_ip_recursive=True),
    RealIp("cf", TRUSTED, "CF-Connecting-IP"),
]

# The three tables: (title, [(column header, system, setting)]).
TABLES = [
    (
        "Hop counts",
        [
            ("Envoy HCM, 1 hop", "envoy", "hcm-hops1"),
            ("trustip `trusted_hops: 1`, every peer", "trustip", "hops1-all"),
            ("Envoy HCM, 2 hops", "envoy", "hcm-hops2"),
            ("trustip `trusted_hops: 2`, every peer", "trustip", "hops2-all"),
            ("nginx, recursive off", "nginx", "xff-off"),
            ("trustip `trusted_hops: 1`, trusted peers", "trustip", "hops1-edge"),
        ],
    ),
    (
        "Trusted CIDRs",
        [
            ("Envoy xff extension, `xff_trusted_cidrs`", "envoy", "ext-xff-cidrs"),
            ("nginx, recursive on", "nginx", "xff-on"),
            ("trustip walk", "trustip", "walk"),
            ("trustip walk, `source: forwarded`", "trustip", "walk-forwarded"),
        ],
    ),
    (
        "One client header",
        [
            ("Envoy custom_header", "envoy", "ext-custom"),
            ("Envoy custom_header, 403", "envoy", "ext-custom-403"),
            ("nginx, CF-Connecting-IP", "nginx", "cf"),
            ("trustip `client_header`", "trustip", "cf"),
            ("trustip `client_header`, `fail_closed`", "trustip", "cf-closed"),
        ],
    ),
]
INPUT_HEADER = ["#", "peer", "request headers"]


# --- measuring ---------------------------------------------------------------------------


def address_cell(address: str | None, peer: str) -> str:
    if address is None:
        return "(no address)"
    return f"{address} (peer)" if address == peer else address


def envoy_bootstrap(upstream_port: int) -> tuple[dict, dict[str, int]]:
    """Envoy without trustip: one listener per ENVOY setting, each routing to the echo server
    with the decided address added as DECIDED."""
    ports = {name: free_port() for name in ENVOY}
    listeners = []
    for name, settings in ENVOY.items():
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [
                            {
                                "match": {"prefix": "/"},
                                "route": {"cluster": "upstream"},
                                "request_headers_to_add": [
                                    {
                                        "header": {"key": DECIDED, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }
            ],
            **settings,
        }
        listeners.append(
            {
                "name": name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[name]}},
                "filter_chains": [
                    {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                ],
            }
        )
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]},
                }
            ],
        },
    }
    return config, ports


def envoy_cell(port: int, case: Input) -> str:
    response = client.request(port, list(case.headers), source=case.peer)
    if response.closed:
        return "closed"
    if response.status != 200:
        return f"rejected ({response.status})"
    return address_cell(response.upstream_header(DECIDED), case.peer)


def nginx_cell(port: int, case: Input) -> str:
    response = client.request(port, list(case.headers), source=case.peer)
    if response.status != 200:
        return f"status {response.status}"
    return address_cell(response.body.decode().strip(), case.peer)


def trustip_cell(port: int | None, case: Input) -> str:
    if port is None:
        return "config refused"
    response = client.request(port, list(case.headers), source=case.peer)
    if response.closed:
        return "closed"
    if response.status != 200:
        return f"rejected ({response.status} {response.header(names.REJECT_HEADER)})"
    return address_cell(response.upstream_header("x-envoy-external-address"), case.peer)


@pytest.fixture(scope="module")
def reference(echo, workdir) -> dict[tuple[str, str], list[str]]:
    """Envoy's and nginx's cells, measured once per module run: (system, setting) -> a cell
    per input."""
    config, ports = envoy_bootstrap(echo.port)
    envoy = Envoy(config, name="client-ip-envoy", workdir=workdir("client-ip-envoy"))
    nginx = Nginx([RealIp(s.name, list(s.set_real_ip_from), s.real_ip_header, s.real_ip_recursive) for s in NGINX], workdir=workdir("client-ip-nginx"))
    envoy.start()
    try:
        nginx.start()
        try:
            cells = {("envoy", name): [envoy_cell(port, case) for case in INPUTS] for name, port in ports.items()}
            cells |= {("nginx", s.name): [nginx_cell(nginx.port(s.name), case) for case in INPUTS] for s in NGINX}
        finally:
            nginx.stop()
    finally:
        envoy.stop()
    return cells


def trustip_listeners(names_: list[str]) -> list[Listener]:
    return [Listener(name=name, plugin=TRUSTIP[name], proxy_protocol="none", ipv6=False) for name in names_]


@pytest.fixture(scope="module")
def trustip(request, build, echo, workdir) -> dict[tuple[str, str], list[str]]:
    """trustip's cells in the build under test. One Envoy carries every policy; when Envoy
    refuses that configuration, each policy gets an Envoy of its own, and a policy whose Envoy
    does not start is `config refused`."""
    artifact = request.getfixturevalue(build)
    wasm = artifact if build == "wasm" else WASM

    def start(listeners: list[Listener], label: str) -> EnvoyWithListeners | None:
        for spec in listeners:
            spec.build = build
        instance = EnvoyWithListeners(
            listeners, upstream_port=echo.port, wasm=wasm, name=f"client-ip-{label}", workdir=workdir(f"client-ip-{label}-{build}")
        )
        try:
            return instance.start()
        except RuntimeError:
            instance.stop()  # exited: drops it from the harness's live list
            return None

    running: list[EnvoyWithListeners] = []
    ports: dict[str, int | None] = {}
    try:
        everything = start(trustip_listeners(list(TRUSTIP)), "trustip")
        if everything is not None:
            running.append(everything)
            ports = {name: everything.port(name) for name in TRUSTIP}
        else:
            for name in TRUSTIP:
                alone = start(trustip_listeners([name]), name)
                ports[name] = alone.port(name) if alone else None
                if alone:
                    running.append(alone)
        return {("trustip", name): [trustip_cell(ports[name], case) for case in INPUTS] for name in TRUSTIP}
    finally:
        for instance in running:
            instance.stop()


def measured_tables(cells: dict[tuple[str, str], list[str]]) -> list[list[list[str]]]:
    """Each table as rows of cells, its header row first."""
    tables = []
    for _title, columns in TABLES:
        rows = [INPUT_HEADER + [header for header, _, _ in columns]]
        for i, case in enumerate(INPUTS):
            rows.append([str(i + 1), case.peer_cell(), case.headers_cell()] + [cells[(system, setting)][i] for _, system, setting in columns])
        tables.append(rows)
    return tables


def markdown(tables: list[list[list[str]]]) -> str:
    out = []
    for (title, _), rows in zip(TABLES, tables):
        out.append(f"#### {title}\n")
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * len(rows[0]))
        out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_doc(tables: list[list[list[str]]]) -> None:
    """Replaces what stands between the markers with the measured tables (TRUSTIP_UPDATE_DOC)."""
    text = DOC.read_text()
    assert TABLE_START in text and TABLE_END in text, f"{DOC} has no {TABLE_START} ... {TABLE_END} block"
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    DOC.write_text(f"{head}{TABLE_START}\n\n{markdown(tables)}\n{TABLE_END}{tail}")


def doc_tables() -> list[list[list[str]]]:
    """The tables between the markers in docs/client-ip-sources.md (a table is a run of lines
    starting with `|`; separator lines dropped)."""
    text = DOC.read_text() if DOC.exists() else ""
    assert TABLE_START in text and TABLE_END in text, f"{DOC} has no {TABLE_START} ... {TABLE_END} block"
    block = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in block.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            current = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if all(set(cell) <= set("-:") and cell for cell in cells):
            continue
        if current is None:
            current = []
            tables.append(current)
        current.append(cells)
    return tables


# --- the tests -------------------------------------------------------------------------------

_WRITTEN: list[str] = []  # the build whose tables TRUSTIP_UPDATE_DOC=1 wrote in this run


def test_the_references_are_the_ones_the_doc_names():
    """The doc names the versions measured: Envoy 1.40 and Debian's nginx 1.22, built with the
    realip module (`nginx -V`)."""
    text = DOC.read_text()
    nginx = subprocess.run([NGINX_BIN, "-V"], capture_output=True, text=True)
    nginx_out = nginx.stderr + nginx.stdout
    assert "--with-http_realip_module" in nginx_out, nginx_out
    nginx_version = re.search(r"nginx/(\d+\.\d+)", nginx_out).group(1)
    assert f"**nginx {nginx_version}**" in text, f"the doc does not name nginx {nginx_version}"
    envoy = subprocess.run([str(ENVOY_BIN), "--version"], capture_output=True, text=True).stdout
    envoy_version = re.search(r"/(\d+\.\d+)\.\d+/", envoy).group(1)
    assert f"**Envoy {envoy_version}**" in text, f"the doc does not name Envoy {envoy_version}"


def test_envoy_refuses_the_extensions_with_use_remote_address(workdir):
    """Why the extension listeners keep `use_remote_address: false` (the doc says so): Envoy
    refuses a configuration that mixes them."""
    config, _ = envoy_bootstrap(free_port())
    hcm = config["static_resources"]["listeners"][2]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "original_ip_detection_extensions" in hcm
    hcm["use_remote_address"] = True
    envoy = Envoy(config, name="client-ip-mixed", workdir=workdir("client-ip-mixed"))
    code = envoy.run_to_exit()
    assert code not in (0, None), f"Envoy accepted the mix (exit {code})"
    assert "Original IP detection extensions and use_remote_address may not be mixed" in envoy.output_text()


def test_the_measured_tables_are_the_ones_in_the_doc(reference, trustip, build):
    """docs/client-ip-sources.md's tables are what this module measures, in both builds."""
    measured = measured_tables(reference | trustip)
    if os.environ.get("TRUSTIP_UPDATE_DOC") == "1" and not _WRITTEN:
        write_doc(measured)
        _WRITTEN.append(build)
    documented = doc_tables()
    if measured != documented:
        diffs = []
        for (title, _), m_rows, d_rows in zip(TABLES, measured, documented + [[]] * len(TABLES)):
            for m, d in zip(m_rows, d_rows + [[]] * len(m_rows)):
                if m != d:
                    diffs.append(f"  {title}:\n    measured   {m}\n    documented {d}")
        pytest.fail(
            f"{build} build: the measured tables differ from {DOC.relative_to(REPO)} (between "
            f"{TABLE_START} and {TABLE_END}). Measured:\n\n{markdown(measured)}\nRows that differ:\n"
            + "\n".join(diffs)
            + f"\n(tables: measured {len(measured)}, documented {len(documented)})"
        )


# What docs/client-ip-sources.md says about the tables: pairs of columns and the rows (the "#"
# of INPUTS) where they differ; on every other row they agree. A change in any system that moves
# a row in or out of these sets fails here, so the prose cannot drift from the tables either.
DIFFERENCES = {
    # Envoy parses no port and takes 0.0.0.0 as a client; trustip takes ports, never 0.0.0.0.
    (("envoy", "hcm-hops1"), ("trustip", "hops1-all")): {7, 8, 10},
    # Envoy does not check the element it counts over (`bogus`); trustip falls back to the peer.
    (("envoy", "hcm-hops2"), ("trustip", "hops2-all")): {6},
    # nginx takes 0.0.0.0.
    (("nginx", "xff-off"), ("trustip", "hops1-edge")): {8},
    # Only the peer gate differs: Envoy's hop count believes the direct client's XFF.
    (("envoy", "hcm-hops1"), ("trustip", "hops1-edge")): {7, 8, 10, 11},
    (("envoy", "ext-xff-cidrs"), ("trustip", "walk")): {7, 8, 10},
    (("nginx", "xff-on"), ("trustip", "walk")): {8},
    (("envoy", "ext-xff-cidrs"), ("nginx", "xff-on")): {7, 10},
    # Envoy's custom_header believes any peer; with reject_with_status it also refuses a peer
    # that never claimed to be a CDN (no header), which trustip serves as itself.
    (("envoy", "ext-custom"), ("trustip", "cf")): {13},
    (("envoy", "ext-custom-403"), ("trustip", "cf-closed")): {11, 13},
    (("nginx", "cf"), ("trustip", "cf")): set(),
}


def outcome(cell: str) -> str:
    """A cell without trustip's reject reason: `rejected (403 client_header)` is `rejected (403)`."""
    return re.sub(r"^rejected \((\d+)[^)]*\)$", r"rejected (\1)", cell)


@pytest.mark.parametrize("pair", list(DIFFERENCES), ids=lambda pair: f"{pair[0][1]}-vs-{pair[1][0]}-{pair[1][1]}")
def test_where_the_systems_differ(reference, trustip, pair):
    """The rows where two columns differ are the ones docs/client-ip-sources.md names."""
    cells = reference | trustip
    left, right = pair
    differ = {i + 1 for i, (a, b) in enumerate(zip(cells[left], cells[right])) if outcome(a) != outcome(b)}
    assert differ == DIFFERENCES[pair], (
        f"{left} and {right} differ on rows {sorted(differ)}, the doc says {sorted(DIFFERENCES[pair])}: "
        + "; ".join(f"#{i}: {cells[left][i - 1]} / {cells[right][i - 1]}" for i in sorted(differ ^ DIFFERENCES[pair]))
    )
