#!/usr/bin/env python3
"""Writes everything one `scripts/bench` run needs into a work directory.

  prepare.py --work DIR --trustip-cli PATH --trustip-wasm PATH --noop-wasm PATH
             --trustip-native PATH --noop-native PATH
             [--port-base N] [--upstream direct|loopback] [--loads A,B,...]

Files written (DIR/...):
  policy-small.json    the realistic trustip policy (trustip-wasm, trustip-native,
                       trustip-native-listener)
  policy-large.json    the same with 10,000 trusted XFF CIDRs, IPv4 and IPv6 (trustip-wasm-large,
                       trustip-native-large)
  envoy-VARIANT.yaml   one Envoy bootstrap per variant (VARIANTS below), all from ONE template:
                       the bootstrap `trustip render --target envoy` prints for the small policy
                       (the large one for the -large variants), with the access logs removed and
                       the route answering itself (direct_response). The wasm variants keep
                       set_filter_state (the wasm build reads the direct peer from it); `envoy`
                       and the native variants drop it and the wasm filters, and the native ones
                       add the dynamic-module filters (the same policy JSON as the wasm build's).
                       Listener, proxy_protocol, HCM and route are otherwise the same bytes.
  haproxy.cfg          HAProxy (mode tcp): per variant an LB frontend on 127.0.0.5 that connects
                       to Envoy from 127.0.0.5 with send-proxy-v2, and a relay frontend on
                       127.0.0.6 that connects from 127.0.0.6 without PROXY (for the load that
                       carries a hand-built PROXY v2 header with an AWS VPC endpoint TLV)
  LOAD.lua             the wrk script of each load: the same request headers for every variant
  plan.sh              shell variables for scripts/bench: variants, ports, loads, URLs
  plan.json            the same for report.py, plus what each load exercises

Checks, before any traffic: each policy through `trustip explain` on the inputs each load
produces (the client R that trustip must find), and every port free.

Python standard library, plus PyYAML from the project's virtualenv (scripts/setup installs it)
to edit the rendered YAML as data rather than text.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import shlex
import socket
import struct
import subprocess
import sys
from pathlib import Path

import yaml

# Every variant of one run, in the order of the report. What each adds to `envoy`:
VARIANTS = {
    "envoy": {
        "build": "-", "policy": None,
        "adds": "nothing: proxy_protocol listener filter, HCM (use_remote_address, the HCM "
        "appending to X-Forwarded-For itself), router",
    },
    "noop-wasm": {
        "build": "wasm", "policy": None,
        "adds": "set_filter_state and bench/noop (proxy-wasm, V8, one VM for both roles) as "
        "network and HTTP filter, every callback Continue; skip_xff_append",
    },
    "trustip-wasm": {
        "build": "wasm", "policy": "small",
        "adds": "set_filter_state and trustip.wasm as network and HTTP filter (as rendered); "
        "skip_xff_append",
    },
    "trustip-wasm-large": {
        "build": "wasm", "policy": "large",
        "adds": "trustip-wasm with 10,000 trusted XFF CIDRs",
    },
    "noop-native": {
        "build": "native", "policy": None,
        "adds": "bench/noop-native (dynamic module) as HTTP filter, every hook Continue; "
        "skip_xff_append",
    },
    "trustip-native": {
        "build": "native", "policy": "small",
        "adds": "libtrustip.so as listener filter (after proxy_protocol) and HTTP filter; "
        "skip_xff_append",
    },
    "trustip-native-listener": {
        "build": "native", "policy": "small",
        "adds": "libtrustip.so as listener filter only; the HCM writes X-Forwarded-For and "
        "x-envoy-external-address from the remote address trustip sets",
    },
    "trustip-native-large": {
        "build": "native", "policy": "large",
        "adds": "trustip-native with 10,000 trusted XFF CIDRs",
    },
}

LB_IP = "127.0.0.5"  # HAProxy: send-proxy-v2, rule `require`
NLB_IP = "127.0.0.6"  # a relay playing an AWS NLB: PROXY v2 + 0xEA TLV, rule `require` + tlvs
CLIENT_IP = "127.0.0.1"  # wrk's address (the kernel picks it for every 127.x destination)
TLV_PROXY_SOURCE = ("127.0.0.9", 40000)  # the client the hand-built PROXY header claims
VPCE_ID = "vpce-0a1b2c3d4e5f60718"

# The small policy's trusted XFF blocks. 127.0.0.0/28 holds wrk's address and the PROXY sources,
# so C is trusted on every path and the XFF walk runs in every load.
SMALL_TRUSTED = ["127.0.0.0/28", "10.0.0.0/8", "172.16.0.0/12", "2001:db8:ffff::/48"]
LARGE_COUNT = 10_000
LARGE_SEED = 4  # deterministic: the same 10,000 CIDRs on every run
XFF_ENTRIES = 20
XFF_CLIENT = "203.0.113.7"  # TEST-NET-3: never trusted


def small_policy() -> dict:
    return {
        "mode": "enforce",
        "direct_peer": {"filter_state": "trustip.direct_peer", "if_missing": "reject"},
        "rules": [
            # HAProxy, the load balancer of the `*-lb` loads: PROXY required. No TLV allowlist:
            # HAProxy cannot send 0xEA, so an allowlist here would reject all its traffic.
            {"from": [f"{LB_IP}/32"], "proxy_protocol": "require"},
            # An "AWS NLB" with a VPC endpoint allowlist: the `close-tlv` load, whose hand-built
            # PROXY v2 header carries the 0xEA TLV, reaches Envoy through the relay on NLB_IP.
            {
                "from": [f"{NLB_IP}/32", "10.20.0.0/16"],
                "proxy_protocol": "require",
                "tlvs": {"aws_vpce_id": ["vpce-08d2bf15fb1a2b3c4", VPCE_ID]},
            },
            # A known attacker: never believed (no load comes from here).
            {"from": ["127.0.0.66/32"], "proxy_protocol": "deny"},
            # Direct clients (the `*-direct` loads): allowed, without PROXY.
            {"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "reject"},
        ],
        "xff": {"trusted": list(SMALL_TRUSTED), "max_entries": 32},
        "headers": {
            "x_forwarded_for": "overwrite",
            "set": ["x-envoy-external-address", "x-real-ip"],
        },
        "reject_status": 403,
    }


# --- 10,000 CIDRs and the 20-entry X-Forwarded-For --------------------------------------------

_V4_EXCLUDED = [
    ipaddress.ip_network(n)
    for n in [
        "0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
    ]
]
_V6_EXCLUDED = [ipaddress.ip_network("2001:db8::/32")]


def large_trusted() -> tuple[list[str], list[str]]:
    """10,000 trusted CIDRs (70% IPv4 /12../32, 30% IPv6 /20../64, from a fixed seed) and the
    17 addresses between the client and the last two hops of the XFF header, each inside one of
    them (alternating IPv4 and IPv6) but outside the small policy's blocks."""
    rng = random.Random(LARGE_SEED)
    generated: list[ipaddress._BaseNetwork] = []
    seen: set[str] = set()
    target = LARGE_COUNT - len(SMALL_TRUSTED)
    while len(generated) < target:
        if rng.random() < 0.7:
            net = ipaddress.ip_network((rng.getrandbits(32), rng.randint(12, 32)), strict=False)
            excluded = _V4_EXCLUDED
        else:
            address = (0x2 << 125) | rng.getrandbits(125)  # 2000::/3, global unicast
            net = ipaddress.ip_network((address, rng.randint(20, 64)), strict=False)
            excluded = _V6_EXCLUDED
        if any(net.overlaps(e) for e in excluded) or str(net) in seen:
            continue
        seen.add(str(net))
        generated.append(net)
    v4 = [n for n in generated if n.version == 4]
    v6 = [n for n in generated if n.version == 6]
    middle = []
    for i in range(XFF_ENTRIES - 3):
        net = (v4 if i % 2 == 0 else v6)[i * 37]
        middle.append(str(net.network_address + min(1, net.num_addresses - 1)))
    cidrs = [str(n) for n in generated] + list(SMALL_TRUSTED)
    rng.shuffle(cidrs)
    return cidrs, middle


def xff_header(middle: list[str]) -> str:
    """client, 17 addresses trusted only by the large policy, then 10.1.2.3 and 127.0.0.9
    (trusted by both). The small policy walks 3 entries (R = the last of `middle`), the large
    one all 20 (R = the client)."""
    entries = [XFF_CLIENT] + middle + ["10.1.2.3", "127.0.0.9"]
    assert len(entries) == XFF_ENTRIES
    return ", ".join(entries)


# --- PROXY v2 with the AWS TLV, as wrk sends it in the `close-tlv` load -----------------------

def proxy_v2_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    tlv_value = b"\x01" + VPCE_ID.encode()
    tlv = struct.pack("!BH", 0xEA, len(tlv_value)) + tlv_value
    addresses = (
        socket.inet_aton(source[0]) + socket.inet_aton(destination[0])
        + struct.pack("!HH", source[1], destination[1])
    )
    body = addresses + tlv
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def lua_bytes(data: bytes) -> str:
    # Always three digits: Lua reads up to three after the backslash, so a short escape
    # followed by a digit would change meaning.
    return '"' + "".join(
        chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\' else f"\\{b:03d}" for b in data
    ) + '"'


# --- loads --------------------------------------------------------------------------------

# What trustip does per request in each load. "Connection part": the wasm build's network role,
# the native build's listener filter (trustip-native-listener has only that part, and no walk).
LOADS = {
    "ka-lb": {
        "title": "keep-alive via HAProxy",
        "keepalive": True, "path": "lb",
        "exercises": "HTTP part per request: D=127.0.0.5 (rule 0, require), PROXY used "
        "(P=wrk's 127.0.0.1), XFF walk; connection part once per connection (connections are "
        "reused)",
    },
    "ka-direct": {
        "title": "keep-alive direct",
        "keepalive": True, "path": "direct",
        "exercises": "HTTP part per request: D=127.0.0.1 (rule 3, reject: no PROXY, C=D), XFF "
        "walk",
    },
    "close-lb": {
        "title": "new connection per request via HAProxy",
        "keepalive": False, "path": "lb",
        "exercises": "per request: PROXY v2 parsing (and set_filter_state for wasm), connection "
        "part and HTTP part (rule 0, require), XFF walk",
    },
    "close-direct": {
        "title": "new connection per request direct",
        "keepalive": False, "path": "direct",
        "exercises": "per request: connection part and HTTP part (rule 3, no PROXY), XFF walk",
    },
    "close-tlv": {
        "title": "new connection per request, PROXY v2 + AWS TLV via relay",
        "keepalive": False, "path": "tlv",
        "exercises": "per request: PROXY v2 with a 0xEA TLV (hand-built by wrk, relayed from "
        "127.0.0.6), TLV allowlist checked by the connection part and the HTTP part (rule 1), "
        "XFF walk",
    },
}


def lua_script(load: dict, xff: str) -> str:
    lines = [
        "-- wrk script written by bench/prepare.py: the same request for every variant.",
        f"wrk.headers[\"X-Forwarded-For\"] = {json.dumps(xff)}",
    ]
    if not load["keepalive"]:
        # Envoy answers `connection: close` and wrk opens a new connection for every request.
        lines.append('wrk.headers["Connection"] = "close"')
    if load["path"] == "tlv":
        header = proxy_v2_header(TLV_PROXY_SOURCE, ("127.0.0.1", 80))
        lines += [
            "-- Each connection carries exactly one request, so prefixing every request with",
            "-- a PROXY v2 header (AWS VPC endpoint TLV 0xEA) puts one at each connection start.",
            f"local proxy = {lua_bytes(header)}",
            "-- wrk parses the first request() result once to count pipelined requests and",
            "-- would reject the PROXY bytes; that first result is never sent.",
            "local req = nil",
            "request = function()",
            "  if req == nil then req = proxy .. wrk.format(); return wrk.format() end",
            "  return req",
            "end",
        ]
    return "\n".join(lines) + "\n"


# --- Envoy bootstraps ---------------------------------------------------------------------

def render(cli: str, policy: Path, listen: str, admin: str, upstream: str, wasm: str) -> dict:
    out = subprocess.run(
        [cli, "render", "--target", "envoy", "--config", str(policy), "--listen", listen,
         "--admin", admin, "--upstream", upstream, "--wasm", wasm],
        check=True, capture_output=True, text=True,
    ).stdout
    return yaml.safe_load(out)


def trustip_names(cli: str) -> dict:
    """The native build's filter names and metrics namespace, from `trustip names`."""
    out = subprocess.run([cli, "names"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


DYNAMIC_MODULE_TYPES = {
    "listener": "envoy.extensions.filters.listener.dynamic_modules.v3.DynamicModuleListenerFilter",
    "http": "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
}
DYNAMIC_MODULE_FILTERS = {
    "listener": "envoy.filters.listener.dynamic_modules",
    "http": "envoy.extensions.filters.http.dynamic_modules",
}
WASM_FILTERS = ("envoy.filters.network.wasm", "envoy.filters.http.wasm")
SET_FILTER_STATE = "envoy.filters.network.set_filter_state"


def dynamic_module(kind: str, module: str, filter_name: str, namespace: str,
                   config: str | None) -> dict:
    """A dynamic-module filter as tests/e2e/harness/envoy.py native_filter() builds it."""
    typed = {
        "@type": f"type.googleapis.com/{DYNAMIC_MODULE_TYPES[kind]}",
        "dynamic_module_config": {
            "module": {"local": {"filename": module}},
            "metrics_namespace": namespace,
        },
        "filter_name": filter_name,
    }
    if config is not None:
        typed["filter_config"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": config}
    return {"name": DYNAMIC_MODULE_FILTERS[kind], "typed_config": typed}


def bootstrap(variant: str, rendered: dict, args: argparse.Namespace, names: dict,
              upstream_port: int) -> dict:
    doc = json.loads(json.dumps(rendered))  # deep copy
    listener = doc["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"]
    hcm = next(
        f for f in filters if f["name"] == "envoy.filters.network.http_connection_manager"
    )["typed_config"]
    # No per-request or per-connection logging: it would cost the same in every variant and
    # blur the ratios (and with a new connection per request, the connection log is per request).
    hcm.pop("access_log", None)
    listener.pop("access_log", None)
    if args.upstream == "direct":
        # Envoy answers itself: the measurement stays on the listener/HCM/filter path.
        for vhost in hcm["route_config"]["virtual_hosts"]:
            vhost["routes"] = [{
                "match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
            }]
        doc["static_resources"].pop("clusters", None)
    else:
        # The router proxies to a second listener of the same Envoy that answers itself.
        doc["static_resources"]["listeners"].append({
            "name": "static_upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": hcm["@type"],
                    "stat_prefix": "static_upstream",
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                         "filters.http.router.v3.Router"},
                    }],
                    "route_config": {"virtual_hosts": [{
                        "name": "static", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {
                            "status": 200, "body": {"inline_string": "ok\n"}}}],
                    }]},
                },
            }]}],
        })
    build = VARIANTS[variant]["build"]
    if build == "wasm":
        if variant == "noop-wasm":
            for chain in (filters, hcm["http_filters"]):
                for f in chain:
                    if f["name"] not in WASM_FILTERS:
                        continue
                    config = f["typed_config"]["config"]
                    role = ("noop-network" if f["name"] == "envoy.filters.network.wasm"
                            else "noop-http")
                    config["name"] = role
                    config["root_id"] = role
                    config["vm_config"]["vm_id"] = "noop"
                    config["vm_config"]["code"] = {"local": {"filename": args.noop_wasm}}
                    config.pop("configuration", None)
        return doc

    # `envoy` and the native build: no wasm, no set_filter_state (the native filters read the
    # direct peer from Envoy itself). The policy: the very JSON the wasm build gets.
    wasm_http = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
    policy_json = wasm_http["typed_config"]["config"]["configuration"]["value"]
    listener["filter_chains"][0]["filters"] = [
        f for f in filters if f["name"] not in WASM_FILTERS and f["name"] != SET_FILTER_STATE
    ]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] not in WASM_FILTERS]
    namespace = names["native_metrics_namespace"]
    http_filter = None
    if variant == "noop-native":
        http_filter = dynamic_module("http", args.noop_native, "noop-http", "noop", None)
    elif variant in ("trustip-native", "trustip-native-large"):
        http_filter = dynamic_module("http", args.trustip_native, names["http_filter_name"],
                                     namespace, policy_json)
    if variant in ("trustip-native", "trustip-native-large", "trustip-native-listener"):
        # After proxy_protocol, as tests/e2e build it: D and the PROXY source are both known.
        listener["listener_filters"].append(dynamic_module(
            "listener", args.trustip_native, names["listener_filter_name"], namespace,
            policy_json))
    if http_filter is not None:
        hcm["http_filters"].insert(0, http_filter)
    else:
        # No filter writes X-Forwarded-For: the HCM appends the remote address itself (Envoy's
        # default), and sets x-envoy-external-address, as a gateway without trustip would.
        hcm["skip_xff_append"] = False
    return doc


def check_filters(variant: str, doc: dict) -> None:
    """The bootstrap holds the filters the variant is about, and no other module."""
    text = json.dumps(doc)
    found = {
        "wasm": sum(text.count(f'"{name}"') for name in WASM_FILTERS),
        "set_filter_state": text.count(f'"{SET_FILTER_STATE}"'),
        "listener module": text.count(f'"{DYNAMIC_MODULE_FILTERS["listener"]}"'),
        "http module": text.count(f'"{DYNAMIC_MODULE_FILTERS["http"]}"'),
    }
    build = VARIANTS[variant]["build"]
    expected = {
        "wasm": 2 if build == "wasm" else 0,
        "set_filter_state": 1 if build == "wasm" else 0,
        "listener module": 1 if variant.startswith("trustip-native") else 0,
        "http module": 1 if variant in ("noop-native", "trustip-native",
                                        "trustip-native-large") else 0,
    }
    if found != expected:
        sys.exit(f"prepare: {variant}: filters {found}, expected {expected}")


# --- checks -------------------------------------------------------------------------------

def explain(cli: str, policy: Path, peer: str, proxy: str | None, tlv: str | None,
            xff: str) -> dict:
    args = [cli, "explain", "--config", str(policy), "--peer", peer, "--json",
            "--header", f"X-Forwarded-For: {xff}"]
    if proxy:
        args += ["--proxy", proxy]
    if tlv:
        args += ["--tlv", tlv]
    result = subprocess.run(args, capture_output=True, text=True)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        sys.exit(f"prepare: trustip explain failed ({result.returncode}): {result.stderr.strip()}")


def check_free(addresses: list[tuple[str, int]]) -> None:
    for host, port in addresses:
        with socket.socket() as s:
            # As Envoy and HAProxy bind: connections of an earlier run in TIME_WAIT are no
            # obstacle, a listener is.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as err:
                sys.exit(f"prepare: {host}:{port} is taken ({err.strerror}); "
                         "set BENCH_PORT_BASE to another value")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--trustip-cli", required=True)
    parser.add_argument("--trustip-wasm", required=True)
    parser.add_argument("--noop-wasm", required=True)
    parser.add_argument("--trustip-native", required=True)
    parser.add_argument("--noop-native", required=True)
    parser.add_argument("--port-base", type=int, default=19400)
    parser.add_argument("--upstream", choices=["direct", "loopback"], default="direct")
    parser.add_argument("--loads", default=",".join(LOADS))
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)

    loads = [name for name in args.loads.split(",") if name]
    for name in loads:
        if name not in LOADS:
            sys.exit(f"prepare: unknown load {name!r} (known: {', '.join(LOADS)})")

    small = small_policy()
    large_cidrs, middle = large_trusted()
    large = json.loads(json.dumps(small))
    large["xff"]["trusted"] = large_cidrs
    xff = xff_header(middle)
    policies = {"small": work / "policy-small.json", "large": work / "policy-large.json"}
    policies["small"].write_text(json.dumps(small, indent=2) + "\n")
    policies["large"].write_text(json.dumps(large, indent=1) + "\n")

    # What trustip must decide on each path (the same function the filter runs).
    peers = {
        "lb": (f"{LB_IP}:50000", f"{CLIENT_IP}:40000", None),
        "direct": (f"{CLIENT_IP}:40000", None, None),
        "tlv": (f"{NLB_IP}:50000", "%s:%d" % TLV_PROXY_SOURCE, f"aws_vpce_id={VPCE_ID}"),
    }
    expected_client = {"small": middle[-1], "large": XFF_CLIENT}
    decisions = {}
    for size, policy in policies.items():
        for path in sorted({LOADS[name]["path"] for name in loads}):
            peer, proxy, tlv = peers[path]
            result = explain(args.trustip_cli, policy, peer, proxy, tlv, xff)
            if result.get("action") != "accept" or result.get("client_ip") != expected_client[size]:
                sys.exit(f"prepare: {policy.name} on path {path}: trustip explain says "
                         f"{json.dumps(result)}; expected accept with client "
                         f"{expected_client[size]}")
            decisions[f"{policy.name}/{path}"] = {
                "reason": result.get("reason"), "rule": result.get("rule"),
                "client_ip": result.get("client_ip"),
                "x-forwarded-for": (result.get("headers") or {}).get("x-forwarded-for"),
            }

    # Ports: variant i uses base+10i (listener), +1 (admin), +2 (HAProxy LB on 127.0.0.5),
    # +3 (HAProxy relay on 127.0.0.6), +8 (loopback upstream, --upstream loopback only).
    ports = {}
    for i, variant in enumerate(VARIANTS):
        base = args.port_base + 10 * i
        ports[variant] = {"listen": base, "admin": base + 1, "lb": base + 2, "relay": base + 3,
                          "upstream": base + 8}
    free = []
    for p in ports.values():
        free += [("127.0.0.1", p["listen"]), ("127.0.0.1", p["admin"]), (LB_IP, p["lb"]),
                 (NLB_IP, p["relay"])]
        if args.upstream == "loopback":
            free.append(("127.0.0.1", p["upstream"]))
    check_free(free)

    names = trustip_names(args.trustip_cli)
    for variant in VARIANTS:
        p = ports[variant]
        policy = policies[VARIANTS[variant]["policy"] or "small"]
        rendered = render(args.trustip_cli, policy, f"127.0.0.1:{p['listen']}",
                          f"127.0.0.1:{p['admin']}", f"127.0.0.1:{p['upstream']}",
                          args.trustip_wasm)
        doc = bootstrap(variant, rendered, args, names, p["upstream"])
        check_filters(variant, doc)
        header = (f"# scripts/bench, variant {variant}: `trustip render --target envoy` of "
                  f"{policy.name}, edited by bench/prepare.py\n")
        (work / f"envoy-{variant}.yaml").write_text(
            header + yaml.safe_dump(doc, sort_keys=False, width=100))

    haproxy = [
        "# scripts/bench: HAProxy pinned to core 1 with wrk; one thread.",
        "global", "    nbthread 1", "    maxconn 4096",
        "defaults", "    mode tcp", "    timeout connect 2s", "    timeout client 30s",
        "    timeout server 30s", "",
    ]
    for variant in VARIANTS:
        p = ports[variant]
        haproxy += [
            f"frontend lb_{variant}", f"    bind {LB_IP}:{p['lb']}",
            f"    default_backend envoy_{variant}",
            f"backend envoy_{variant}",
            f"    server envoy 127.0.0.1:{p['listen']} send-proxy-v2 source {LB_IP}",
            f"frontend relay_{variant}", f"    bind {NLB_IP}:{p['relay']}",
            f"    default_backend relay_{variant}",
            "# No send-proxy: the client (wrk) writes the PROXY v2 header with the TLV itself.",
            f"backend relay_{variant}",
            f"    server envoy 127.0.0.1:{p['listen']} source {NLB_IP}", "",
        ]
    (work / "haproxy.cfg").write_text("\n".join(haproxy))

    urls = {}
    for name in loads:
        load = LOADS[name]
        (work / f"{name}.lua").write_text(lua_script(load, xff))
        for variant in VARIANTS:
            p = ports[variant]
            host, port = {"lb": (LB_IP, p["lb"]), "direct": ("127.0.0.1", p["listen"]),
                          "tlv": (NLB_IP, p["relay"])}[load["path"]]
            urls[f"{name}/{variant}"] = f"http://{host}:{port}/"

    plan = {
        "variants": list(VARIANTS), "variant_info": VARIANTS, "loads": loads, "ports": ports,
        "urls": urls,
        "load_info": {name: LOADS[name] for name in loads},
        "xff": xff, "decisions": decisions, "upstream": args.upstream,
        "large_count": len(large_cidrs),
        "large_v4": sum(1 for c in large_cidrs if ":" not in c),
        "large_v6": sum(1 for c in large_cidrs if ":" in c),
        "small_trusted": SMALL_TRUSTED,
    }
    (work / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    sh = [f"VARIANTS=({' '.join(VARIANTS)})", f"LOADS=({' '.join(loads)})"]
    for variant in VARIANTS:
        key = variant.replace("-", "_")
        sh.append(f"ADMIN_{key}={ports[variant]['admin']}")
        sh.append(f"LISTEN_{key}={ports[variant]['listen']}")
    sh.append("HAPROXY_BINDS=(" + " ".join(
        f"{LB_IP}:{ports[v]['lb']} {NLB_IP}:{ports[v]['relay']}" for v in VARIANTS) + ")")
    for key, url in urls.items():
        load, variant = key.split("/")
        sh.append(f"URL_{load.replace('-', '_')}_{variant.replace('-', '_')}={shlex.quote(url)}")
    (work / "plan.sh").write_text("\n".join(sh) + "\n")
    print(f"prepare: {len(VARIANTS)} Envoy bootstraps, haproxy.cfg, {len(loads)} wrk scripts in "
          f"{work}; large policy {len(large_cidrs)} CIDRs ({plan['large_v4']} IPv4, "
          f"{plan['large_v6']} IPv6); XFF {XFF_ENTRIES} entries")
    for key, decision in decisions.items():
        print(f"prepare: trustip explain {key}: {decision['reason']}, rule {decision['rule']}, "
              f"client {decision['client_ip']}")


if __name__ == "__main__":
    main()
