"""The hostile corpus of the e2e suite (issue 12): named, counted cases in 19 categories, generated
by code, each with its expected outcome, run through real Envoy for both builds by
tests/e2e/test_hostile_corpus.py.

An outside audit of the wasm build once sent 1,260 hostile requests over 19 categories and found
no spoofed address and no trap. This module makes that audit a part of the suite: every case says
what the client sends (peer, PROXY bytes, HTTP/1.1 or h2c request, or raw bytes split into
segments), which outcome is allowed (a status, or the connection closed), and which client
addresses the upstream may see. Expected values come from the contract (docs/trust-model.md,
docs/configuration.md): a small model of the decision below (`Policy.expect`) computes C and R
from the rules, the X-Forwarded-For walk and the client header, written from the documents, not
from the filter's code. Where Envoy itself decides (its PROXY parser, its HTTP codecs, its header
limits) a case allows what Envoy does and says so.

The global invariant, checked for every request that reaches the upstream (`upstream_problems`):
- the upstream's `x-envoy-external-address` (and `x-real-ip`, which `set` also writes) is one
  address, one of the case's acceptable R;
- its X-Forwarded-For and Forwarded are the verified chain: R first, C last, trusted hops between,
  every element a well-formed address;
- the client header of a `client_header` policy is absent or R;
- when C is not trusted, no header of the default strip list reaches it, and no underscore
  variant of an address header reaches it from anyone;
- no header value anywhere holds a spoofed address (6.6.0.0/16 and 2001:db8:bad::/48 are the
  attacker's: no case's policy makes one of them R or a trusted hop).
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import client, names

# --- peers and addresses -------------------------------------------------------------------

LB = "127.0.0.5"  # the load balancer: `require`, health_check_paths
PROXY_PEER = "127.0.0.31"  # a trusted proxy connecting directly: `use`, in xff.trusted
IGNORE_PEER = "127.0.0.12"
REJECT_PEER = "127.0.0.13"
DENY_PEER = "127.0.0.14"
AWS_PEER, AZURE_PEER, GCP_PEER, TLV_USE_PEER = "127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.24"
ATTACKER = "127.0.0.66"  # no rule: the implicit `reject`
ATTACKER6 = "::1"  # no rule either

CLIENT = "198.51.100.7"  # a genuine client, handed over by the LB or a trusted proxy
EDGE = "173.245.48.7"  # a CDN edge: trusted for X-Forwarded-For, trusted for the client header
HOP = "173.245.48.9"
EDGES = "173.245.48.0/20"
HC_PATH = "/healthz/ready"
VPCE = "vpce-0a1b2c3d4e5f60718"
AZURE_LINK = 0x12345678
GCP_PSC = 0x1122334455667711

SPOOF = "6.6.6.6"
MARKER = "spoofed-by-client"  # a client's value for a header only trustip may write
SPOOF6 = "2001:db8:bad::6"
SPOOF_NETS = (ipaddress.ip_network("6.6.0.0/16"), ipaddress.ip_network("2001:db8:bad::/48"))
_SPOOF_TEXT = re.compile(rb"(?<![0-9.])6\.6\.\d{1,3}\.\d{1,3}(?![0-9])|2001:db8:bad:", re.IGNORECASE)

TRUSTED = ["173.245.48.0/20", "2400:cb00::/32", "127.0.0.31/32"]
SET = ["x-envoy-external-address", "x-real-ip"]
CF = "cf-connecting-ip"
TLV_HEADERS = {
    "aws_vpce_id": "x-amzn-vpce-id",
    "azure_link_id": "x-azure-link-id",
    "gcp_psc_connection_id": "x-gcp-psc-connection-id",
    "authority": "x-lb-authority",
    "unique_id": "x-lb-unique-id",
}
# `headers.strip`'s default, copied from docs/configuration.md (not the filter's own list).
DOC_DEFAULT_STRIP = (
    "x-real-ip", "true-client-ip", "x-client-ip", "x-cluster-client-ip", "cf-connecting-ip", "fastly-client-ip", "forwarded",
    "x-original-forwarded-for", "client-ip", "x-originating-ip", "forwarded-for", "x-forwarded",
)  # fmt: skip
ADDRESS_HEADERS = {
    "x-forwarded-for", "x-real-ip", "x-envoy-external-address", "forwarded", *DOC_DEFAULT_STRIP,
}  # fmt: skip

MAIN_RULES = [
    {"from": [f"{LB}/32"], "proxy_protocol": "require", "health_check_paths": [HC_PATH]},
    {"from": [f"{PROXY_PEER}/32"], "proxy_protocol": "use"},
    {"from": [f"{IGNORE_PEER}/32"], "proxy_protocol": "ignore"},
    {"from": [f"{REJECT_PEER}/32"], "proxy_protocol": "reject"},
    {"from": [f"{DENY_PEER}/32"], "proxy_protocol": "deny"},
    {"from": [f"{AWS_PEER}/32"], "proxy_protocol": "require", "tlvs": {"aws_vpce_id": [VPCE]}},
    {"from": [f"{AZURE_PEER}/32"], "proxy_protocol": "require", "tlvs": {"azure_link_id": [str(AZURE_LINK)]}},
    {"from": [f"{GCP_PEER}/32"], "proxy_protocol": "require", "tlvs": {"gcp_psc_connection_id": [str(GCP_PSC)]}},
    {"from": [f"{TLV_USE_PEER}/32"], "proxy_protocol": "use"},
]
SHORT_RULES = [
    {"from": [f"{LB}/32"], "proxy_protocol": "require", "health_check_paths": [HC_PATH]},
    {"from": [f"{PROXY_PEER}/32"], "proxy_protocol": "use"},
]
MAIN_HEADERS = {"forwarded": "overwrite", "set": SET, "tlv": TLV_HEADERS}

# name: (plugin JSON, layout, Listener options). `both`: the connection role (wasm: network
# role; native: listener filter) and the HTTP role; `http`: the HTTP role alone.
POLICIES: dict[str, dict] = {
    "http": {"rules": MAIN_RULES, "xff": {"trusted": TRUSTED}, "headers": MAIN_HEADERS},
    "both": {"rules": MAIN_RULES, "xff": {"trusted": TRUSTED}, "headers": MAIN_HEADERS},
    "strict": {"rules": MAIN_RULES, "xff": {"trusted": TRUSTED}, "headers": MAIN_HEADERS},
    "mapped": {"rules": MAIN_RULES, "xff": {"trusted": TRUSTED}, "headers": MAIN_HEADERS},
    "max": {"rules": MAIN_RULES, "xff": {"trusted": TRUSTED, "max_entries": 1024}, "headers": MAIN_HEADERS},
    "limited": {"rules": MAIN_RULES, "xff": {"trusted": TRUSTED, "max_entries": 3}, "headers": MAIN_HEADERS},
    "hops2": {
        "rules": SHORT_RULES,
        "xff": {"trusted": [f"{PROXY_PEER}/32", EDGES], "trusted_hops": 2},
        "headers": {"forwarded": "overwrite", "set": SET},
    },
    "fwd": {
        "rules": SHORT_RULES,
        "xff": {"trusted": TRUSTED, "source": "forwarded"},
        "headers": {"forwarded": "overwrite", "set": SET},
    },
    "cf": {
        "rules": SHORT_RULES,
        "xff": {"trusted": [f"{PROXY_PEER}/32"]},
        "client_header": {"name": CF, "trusted": [EDGES]},
        "headers": {"forwarded": "overwrite", "set": SET},
    },
    "cf-closed": {
        "rules": SHORT_RULES,
        "xff": {"trusted": [f"{PROXY_PEER}/32"]},
        "client_header": {"name": CF, "trusted": [EDGES], "fail_closed": True},
        "headers": {"forwarded": "overwrite", "set": SET},
    },
}
LAYOUTS = {"both": "both", "strict": "both"}  # every other listener: the HTTP role alone
PROXY_PROTOCOL = {"strict": "strict"}  # every other listener: optional
DUAL_STACK = {"mapped"}

CATEGORIES = (
    "xff-huge",
    "xff-spellings",
    "xff-trusted-walk-abuse",
    "forwarded",
    "lookalike-headers",
    "client-header-spoof",
    "non-utf8-and-control",
    "special-addresses",
    "ipv4-mapped-and-v6",
    "proxy-v1-bad-fields",
    "proxy-v2-bad-fields",
    "proxy-v2-tlvs",
    "proxy-spoof-untrusted-peer",
    "proxy-twice-and-local",
    "health-check-path-abuse",
    "http2",
    "many-and-large-headers",
    "connection-reuse",
    "slow-and-partial",
)

CLOSED = "closed"  # the connection ended (or the stream was reset) without a response
TIMEOUT = "timeout"  # nothing came back before the case's timeout (Envoy still waiting for bytes)
CONNECTION_REASONS = {"untrusted_proxy", "denied", "tlv", "no_direct_peer", "proxy_not_forwardable"}

# --- the model of the contract ---------------------------------------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def canonical(ip: Address) -> Address:
    """IPv4-mapped IPv6 is an IPv4 address everywhere (trust-model.md)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address(text: str) -> Address:
    return canonical(ipaddress.ip_address(text))


def _port(text: str) -> bool:
    return text.isdigit() and len(text) <= 5 and int(text) <= 65535


def parse_element(raw: bytes | str) -> Address | None:
    """One X-Forwarded-For element as trust-model.md accepts it: `1.2.3.4`, `1.2.3.4:80`,
    `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`, surrounding whitespace allowed; zone
    ids, names, `unknown` and unspecified addresses are malformed (None)."""
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    raw = raw.strip(b" \t\r\n\x0c")
    if not raw or not raw.isascii():
        return None
    text = raw.decode()
    if "%" in text or any(c.isspace() for c in text):
        return None
    ip = None
    if text.startswith("["):
        inside, sep, after = text[1:].partition("]")
        if not sep or (after and not (after.startswith(":") and _port(after[1:]))):
            return None
        try:
            ip = ipaddress.IPv6Address(inside)
        except ValueError:
            return None
    else:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            host, sep, port = text.rpartition(":")
            if not sep or ":" in host or not _port(port):
                return None
            try:
                ip = ipaddress.IPv4Address(host)
            except ValueError:
                return None
    ip = canonical(ip)
    return None if ip.is_unspecified else ip


def in_any(ip: Address, nets) -> bool:
    ip = canonical(ip)
    return any(ip.version == net.version and ip in net for net in nets)


def spoofed(ip: Address) -> bool:
    return in_any(ip, SPOOF_NETS)


@dataclass(frozen=True)
class Expect:
    """What may happen: `outcomes` holds statuses and/or CLOSED; when the upstream gets the
    request (200), R is one of `r`, C is `c` (None: not pinned), and `untrusted` says C is not
    in xff.trusted (the strip list then applies)."""

    outcomes: frozenset
    r: frozenset = frozenset()
    c: str | None = None
    untrusted: bool = False
    reason: str | None = None  # the x-trustip-reject header of a 403

    def also(self, *outcomes) -> "Expect":
        return Expect(self.outcomes | frozenset(outcomes), self.r, self.c, self.untrusted, self.reason)


def refused(*outcomes) -> Expect:
    return Expect(frozenset(outcomes))


def _nets(texts) -> list:
    return [ipaddress.ip_network(t) for t in texts]


class Policy:
    """A listener's plugin configuration, read by the model."""

    def __init__(self, name: str) -> None:
        plugin = POLICIES[name]
        self.name = name
        self.layout = LAYOUTS.get(name, "http")
        self.rules = [(_nets(rule["from"]), rule["proxy_protocol"], rule.get("health_check_paths", []), rule.get("tlvs"))
                      for rule in plugin["rules"]]  # fmt: skip
        xff = plugin.get("xff", {})
        self.trusted = _nets(xff.get("trusted", []))
        self.max_entries = xff.get("max_entries", 32)
        self.hops = xff.get("trusted_hops", 0)
        self.source = xff.get("source", "x-forwarded-for")
        header = plugin.get("client_header")
        self.client_header = header["name"] if header else None
        self.client_header_trusted = _nets(header["trusted"]) if header else []
        self.fail_closed = bool(header and header.get("fail_closed"))
        self.set = plugin.get("headers", {}).get("set", list(names.DEFAULT_SET))

    def rule(self, peer: str):
        d = address(peer)
        for nets, word, hc_paths, tlvs in self.rules:
            if in_any(d, nets):
                return word, hc_paths, tlvs
        return "reject", [], None

    def trusts(self, ip: Address) -> bool:
        return in_any(ip, self.trusted)

    def walk(self, lines: list[bytes], c: Address) -> Address:
        """R from X-Forwarded-For lines (Envoy joins repeated lines with commas) and C."""
        if not lines:
            return c
        elements = b",".join(lines).split(b",")
        if self.hops:
            if len(elements) < self.hops:
                return c
            picked = [parse_element(e) for e in elements[len(elements) - self.hops :]]
            return c if any(ip is None for ip in picked) else picked[0]
        r = c
        for count, element in enumerate(reversed(elements)):
            if count == self.max_entries:
                break
            ip = parse_element(element)
            if ip is None:
                break
            r = ip
            if not self.trusts(ip):
                break
        return r

    def expect(
        self,
        peer: str,
        proxy_source: str | None = None,
        *,
        headers=(),
        path: str = "/",
        tlv_ok: bool = True,
        walked: str | None = None,
    ) -> Expect:
        """What the contract says for a request from `peer`, with PROXY client information
        naming `proxy_source` (None: no header, LOCAL, UNKNOWN), `headers` (name, value) and
        `path`. `tlv_ok`: the TLVs pass the rule's allow list. `walked`: R after the walk when a
        case computes it itself (Forwarded)."""
        d = address(peer)
        p = address(proxy_source) if proxy_source else None
        if p is not None and p.is_unspecified:
            p = None
        word, hc_paths, tlvs = self.rule(peer)
        health_check = False
        reason = None
        c = d
        if word == "deny":
            reason = "denied"
        elif word == "require":
            if p is not None:
                c = p
                if tlvs and not tlv_ok:
                    reason = "tlv"
            elif hc_paths:
                health_check = True
            else:
                reason = "missing_proxy"
        elif word == "use":
            if p is not None:
                c = p
                if tlvs and not tlv_ok:
                    reason = "tlv"
        elif word == "reject" and p is not None:
            reason = "untrusted_proxy"
        if reason is not None:
            if self.layout == "both" and reason in CONNECTION_REASONS | {"missing_proxy"}:
                return refused(CLOSED)
            return Expect(frozenset({403}), reason=reason)
        if health_check and path.split("?", 1)[0] not in hc_paths:
            return Expect(frozenset({403}), reason="missing_proxy")
        trusted = self.trusts(c)
        r = c
        if trusted and walked is not None:
            r = address(walked)
        elif trusted and self.source == "x-forwarded-for":
            r = self.walk([_bytes(v) for n, v in headers if _lower(n) == "x-forwarded-for"], c)
        if self.client_header and not health_check and in_any(r, self.client_header_trusted):
            values = [_bytes(v) for n, v in headers if _lower(n) == self.client_header]
            value = parse_element(values[0]) if len(values) == 1 and b"," not in values[0] else None
            if value is not None:
                r = value
            elif self.fail_closed:
                return Expect(frozenset({403}), reason="client_header")
        return Expect(frozenset({200}), frozenset({str(r)}), str(c), not trusted)


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _lower(name) -> str:
    return _bytes(name).decode("latin-1").lower()


MODELS = {name: Policy(name) for name in POLICIES}

# --- cases -------------------------------------------------------------------------------------


@dataclass
class Case:
    """One hostile request (or one request of a connection several cases share). `transport`:
    `h1` (one HTTP/1.1 request on its own connection), `keepalive` / `pipeline` (the cases of one
    `group` on one connection, sent one after the other / all at once), `h2` (the cases of one
    `group` as streams of one h2c connection), `raw` (`segments` sent as they are, `pause`
    seconds apart; `hold`: then wait that long and close without reading)."""

    category: str
    name: str
    listener: str
    expect: Expect
    peer: str = ATTACKER
    proxy: bytes = b""
    headers: list = field(default_factory=list)
    method: str = "GET"
    path: str = "/"
    transport: str = "h1"
    group: str | None = None
    segments: list[bytes] | None = None
    pause: float = 0.0
    hold: float | None = None
    timeout: float = 5.0
    known_bug: str = ""  # a real bug (spoof, trap, crash): the case must fail (strict xfail)
    test_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def request_bytes(self, *, close: bool = True) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1".encode(), b"host: trustip.test", b"x-test-id: " + self.test_id.encode()]
        for name, value in self.headers:
            lines.append(_bytes(name) + b": " + _bytes(value))
        if close:
            lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def h2_headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b":method", self.method.encode()), (b":scheme", b"http"), (b":authority", b"trustip.test"),
               (b":path", self.path.encode()), (b"x-test-id", self.test_id.encode())]  # fmt: skip
        return out + [(_bytes(n), _bytes(v)) for n, v in self.headers]


def via(source: str, port: int = 50000, version: int = 2, tlvs=b"") -> bytes:
    """The PROXY header a load balancer (or an attacker) sends naming `source`."""
    ip = ipaddress.ip_address(source)
    dst = "10.0.0.1" if ip.version == 4 else "2001:db8::1"
    if version == 1:
        return client.proxy_v1(source, dst, port, 443)
    return client.proxy_v2(source, dst, port, 443, tlvs=tlvs)


LOCAL_V2 = client.PROXY_V2_SIGNATURE + b"\x20\x00\x00\x00"  # what HAProxy sends on its checks
UNKNOWN_V1 = b"PROXY UNKNOWN\r\n"


def accept(listener: str, peer: str, proxy_source: str | None = None, **kw) -> Expect:
    return MODELS[listener].expect(peer, proxy_source, **kw)


class Builder:
    """Collects one category's cases, numbering their names."""

    def __init__(self, category: str) -> None:
        self.category = category
        self.cases: list[Case] = []

    def add(self, name: str, listener: str, expect: Expect | None = None, *, peer: str = ATTACKER,
            proxy_source: str | None = None, proxy: bytes | None = None, headers=(), path: str = "/",
            **options) -> Case:  # fmt: skip
        """A case; without `expect`, the model's answer for these inputs. `proxy_source` builds
        a PROXY v2 header naming it (unless `proxy` gives the bytes)."""
        headers = list(headers)
        if proxy is None:
            proxy = via(proxy_source) if proxy_source else b""
        if expect is None:
            expect = accept(listener, peer, proxy_source, headers=headers, path=path)
        case = Case(self.category, f"{len(self.cases):03d}-{name}", listener, expect, peer=peer, proxy=proxy,
                    headers=headers, path=path, **options)  # fmt: skip
        self.cases.append(case)
        return case


# --- 1 xff-huge ------------------------------------------------------------------------------

HEADER_LIMIT = 60 * 1024  # Envoy's default max_request_headers_kb
HEADER_COUNT_LIMIT = 100  # Envoy's default max_headers_count


def _size_outcome(size: int, expect: Expect) -> Expect:
    """Past Envoy's 60 KiB of request headers: 431 from Envoy, nothing reaches the upstream.
    Within 2 KiB of the limit both may happen (Envoy counts the header block its own way)."""
    if size > HEADER_LIMIT + 2048:
        return refused(431)
    if size > HEADER_LIMIT - 2048:
        return expect.also(431)
    return expect


def xff_huge() -> Iterator[Case]:
    b = Builder("xff-huge")
    for count in (100, 500, 1000, 2000, 3000, 4000, 5000, 5400, 6000):
        spoofs = ", ".join(f"6.6.{i // 250 % 250}.{i % 250 + 1}" for i in range(count))
        hops = ", ".join(f"173.245.{48 + i // 250 % 15}.{i % 250 + 1}" for i in range(count))
        mixed = ", ".join("6.6.6.6" if i % 3 else f"173.245.49.{i % 250 + 1}" for i in range(count))
        for name, listener, peer, value in (
            ("attacker-spoofs", "http", ATTACKER, spoofs),
            ("attacker-spoofs-both", "both", ATTACKER, spoofs),
            ("attacker6-hops", "http", ATTACKER6, hops),
            ("proxy-client-then-hops", "http", PROXY_PEER, f"{spoofs}, {CLIENT}, 173.245.48.20, 173.245.48.21"),
            ("proxy-all-hops-truncated", "http", PROXY_PEER, f"{spoofs}, {CLIENT}, {hops}"),
            ("proxy-all-hops-1024", "max", PROXY_PEER, f"{spoofs}, {CLIENT}, {hops}"),
            ("proxy-mixed", "max", PROXY_PEER, mixed + f", {CLIENT}"),
        ):
            headers = [("x-forwarded-for", value)]
            expect = accept(listener, peer, headers=headers)
            b.add(f"{name}-{count}", listener, _size_outcome(len(value), expect), peer=peer, headers=headers)
    # Many repeated lines. Envoy 1.40 joins repeated X-Forwarded-For lines into one header as it
    # reads them, so they do not count against max_headers_count (100): even 2,000 lines reach
    # the filter, as one comma-separated value (measured here).
    for lines in (2, 10, 50, 90, 99, 100, 101, 150, 400, 2000):
        for name, peer, element in (("attacker", ATTACKER, SPOOF), ("proxy", PROXY_PEER, f"{CLIENT}, {HOP}")):
            headers = [("x-forwarded-for", f"6.6.7.{i % 250 + 1}") for i in range(lines - 1)] + [("x-forwarded-for", element)]
            b.add(f"{name}-{lines}-lines", "http", peer=peer, headers=headers)
    yield from b.cases


# --- 2 xff-spellings -------------------------------------------------------------------------

ODD_SPELLINGS = [
    "0177.0.0.1", "0x7f.1", "0x7f.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "017700000001",
    "127.000.000.001", "01.2.3.4", "1.2.3.04", "1.2.3.4.5", "1.2.3", "256.1.1.1", "1.2.3.-4", "1.2.3.4:",
    "1.2.3.4:99999", "1.2.3.4:80:80", "1.2.3.4:0080", "[1.2.3.4]", "[1.2.3.4]:80", "::ffff:198.51.100.9",
    "::FFFF:198.51.100.10", "::ffff:c633:640b", "[::ffff:198.51.100.12]:80", "::198.51.100.13",
    "2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8:0:0:0:0:0:2", "2001:db8::1%eth0",
    "fe80::1%25eth0", "[2001:db8::1%eth0]:80", "[2001:db8::3]:443", "[2001:db8::4]:", "2001:db8::5]:80",
    "[2001:db8::6", "[]", "[]:80", "2001:db8::7:80", "2001:db8:::8", "::ffff:256.1.1.1",
    " 198.51.100.14 ", "\t198.51.100.15\t", "198.51.100.16\t ", "", " ", "unknown", "UNKNOWN", "_hidden",
    "_gazonk", "localhost", "example.com", "198.51.100.17 198.51.100.18", "198.51.100.19;", "198.51.100.20/32",
    "for=198.51.100.21", '"198.51.100.22"', "'198.51.100.23'", "+198.51.100.24", "198.51.100.25.", ".198.51.100.26",
    "1.2.3.4:+80", "[::1]:65536", "1.2.3.4:-1", "1e2.1.1.1", "%31.2.3.4", "198.51.100.27%0a",
    "１.２.３.４",
]  # fmt: skip


def xff_spellings() -> Iterator[Case]:
    b = Builder("xff-spellings")
    for i, odd in enumerate(ODD_SPELLINGS):
        raw = odd.encode("utf-8")
        # From an untrusted client: never believed, whatever it says.
        listener = ("http", "both")[i % 2]
        headers = [("x-forwarded-for", b"6.6.6.6, " + raw)]
        b.add(f"attacker-{i}", listener, peer=(ATTACKER, ATTACKER6)[i % 3 == 0], headers=headers)
        # From a trusted proxy, behind a trusted hop: R is the element if it is an address the
        # contract accepts, else the hop; the client's 6.6.6.6 to its left is never reached.
        headers = [("x-forwarded-for", b"6.6.6.6, " + raw + b", " + HOP.encode())]
        b.add(f"proxy-behind-hop-{i}", "http", peer=PROXY_PEER, headers=headers)
        # The odd element as the rightmost: R is it, or C.
        headers = [("x-forwarded-for", b"6.6.6.6, " + raw)]
        if parse_element(raw) is not None:
            headers = [("x-forwarded-for", raw)]
        b.add(f"proxy-rightmost-{i}", "http", peer=PROXY_PEER, headers=headers)
    for i, line in enumerate(["6.6.6.6,,173.245.48.9", "6.6.6.6, 198.51.100.9,", ",198.51.100.9", ",,,", ", ,",
                              "6.6.6.6 ,\t, 173.245.48.9", "6.6.6.6,198.51.100.9,,"]):  # fmt: skip
        headers = [("x-forwarded-for", line)]
        b.add(f"empty-elements-{i}", "http", peer=PROXY_PEER, headers=headers)
    yield from b.cases


# --- 3 xff-trusted-walk-abuse ------------------------------------------------------------------

STOPPERS = ["garbage", "unknown", "fe80::1%eth0", "300.1.1.1", "1.2.3", "[2001:db8::1", "0.0.0.0", "::", "_hidden",
            "6.6.6.6 6.6.6.7", "198.51.100.1/24", "", "0x06.6.6.6"]  # fmt: skip


def xff_trusted_walk_abuse() -> Iterator[Case]:
    b = Builder("xff-trusted-walk-abuse")
    for i, stop in enumerate(STOPPERS):
        # A malformed element between trusted hops stops the walk at the hop to its right.
        value = f"6.6.6.6, {stop}, 173.245.48.{30 + i}, {HOP}"
        b.add(f"stop-between-hops-{i}", "http", peer=PROXY_PEER, headers=[("x-forwarded-for", value)])
        # The same through the LB, with a trusted edge as C.
        b.add(f"stop-via-edge-{i}", "both", peer=LB, proxy_source=EDGE, headers=[("x-forwarded-for", value)])
        # Client text claiming a trusted hop's address left of the real client.
        value = f"6.6.6.6, 173.245.48.99, {stop}, 198.51.100.{40 + i}, {HOP}"
        b.add(f"fake-hop-left-{i}", "http", peer=PROXY_PEER, headers=[("x-forwarded-for", value)])
    # max_entries: 3 elements examined, then the walk stops at a trusted hop.
    for k in range(1, 9):
        value = ", ".join(["6.6.6.6", CLIENT] + [f"173.245.50.{j}" for j in range(1, k + 1)])
        b.add(f"max-entries-3-{k}-hops", "limited", peer=PROXY_PEER, headers=[("x-forwarded-for", value)])
        b.add(f"max-entries-3-{k}-hops-via-edge", "limited", peer=LB, proxy_source=EDGE, headers=[("x-forwarded-for", value)])
    # 32 (the default): the client's element just past the limit is never reached.
    for k in (30, 31, 32, 33, 40):
        value = ", ".join(["6.6.6.6", CLIENT] + [f"173.245.51.{j}" for j in range(1, k + 1)])
        b.add(f"max-entries-32-{k}-hops", "http", peer=PROXY_PEER, headers=[("x-forwarded-for", value)])
    # Hop counts (trusted_hops 2): R is the second element from the right, whatever it says, if
    # the first two are addresses; the client's text further left is never read.
    hop_values = [
        "6.6.6.6, 198.51.100.50, 198.51.100.51", "6.6.6.6, 6.6.6.7, 198.51.100.52, 173.245.48.9",
        "6.6.6.6, bogus, 198.51.100.53", "6.6.6.6, 198.51.100.54, bogus", "198.51.100.55", "",
        "6.6.6.6, [2001:db8::55]:443, 198.51.100.56:80", "6.6.6.6, 0.0.0.0, 198.51.100.57",
        "6.6.6.6,198.51.100.58,198.51.100.59", "6.6.6.6, unknown, unknown",
    ]  # fmt: skip
    for i, value in enumerate(hop_values):
        for name, peer, source in (("proxy", PROXY_PEER, None), ("edge", LB, EDGE), ("client", LB, CLIENT), ("attacker", ATTACKER, None)):
            expect = accept("hops2", peer, source, headers=[("x-forwarded-for", value)])
            b.add(f"hops2-{name}-{i}", "hops2", expect, peer=peer, proxy_source=source, headers=[("x-forwarded-for", value)])
    yield from b.cases


# --- 4 forwarded -------------------------------------------------------------------------------

# (client text before the trusted element, the address it names if well formed, else None)
FORWARDED_TEXTS = [
    ('for="6.6.6.6', None), ('for=6.6.6.6;for=6.6.6.7', None), ('for="\\"6.6.6.6"', None), ("for=_hidden", None),
    ("for=unknown", None), ("for=[2001:db8:bad::1]", None), ("for=2001:db8:bad::1", None), ("for=6.6.6.6:80", None),
    ('for="6.6.6.6:80', None), ('for="[2001:db8:bad::1"', None), ("proto=https", None), ("by=6.6.6.6", None),
    ("for=", None), ('for=""', None), ("for=6.6.6.6 x", None), ('for="6.6.6.6"x', None), ("=6.6.6.6", None),
    ("for=0x06.6.6.6", None), ("for=0.0.0.0", None), ('for="[::]"', None), ("for=6.6.6.6%eth0", None),
    ('for="[fe80::1%25eth0]"', None),
    ('for=\\6.6.6.6', None), ('for="6.6.6.6\\"', None),
]  # fmt: skip
FORWARDED_GOOD = [
    ("for=198.51.100.60", "198.51.100.60"), ('for="198.51.100.61:4711"', "198.51.100.61"),
    ('for="[2001:db8:cafe::62]:4711"', "2001:db8:cafe::62"), ('For="[2001:db8:cafe::63]"', "2001:db8:cafe::63"),
    ("for=198.51.100.64;proto=https;by=10.0.0.1", "198.51.100.64"), ('proto=https;host="a,b";for=198.51.100.65', "198.51.100.65"),
    ("FOR=198.51.100.66", "198.51.100.66"), ('for="198.51.100.67"', "198.51.100.67"),
]  # fmt: skip


def forwarded() -> Iterator[Case]:
    b = Builder("forwarded")
    trusted_last = f"for={HOP}"
    client_last = f"for={CLIENT}"
    for i, (text, _) in enumerate(FORWARDED_TEXTS):
        # Client text before a trusted proxy's element naming the real client: R is the client.
        for name, lines in (("one-line", [f"{text}, {client_last}"]), ("two-lines", [text, client_last])):
            headers = [("forwarded", line) for line in lines] + [("x-forwarded-for", SPOOF)]
            b.add(f"{name}-{i}", "fwd", accept("fwd", PROXY_PEER, headers=headers, walked=CLIENT), peer=PROXY_PEER, headers=headers)
        # Behind a trusted hop's element: the malformed client text stops the walk at the hop.
        headers = [("forwarded", f"{text}, {trusted_last}")]
        b.add(f"behind-hop-{i}", "fwd", accept("fwd", PROXY_PEER, headers=headers, walked=HOP), peer=PROXY_PEER, headers=headers)
        # From an untrusted client: not believed at all.
        headers = [("forwarded", text), ("forwarded", client_last)]
        b.add(f"attacker-{i}", "fwd", peer=ATTACKER, headers=headers)
    for i, (text, named) in enumerate(FORWARDED_GOOD):
        headers = [("forwarded", f"for=6.6.6.6, {text}, {trusted_last}")]
        b.add(f"good-behind-hop-{i}", "fwd", accept("fwd", PROXY_PEER, headers=headers, walked=named), peer=PROXY_PEER, headers=headers)
    yield from b.cases


# --- 5 lookalike-headers -------------------------------------------------------------------------

LOOKALIKE_BASES = ["x-forwarded-for", "x-real-ip", "true-client-ip", "cf-connecting-ip", "x-client-ip", "x-cluster-client-ip",
                   "fastly-client-ip", "forwarded", "x-original-forwarded-for", "client-ip", "x-originating-ip",
                   "forwarded-for", "x-forwarded", "x-envoy-external-address"]  # fmt: skip


def _variants(base: str) -> list[str]:
    title = "-".join(part.capitalize() for part in base.split("-"))
    out = [base, base.upper(), title]
    if "-" in base:
        out += [base.replace("-", "_"), title.replace("-", "_"), base.replace("-", "_", 1)]
    return out


def lookalike_headers() -> Iterator[Case]:
    b = Builder("lookalike-headers")
    contexts = [("http", ATTACKER, None), ("both", ATTACKER, None), ("http", LB, CLIENT), ("http", ATTACKER6, None)]
    i = 0
    for base in LOOKALIKE_BASES:
        for variant in _variants(base):
            listener, peer, source = contexts[i % len(contexts)]
            value = SPOOF if base != "forwarded" else f"for={SPOOF}"
            headers = [(variant, value), (variant, SPOOF6 if base != "forwarded" else f'for="[{SPOOF6}]"')]
            b.add(f"{variant}", listener, peer=peer, proxy_source=source, headers=headers)
            i += 1
    # All of them at once, from each context.
    everything = [(v, SPOOF) for base in LOOKALIKE_BASES for v in _variants(base)]
    for listener, peer, source in contexts:
        b.add(f"all-at-once-{listener}-{peer}", listener, peer=peer, proxy_source=source, headers=everything)
    yield from b.cases


# --- 6 client-header-spoof --------------------------------------------------------------------

CF_VALUES = ["6.6.6.6", "6.6.6.6, 6.6.6.7", "unknown", "0.0.0.0", "::", "::ffff:0.0.0.0", SPOOF6, f"[{SPOOF6}]:80",
             "6.6.6.6:80", " 6.6.6.6 ", "6.6.6.6 6.6.6.7", "6.6.6.6;", "", "0x06.6.6.6", "::ffff:6.6.6.6"]  # fmt: skip


def client_header_spoof() -> Iterator[Case]:
    b = Builder("client-header-spoof")
    for i, value in enumerate(CF_VALUES):
        for listener in ("cf", "cf-closed"):
            # An untrusted client connecting directly, and a PROXY client that is no edge: removed.
            b.add(f"{listener}-attacker-{i}", listener, peer=ATTACKER, headers=[(CF, value)])
            b.add(f"{listener}-non-edge-client-{i}", listener, peer=LB, proxy_source=CLIENT, headers=[(CF, value)])
            # A trusted proxy whose walk ends off the edges: removed.
            headers = [("x-forwarded-for", CLIENT), (CF, value)]
            b.add(f"{listener}-walk-off-edge-{i}", listener, peer=PROXY_PEER, headers=headers)
        # Two lines of the header from an untrusted client.
        b.add(f"attacker-two-lines-{i}", "cf", peer=ATTACKER, headers=[(CF, value), (CF, CLIENT)])
    # What an edge may send that is not one address: R stays the edge (fail_closed: 403).
    for i, value in enumerate(["6.6.6.6, 6.6.6.7", "unknown", "0.0.0.0", "::", "::ffff:0.0.0.0", "bogus", "6.6.6.6 6.6.6.7", ""]):
        for listener in ("cf", "cf-closed"):
            b.add(f"{listener}-edge-invalid-{i}", listener, peer=LB, proxy_source=EDGE, headers=[(CF, value)])
    for listener in ("cf", "cf-closed"):
        b.add(f"{listener}-edge-missing", listener, peer=LB, proxy_source=EDGE)
        b.add(f"{listener}-edge-two-lines", listener, peer=LB, proxy_source=EDGE, headers=[(CF, "198.51.100.70"), (CF, "198.51.100.71")])
        # The edge's genuine header: believed (a control case).
        b.add(f"{listener}-edge-genuine", listener, peer=LB, proxy_source=EDGE, headers=[(CF, "198.51.100.72"), ("x-forwarded-for", SPOOF)])
    yield from b.cases


# --- 7 non-utf8-and-control ---------------------------------------------------------------------

OBS_TEXT = [b"\x80", b"\xff", b"6.6.6.6\xff", b"\xff6.6.6.6", b"\xc3\xa9", b"\xc0\x80", b"\xed\xa0\x80", b"6.6.6.\xb6",
            b"\xef\xbb\xbf6.6.6.6", b"\xe2\x80\xae6.6.6.6", b"\xf4\x90\x80\x80"]  # fmt: skip
CONTROL = [bytes([c]) for c in range(1, 32) if c not in (9, 10, 13)] + [b"\x7f"]


def non_utf8_and_control() -> Iterator[Case]:
    b = Builder("non-utf8-and-control")
    targets = ["x-forwarded-for", "x-real-ip", "forwarded", "true-client-ip", "x-envoy-external-address"]
    for i, junk in enumerate(OBS_TEXT):
        name = targets[i % len(targets)]
        b.add(f"obs-text-attacker-{i}", "http", peer=ATTACKER, headers=[(name, junk)])
        value = junk + b", " + CLIENT.encode()
        b.add(f"obs-text-left-of-client-{i}", "http", peer=PROXY_PEER, headers=[("x-forwarded-for", value)])
        value = b"6.6.6.6, " + junk + b", " + HOP.encode()
        b.add(f"obs-text-behind-hop-{i}", "http", peer=PROXY_PEER, headers=[("x-forwarded-for", value)])
        b.add(f"obs-text-cf-edge-{i}", "cf", peer=LB, proxy_source=EDGE, headers=[(CF, junk)])
        b.add(f"obs-text-forwarded-{i}", "fwd", accept("fwd", PROXY_PEER, walked=HOP), peer=PROXY_PEER,
              headers=[("forwarded", b"for=" + junk + b", for=" + HOP.encode())])  # fmt: skip
    # Control bytes: Envoy's HTTP/1 codec refuses a header value holding one (400) before any
    # filter runs; trustip never sees them.
    for i, ctl in enumerate(CONTROL):
        value = b"6.6.6.6" + ctl + b", " + CLIENT.encode()
        peer = (ATTACKER, PROXY_PEER)[i % 2]
        b.add(f"control-{ctl.hex()}", "http", refused(400), peer=peer, headers=[("x-forwarded-for", value)])
    # Very long values.
    for size in (1024, 8192, 30000, 50000):
        junk = (b"6.6.6.6\xff," * (size // 9))[:size]
        b.add(f"long-obs-xff-{size}", "http", _size_outcome(size, accept("http", ATTACKER)), peer=ATTACKER, headers=[("x-forwarded-for", junk)])
        value = junk + b", " + CLIENT.encode()
        expect = accept("http", PROXY_PEER, headers=[("x-forwarded-for", value)])
        b.add(f"long-obs-proxy-{size}", "http", _size_outcome(size, expect), peer=PROXY_PEER, headers=[("x-forwarded-for", value)])
        b.add(f"long-real-ip-{size}", "http", _size_outcome(size, accept("http", ATTACKER)), peer=ATTACKER, headers=[("x-real-ip", junk)])
        b.add(f"long-cf-{size}", "cf", _size_outcome(size, accept("cf", LB, EDGE, headers=[(CF, junk)])), peer=LB, proxy_source=EDGE,
              headers=[(CF, junk)])  # fmt: skip
    yield from b.cases


# --- 8 special-addresses ------------------------------------------------------------------------

SPECIAL = ["0.0.0.0", "::", "::ffff:0.0.0.0", "255.255.255.255", "224.0.0.1", "239.255.255.250", "ff02::1", "127.0.0.1",
           "::1", "169.254.169.254", "fe80::1", "100.64.0.1", "10.0.0.1", "192.168.1.1", "240.0.0.1", "0.0.0.1"]  # fmt: skip


# Envoy 1.40's proxy_protocol listener filter closes the connection for these PROXY sources
# (unspecified, broadcast, multicast; measured here): no trustip filter sees them.
ENVOY_REFUSES_AS_PROXY_SOURCE = {"0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "239.255.255.250", "ff02::1"}


def _forwarded_for(ip: str) -> str:
    return f'for="[{ip}]"' if ":" in ip else f"for={ip}"


def special_addresses() -> Iterator[Case]:
    b = Builder("special-addresses")
    for i, sp in enumerate(SPECIAL):
        parsed = parse_element(sp)
        b.add(f"xff-attacker-{sp}", "http", peer=ATTACKER, headers=[("x-forwarded-for", sp)])
        b.add(f"xff-proxy-{sp}", "http", peer=PROXY_PEER, headers=[("x-forwarded-for", f"6.6.6.6, {sp}")])
        b.add(f"xff-behind-hop-{sp}", "both", peer=LB, proxy_source=EDGE, headers=[("x-forwarded-for", f"6.6.6.6, {sp}, {HOP}")])
        walked = str(parsed) if parsed is not None else PROXY_PEER
        headers = [("forwarded", f"for=6.6.6.6, {_forwarded_for(sp)}")]
        b.add(f"forwarded-{sp}", "fwd", accept("fwd", PROXY_PEER, headers=headers, walked=walked), peer=PROXY_PEER, headers=headers)
        b.add(f"cf-edge-{sp}", "cf", peer=LB, proxy_source=EDGE, headers=[(CF, sp)])
        # As a PROXY source from the LB: Envoy refuses 0.0.0.0 and :: itself (closed);
        # ::ffff:0.0.0.0 passes Envoy and is no client information (require: missing_proxy).
        for version in (1, 2):
            if sp == "::ffff:0.0.0.0" and version == 1:
                continue
            proxy = via(sp, version=version)
            if sp in ENVOY_REFUSES_AS_PROXY_SOURCE:
                expect, attacker = refused(CLOSED), refused(CLOSED)
            else:
                expect = accept("http", LB, sp)
                attacker = accept("http", ATTACKER, sp)
            b.add(f"proxy-v{version}-lb-{sp}", "http", expect, peer=LB, proxy=proxy, headers=[("x-forwarded-for", SPOOF)])
            b.add(f"proxy-v{version}-attacker-{sp}", "http", attacker, peer=ATTACKER, proxy=proxy)
    yield from b.cases


# --- 9 ipv4-mapped-and-v6 ----------------------------------------------------------------------


def ipv4_mapped_and_v6() -> Iterator[Case]:
    b = Builder("ipv4-mapped-and-v6")
    # X-Forwarded-For elements trying to pass as trusted hops (only ::ffff: maps to IPv4).
    elements = [
        "::ffff:173.245.48.9", "[::ffff:173.245.48.9]:443", "::ffff:adf5:3009", "64:ff9b::173.245.48.9",
        "64:ff9b::adf5:3009", "::173.245.48.9", "2002:adf5:3009::1", "::ffff:0:173.245.48.9", "2400:cb00::1",
        "[2400:cb00::2]:8443", "2400:CB00::3", "2400:cb01::1", "::ffff:127.0.0.31", "::ffff:7f00:1f",
        "fe80::ffff:173.245.48.9", "::ffff:173.245.64.1",
    ]  # fmt: skip
    for i, element in enumerate(elements):
        for listener, peer, source in (("http", PROXY_PEER, None), ("mapped", PROXY_PEER, None), ("both", LB, EDGE)):
            # 198.51.100.x left of the element: R if the element is a trusted hop, else the
            # element itself is R; 6.6.6.6 further left is never reached.
            value = f"6.6.6.6, 198.51.100.{80 + i}, {element}"
            b.add(f"{listener}-hop-{i}", listener, peer=peer, proxy_source=source, headers=[("x-forwarded-for", value)])
        b.add(f"attacker-mapped-{i}", "mapped", peer=ATTACKER, headers=[("x-forwarded-for", f"{element}, 6.6.6.6")])
    # IPv6 peers and IPv6 / mapped PROXY sources.
    sources = ["::ffff:198.51.100.90", "::ffff:173.245.48.7", "64:ff9b::c633:645b", "2001:db8:cafe::92", "2400:cb00::93",
               "::ffff:127.0.0.5", "::198.51.100.94"]  # fmt: skip
    for i, source in enumerate(sources):
        headers = [("x-forwarded-for", f"6.6.6.6, 198.51.100.{100 + i}")]
        b.add(f"lb-tcp6-{i}", "http", peer=LB, proxy_source=source, headers=headers)
        b.add(f"lb-tcp6-mapped-listener-{i}", "mapped", peer=LB, proxy_source=source, headers=headers)
        b.add(f"attacker6-proxy-{i}", "http", peer=ATTACKER6, proxy_source=source, headers=headers)
        b.add(f"attacker6-proxy-both-{i}", "both", peer=ATTACKER6, proxy_source=source, headers=headers)
        b.add(f"attacker-mapped-proxy-{i}", "mapped", peer=ATTACKER, proxy_source=source, headers=headers)
    for i, listener in enumerate(("http", "both", "fwd", "cf", "hops2")):
        headers = [("x-forwarded-for", f"{SPOOF6}, ::ffff:6.6.6.6"), ("forwarded", f'for="[{SPOOF6}]"'), (CF, SPOOF6)]
        b.add(f"attacker6-direct-{listener}", listener, peer=ATTACKER6, headers=headers)
    yield from b.cases


# --- 10 proxy-v1-bad-fields --------------------------------------------------------------------

# What Envoy 1.40's proxy_protocol listener filter makes of a malformed header (measured, the same
# for both builds), which decides what trustip can see:
REFUSED = "refused"  # Envoy closes the connection: no filter sees it
NOT_PROXY = "not-proxy"  # not a PROXY header to Envoy: the bytes reach the HCM, which answers 400
TAKEN = "taken"  # Envoy takes it as naming 198.51.100.7: from the LB C = 198.51.100.7, from the attacker untrusted_proxy
NO_CLIENT = "no-client"  # LOCAL / UNKNOWN: no client information (the LB's `require` then refuses path /)
TAKEN_THEN_400 = "taken-then-400"  # a valid header, then bytes the HCM answers 400
WAITS = "waits"  # Envoy still waits for the header's remaining bytes (its listener filter timeout is 15 s)

V1_BAD = [
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 65536 443\r\n", REFUSED), (b"PROXY TCP4 198.51.100.7 10.0.0.1 -1 443\r\n", REFUSED),
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 080 443\r\n", TAKEN), (b"PROXY TCP4 198.51.100.7 10.0.0.1 1 99999999\r\n", REFUSED),
    (b"PROXY TCP4 2001:db8::7 10.0.0.1 1 443\r\n", REFUSED), (b"PROXY TCP6 198.51.100.7 2001:db8::1 1 443\r\n", REFUSED),
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 1 443\n", REFUSED), (b"PROXY TCP4 198.51.100.7 10.0.0.1 1 443\r", REFUSED),
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 1 443", REFUSED), (b"PROXY TCP4 " + b"1" * 120 + b" 10.0.0.1 1 443\r\n", REFUSED),
    (b"proxy TCP4 198.51.100.7 10.0.0.1 1 443\r\n", NOT_PROXY), (b"PROXY tcp4 198.51.100.7 10.0.0.1 1 443\r\n", REFUSED),
    (b"PROXY  TCP4 198.51.100.7 10.0.0.1 1 443\r\n", REFUSED), (b"PROXY TCP4 198.51.100.7  10.0.0.1 1 443\r\n", REFUSED),
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 1 443 \r\n", TAKEN), (b" PROXY TCP4 198.51.100.7 10.0.0.1 1 443\r\n", NOT_PROXY),
    (b"PROXY\tTCP4\t198.51.100.7\t10.0.0.1\t1\t443\r\n", NOT_PROXY), (b"PROXY TCP4 0177.0.0.1 10.0.0.1 1 443\r\n", REFUSED),
    (b"PROXY TCP4 1.2.3 10.0.0.1 1 443\r\n", REFUSED), (b"PROXY TCP4 256.1.1.1 10.0.0.1 1 443\r\n", REFUSED),
    (b"PROXY TCP5 198.51.100.7 10.0.0.1 1 443\r\n", REFUSED), (b"PROXY TCP4 198.51.100.7 10.0.0.1 1\r\n", REFUSED),
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 1 443 5\r\n", REFUSED), (b"PROXY\r\n", NOT_PROXY), (b"PROXY \r\n", REFUSED),
    (b"PROXY TCP4 ::ffff:198.51.100.7 10.0.0.1 1 443\r\n", REFUSED), (b"PROXY TCP4 198.51.100.7 10.0.0.1 +1 443\r\n", TAKEN),
    (b"PROXY TCP4 198.51.100.7:1 10.0.0.1 1 443\r\n", REFUSED), (b"PROXY TCP6 [2001:db8::7] [2001:db8::1] 1 443\r\n", REFUSED),
    (b"PROXY TCP6 2001:db8::7%eth0 2001:db8::1 1 443\r\n", REFUSED), (b"PROXY TCP4 198.51.100.7 10.0.0.1 0x10 443\r\n", REFUSED),
    (b"PROXY TCP4 198.51.100.7\r\n", REFUSED), (b"PROXY UNKNOWN 6.6.6.6 10.0.0.1 1 443 garbage\xff\r\n", NO_CLIENT),
    (b"PROXY UNKNOWN\n", REFUSED), (b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", REFUSED),
    (b"PROXY TCP4 198.51.100.7 10.0.0.1 1 443\r\nPROXY TCP4 6.6.6.6 10.0.0.1 1 443\r\n", TAKEN_THEN_400),
    # Envoy reads a v1 address up to a NUL byte: from the LB these name 198.51.100.7.
    (b"PROXY TCP4 198.51.100.7\x00 10.0.0.1 1 443\r\n", TAKEN), (b"PROXY TCP4 198.51.100.7\x006.6.6.6 10.0.0.1 1 443\r\n", TAKEN),
    (b"PROXY TCP4 \xff\xfe 10.0.0.1 1 443\r\n", REFUSED),
]  # fmt: skip


def by_envoy(kind: str, listener: str, peer: str) -> Expect:
    """The expectation for a PROXY header Envoy treats as `kind`, sent by `peer` to `listener`
    with X-Forwarded-For 6.6.6.6 and path /."""
    if kind == REFUSED:
        return refused(CLOSED)
    if kind == NOT_PROXY:
        return refused(400)
    if kind == WAITS:
        return refused(TIMEOUT)
    if kind == NO_CLIENT:
        return accept(listener, peer, headers=[("x-forwarded-for", SPOOF)])
    taken = accept(listener, peer, CLIENT, headers=[("x-forwarded-for", SPOOF)])
    if kind == TAKEN_THEN_400 and taken.outcomes != {CLOSED}:
        return refused(400)  # the second line is the HCM's request line
    return taken


def proxy_v1_bad_fields() -> Iterator[Case]:
    """Malformed PROXY v1 lines. Envoy's proxy_protocol listener filter judges them first (see
    the kinds above); whatever it makes of a line, from the attacker it never yields a client
    other than the attacker, and from the LB never one other than the address the LB wrote."""
    b = Builder("proxy-v1-bad-fields")
    for i, (line, kind) in enumerate(V1_BAD):
        for listener in ("http", "both"):
            for peer in (LB, ATTACKER):
                b.add(f"{listener}-{'lb' if peer == LB else 'attacker'}-{i}-{kind}", listener, by_envoy(kind, listener, peer),
                      peer=peer, proxy=line, headers=[("x-forwarded-for", SPOOF)])  # fmt: skip
    yield from b.cases


# --- 11 proxy-v2-bad-fields --------------------------------------------------------------------


def _v2(version_command: int, family: int, payload: bytes, length: int | None = None, signature=client.PROXY_V2_SIGNATURE) -> bytes:
    return signature + struct.pack("!BBH", version_command, family, len(payload) if length is None else length) + payload


V2_ADDRESSES = ipaddress.ip_address(CLIENT).packed + ipaddress.ip_address("10.0.0.1").packed + struct.pack("!HH", 50000, 443)


def proxy_v2_bad_fields() -> Iterator[Case]:
    b = Builder("proxy-v2-bad-fields")
    headers: list[tuple[str, bytes, str]] = []
    for vc in (0x11, 0x31, 0xF1, 0x01, 0x22, 0x23, 0x2F, 0x12):
        headers.append((f"version-command-{vc:02x}", _v2(vc, 0x11, V2_ADDRESSES), REFUSED))
    for family in (0x00, 0x10, 0x12, 0x13, 0x21, 0x22, 0x31, 0x32, 0x41, 0xFF):
        # UDP over IPv4 (0x12) with a TCP4-sized address block: Envoy takes its addresses. 0x21:
        # TCP over IPv6 with a TCP4-sized (12-byte) address block.
        headers.append((f"family-{family:02x}", _v2(0x21, family, V2_ADDRESSES), TAKEN if family == 0x12 else REFUSED))
    for length in (0, 4, 8, 11):
        headers.append((f"tcp4-length-{length}", _v2(0x21, 0x11, V2_ADDRESSES[:length]), REFUSED))
    headers.append(("unix-216", _v2(0x21, 0x31, b"/tmp/x".ljust(108, b"\0") + b"/tmp/y".ljust(108, b"\0")), REFUSED))
    headers.append(("unix-short", _v2(0x21, 0x31, b"/tmp/x"), REFUSED))
    headers.append(("length-past-data-then-http", _v2(0x21, 0x11, V2_ADDRESSES, length=40), REFUSED))
    headers.append(("length-65535", _v2(0x21, 0x11, V2_ADDRESSES, length=0xFFFF), WAITS))
    headers.append(("length-65535-filled", _v2(0x21, 0x11, V2_ADDRESSES + b"\x00" * (0xFFFF - 12)), TAKEN))
    headers.append(("local-with-addresses", _v2(0x20, 0x11, V2_ADDRESSES), NO_CLIENT))
    headers.append(("local-with-garbage", _v2(0x20, 0x00, b"\xff" * 30), NO_CLIENT))
    headers.append(("partial-signature-6", client.PROXY_V2_SIGNATURE[:6], NOT_PROXY))
    headers.append(("partial-signature-11", client.PROXY_V2_SIGNATURE[:11], NOT_PROXY))
    headers.append(("bad-signature-last-byte", _v2(0x21, 0x11, V2_ADDRESSES, signature=client.PROXY_V2_SIGNATURE[:-1] + b"X"), NOT_PROXY))
    headers.append(("signature-only", client.PROXY_V2_SIGNATURE, REFUSED))
    headers.append(("fixed-header-only", client.PROXY_V2_SIGNATURE + b"\x21\x11", WAITS))  # "GE" read as the length
    headers.append(("v1-inside-v2", _v2(0x21, 0x11, b"PROXY TCP4 6.6.6.6 10.0.0.1 1 2\r\n"), REFUSED))
    for name, raw, kind in headers:
        for listener in ("http", "both"):
            for peer in (LB, ATTACKER):
                b.add(f"{name}-{listener}-{'lb' if peer == LB else 'attacker'}", listener, by_envoy(kind, listener, peer), peer=peer,
                      proxy=raw, headers=[("x-forwarded-for", SPOOF)], timeout=2.5 if kind == WAITS else 5.0)  # fmt: skip
    yield from b.cases


# --- 12 proxy-v2-tlvs ------------------------------------------------------------------------------


def proxy_v2_tlvs() -> Iterator[Case]:
    b = Builder("proxy-v2-tlvs")
    tlv = client.tlv
    aws_ok = client.aws_vpce_tlv(VPCE)
    # (name, TLV bytes, passes the aws allow list, or REFUSED: Envoy closes the connection). Of two
    # TLVs of one type, the last one counts (Envoy keeps the last in filter state): measured.
    variants: list[tuple[str, bytes, bool | str]] = [
        ("aws-ok", aws_ok, True),
        ("aws-unlisted", client.aws_vpce_tlv("vpce-99999999999999999"), False),
        ("aws-nonprintable", tlv(0xEA, b"\x01vpce-\x00\x01\x02\x7f"), False),
        ("aws-high-bytes", tlv(0xEA, b"\x01vpce-\xff\xfe"), False),
        ("aws-long", tlv(0xEA, b"\x01vpce-" + b"a" * 2000), False),
        ("aws-wrong-subtype", tlv(0xEA, b"\x02" + VPCE.encode()), False),
        ("aws-empty", tlv(0xEA, b""), False),
        ("aws-subtype-only", tlv(0xEA, b"\x01"), False),
        ("aws-trailing-nul", tlv(0xEA, b"\x01" + VPCE.encode() + b"\x00"), False),
        ("aws-prefix", tlv(0xEA, b"\x01" + VPCE.encode()[:-1]), False),
        ("aws-ok-then-bad", aws_ok + client.aws_vpce_tlv("vpce-99999999999999999"), False),
        ("aws-bad-then-ok", client.aws_vpce_tlv("vpce-99999999999999999") + aws_ok, True),
        ("aws-ok-twice", aws_ok + aws_ok, True),
        ("aws-length-overrun", struct.pack("!BH", 0xEA, 500) + b"\x01" + VPCE.encode(), REFUSED),
        ("aws-length-short", struct.pack("!BH", 0xEA, 5) + b"\x01" + VPCE.encode(), REFUSED),
        ("truncated-tlv-header", aws_ok + b"\xea\x00", REFUSED),
        ("azure-3-bytes", tlv(0xEE, b"\x01\x78\x56"), False),
        ("azure-6-bytes", tlv(0xEE, b"\x01\x78\x56\x34\x12\x00"), False),
        ("azure-wrong-subtype", tlv(0xEE, b"\x02\x78\x56\x34\x12"), False),
        ("gcp-7-bytes", tlv(0xE0, b"\x11" * 7), False),
        ("gcp-9-bytes", tlv(0xE0, b"\x11" * 9), False),
        ("crc32c-wrong", aws_ok + tlv(0x03, b"\xde\xad\xbe\xef"), True),
        ("crc32c-short", aws_ok + tlv(0x03, b"\x01"), True),
        ("noop-padding", tlv(0x04, b"\x00" * 64) + aws_ok + tlv(0x04, b""), True),
        ("noop-huge", tlv(0x04, b"\x00" * 30000) + aws_ok, True),
        ("unique-id-long", aws_ok + tlv(0x05, b"\xab" * 200), True),
        ("authority-nonprintable", aws_ok + tlv(0x02, b"h\x00st\xff"), True),
        ("ssl-garbage", aws_ok + tlv(0x20, b"\xff" * 10), True),
        ("unknown-types", tlv(0x30, b"x") + tlv(0xFF, b"\x00" * 100) + aws_ok, True),
    ]
    for name, tlvs, ok in variants:
        proxy = via(CLIENT, tlvs=tlvs)
        spoofed_headers = [("x-forwarded-for", SPOOF), ("x-amzn-vpce-id", MARKER), ("x-azure-link-id", MARKER)]
        # The aws allow list (require): the listed value alone passes; Envoy may refuse malformed TLVs.
        envoy_refuses = ok == REFUSED
        for listener in ("http", "both"):
            expect = refused(CLOSED) if envoy_refuses else accept(listener, AWS_PEER, CLIENT, tlv_ok=ok)
            b.add(f"{listener}-aws-rule-{name}", listener, expect, peer=AWS_PEER, proxy=proxy, headers=spoofed_headers)
        # A `use` rule without an allow list: accepted, R = the LB's client.
        expect = refused(CLOSED) if envoy_refuses else accept("http", TLV_USE_PEER, CLIENT)
        b.add(f"use-rule-{name}", "http", expect, peer=TLV_USE_PEER, proxy=proxy, headers=spoofed_headers)
        # The attacker's TLVs: refused with its PROXY header.
        expect = refused(CLOSED) if envoy_refuses else accept("http", ATTACKER, CLIENT)
        b.add(f"attacker-{name}", "http", expect, peer=ATTACKER, proxy=proxy, headers=spoofed_headers)
    for name, peer, tlvs, ok in (
        ("azure-ok", AZURE_PEER, client.azure_link_tlv(AZURE_LINK), True),
        ("azure-other", AZURE_PEER, client.azure_link_tlv(AZURE_LINK + 1), False),
        ("azure-missing", AZURE_PEER, b"", False),
        ("gcp-ok", GCP_PEER, client.gcp_psc_tlv(GCP_PSC), True),
        ("gcp-other", GCP_PEER, client.gcp_psc_tlv(GCP_PSC + 1), False),
        ("gcp-as-aws", GCP_PEER, tlv(0xEA, struct.pack(">Q", GCP_PSC)), False),
    ):
        b.add(name, "http", accept("http", peer, CLIENT, tlv_ok=ok), peer=peer, proxy=via(CLIENT, tlvs=tlvs))
    yield from b.cases


# --- 13 proxy-spoof-untrusted-peer ------------------------------------------------------------

SPOOF_SOURCES = [SPOOF, SPOOF6, "6.6.6.7", HOP, LB, PROXY_PEER, "10.0.0.1", "::ffff:6.6.6.8"]


def proxy_spoof_untrusted_peer() -> Iterator[Case]:
    b = Builder("proxy-spoof-untrusted-peer")
    peers = [("attacker", ATTACKER), ("attacker6", ATTACKER6), ("reject-rule", REJECT_PEER), ("deny-rule", DENY_PEER),
             ("ignore-rule", IGNORE_PEER)]  # fmt: skip
    for source in SPOOF_SOURCES:
        for version in (1, 2):
            if version == 1 and source.startswith("::ffff:"):
                continue
            for peer_name, peer in peers:
                listener = "http" if (version + len(peer_name)) % 2 else "both"
                headers = [("x-forwarded-for", f"{SPOOF}, {source}"), ("x-real-ip", source)]
                b.add(f"{peer_name}-v{version}-{source}-{listener}", listener, accept(listener, peer, source, headers=headers),
                      peer=peer, proxy=via(source, version=version), headers=headers)  # fmt: skip
    yield from b.cases


# --- 14 proxy-twice-and-local ---------------------------------------------------------------------


def proxy_twice_and_local() -> Iterator[Case]:
    b = Builder("proxy-twice-and-local")
    seconds = [("v1", via(SPOOF, version=1)), ("v2", via(SPOOF)), ("v2-local", LOCAL_V2), ("v1-unknown", UNKNOWN_V1),
               ("v1-no-crlf", b"PROXY TCP4 6.6.6.6 10.0.0.1 1 2 ")]  # fmt: skip
    firsts = [("lb-v2", LB, via(CLIENT)), ("lb-v1", LB, via(CLIENT, version=1)), ("lb-local", LB, LOCAL_V2),
              ("proxy-v2", PROXY_PEER, via(CLIENT)), ("attacker-v2", ATTACKER, via(SPOOF)), ("ignore-v1", IGNORE_PEER, via(CLIENT, version=1))]  # fmt: skip
    for first_name, peer, first in firsts:
        for second_name, second in seconds:
            for listener in ("http", "both"):
                # The second header is request bytes to the HCM: a bad request line, 400, no
                # upstream; unless the first already closed the connection (the attacker's header
                # under the connection role).
                first_decision = accept(listener, peer, SPOOF if peer == ATTACKER else None)
                expect = refused(CLOSED) if first_decision.outcomes == {CLOSED} else refused(400)
                b.add(f"{first_name}-then-{second_name}-{listener}", listener, expect, peer=peer,
                      proxy=first + second, headers=[("x-forwarded-for", SPOOF)])  # fmt: skip
    # LOCAL / UNKNOWN from peers without a require rule: no client information, C = D.
    for kind, header in (("local", LOCAL_V2), ("unknown", UNKNOWN_V1)):
        for name, peer in (("attacker", ATTACKER), ("attacker6", ATTACKER6), ("reject-rule", REJECT_PEER), ("deny-rule", DENY_PEER),
                           ("ignore-rule", IGNORE_PEER), ("proxy", PROXY_PEER)):  # fmt: skip
            for listener in ("http", "both"):
                headers = [("x-forwarded-for", f"6.6.6.6, {CLIENT}")]
                b.add(f"{kind}-{name}-{listener}", listener, accept(listener, peer, headers=headers), peer=peer, proxy=header, headers=headers)
        # From the LB to paths that are not its health check: missing_proxy.
        for path in ("/", "/admin", "/healthz", "/healthz/ready/x"):
            for listener in ("http", "both"):
                b.add(f"{kind}-lb-{path}-{listener}", listener, peer=LB, proxy=header, path=path, headers=[("x-forwarded-for", SPOOF)])
    yield from b.cases


# --- 15 health-check-path-abuse -----------------------------------------------------------------

HC_PATHS_ABUSE = [
    HC_PATH, f"{HC_PATH}?x=1", f"{HC_PATH}?", f"{HC_PATH}?{HC_PATH}", f"{HC_PATH}/", f"{HC_PATH}/../admin", f"{HC_PATH}/..%2Fadmin",
    f"{HC_PATH}%2F..%2Fadmin", "/%68ealthz/ready", "/healthz/%72eady", "/healthz/./ready", "//healthz/ready", f"{HC_PATH};x",
    "/HEALTHZ/READY", f"{HC_PATH}%00", f"{HC_PATH}%20", "/healthz//ready", "/admin?/healthz/ready", f"/x/..{HC_PATH}",
    f"{HC_PATH}.", f"{HC_PATH}%3Fx", "/healthz/ready\\", "/healthz\\ready",
]  # fmt: skip
HC_METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND", "FOO"]


def health_check_path_abuse() -> Iterator[Case]:
    """The LB's own connections (LOCAL, UNKNOWN, or no header) are admitted only for the listed
    path (the query is not compared; Envoy normalises nothing by default), with C = D: never a
    client from the request's headers."""
    b = Builder("health-check-path-abuse")
    kinds = [("local", LOCAL_V2), ("unknown", UNKNOWN_V1), ("none", b"")]
    for i, path in enumerate(HC_PATHS_ABUSE):
        kind, header = kinds[i % 3]
        for listener in ("http", "both"):
            headers = [("x-forwarded-for", SPOOF), ("x-real-ip", SPOOF), ("forwarded", f"for={SPOOF}")]
            expect = accept(listener, LB, path=path, headers=headers)  # Envoy passes even a backslash on
            b.add(f"{kind}-{listener}-{path}", listener, expect, peer=LB, proxy=header, path=path, headers=headers)
        # The attacker on the same paths: its own client, whatever the path.
        b.add(f"attacker-{path}", "http", peer=ATTACKER, proxy=LOCAL_V2, path=path, headers=[("x-forwarded-for", SPOOF)])
    for method in HC_METHODS:
        for path in (HC_PATH, "/admin"):
            # Envoy's HTTP/1 codec refuses a method it does not know (400) before any filter.
            expect = refused(400) if method == "FOO" else None
            b.add(f"{method}-{path}", "both", expect, peer=LB, proxy=LOCAL_V2, path=path, method=method,
                  headers=[("x-forwarded-for", SPOOF)])  # fmt: skip
    # Absolute-form targets: Envoy takes the path from the URI (a proxy request), and the path
    # alone is compared.
    for target, path in ((f"http://trustip.test{HC_PATH}", HC_PATH), (f"http://evil.example{HC_PATH}?a", HC_PATH),
                         ("http://trustip.test/admin", "/admin"), (f"http://trustip.test/admin?{HC_PATH}", "/admin")):  # fmt: skip
        expect = accept("http", LB, path=path)
        b.add(f"absolute-{target}", "http", expect, peer=LB, proxy=LOCAL_V2, path=target, headers=[("x-forwarded-for", SPOOF)])
    # A fragment in the target: Envoy 1.40 refuses the request (400).
    b.add("fragment", "http", refused(400), peer=LB, proxy=LOCAL_V2, path=f"{HC_PATH}#x")
    yield from b.cases


# --- 16 http2 ------------------------------------------------------------------------------------


def http2() -> Iterator[Case]:
    """h2c with prior knowledge, many requests as streams of one connection."""
    b = Builder("http2")
    stream_headers = [
        ("xff", [("x-forwarded-for", f"{SPOOF}, {CLIENT}")]),
        ("xff-chain", [("x-forwarded-for", f"{SPOOF}, {CLIENT}, {HOP}")]),
        ("xff-multi", [("x-forwarded-for", SPOOF), ("x-forwarded-for", CLIENT), ("x-forwarded-for", HOP)]),
        ("lookalikes", [(n, SPOOF) for n in DOC_DEFAULT_STRIP if n != "forwarded"] + [("forwarded", f"for={SPOOF}")]),
        ("own-headers", [("x-real-ip", SPOOF), ("x-envoy-external-address", SPOOF), ("x-real-ip", SPOOF6)]),
        ("xff-odd", [("x-forwarded-for", f"{SPOOF}, 0177.0.0.1, {HOP}")]),
        ("xff-v6", [("x-forwarded-for", f"{SPOOF6}, [2001:db8::7]:443")]),
        ("xff-special", [("x-forwarded-for", f"{SPOOF}, 0.0.0.0")]),
        ("xff-obs-text", [("x-forwarded-for", b"6.6.6.6\xff, " + CLIENT.encode())]),
        ("cookie-split", [("cookie", "a=1"), ("cookie", "b=2"), ("x-forwarded-for", f"{SPOOF}, {CLIENT}")]),
    ]
    contexts = [
        ("attacker", "http", ATTACKER, b"", None),
        ("attacker6", "http", ATTACKER6, b"", None),
        ("proxy", "http", PROXY_PEER, b"", None),
        ("lb-client", "http", LB, via(CLIENT), CLIENT),
        ("lb-edge", "http", LB, via(EDGE), EDGE),
        ("lb-edge-both", "both", LB, via(EDGE), EDGE),
        ("attacker-proxy", "http", ATTACKER, via(SPOOF), SPOOF),
        ("attacker-proxy-both", "both", ATTACKER, via(SPOOF), SPOOF),
    ]
    for context, listener, peer, proxy, source in contexts:
        group = f"h2-{context}"
        for name, headers in stream_headers:
            expect = accept(listener, peer, source, headers=headers)
            b.add(f"{context}-{name}", listener, expect, peer=peer, proxy=proxy, headers=headers, transport="h2", group=group)
    # The LB's health check over h2.
    for path in (HC_PATH, "/", f"{HC_PATH}?x"):
        b.add(f"lb-local-{path}", "both", peer=LB, proxy=LOCAL_V2, path=path, headers=[("x-forwarded-for", SPOOF)], transport="h2",
              group="h2-local")  # fmt: skip
    # Names h2 forbids (uppercase, connection-specific, pseudo-headers out of place), CR/LF/NUL in
    # a value, TE other than "trailers": Envoy ends the connection (GOAWAY, then closes) without
    # an answer; each on its own connection.
    forbidden = [
        [("X-Forwarded-For", SPOOF)], [("X-Real-IP", SPOOF)], [("x-forwarded-for", SPOOF), ("Forwarded", f"for={SPOOF}")],
        [("connection", "keep-alive"), ("x-forwarded-for", SPOOF)], [("transfer-encoding", "chunked")],
        [("x-forwarded-for ", SPOOF)], [("x-forwarded-for", "6.6.6.6\r\nx-real-ip: 6.6.6.6")], [(":x-forwarded-for", SPOOF)],
        [("x-forwarded-for", b"6.6.6.6\x00")], [("te", "trailers, gzip")],
    ]  # fmt: skip
    for i, headers in enumerate(forbidden):
        for peer in (ATTACKER, PROXY_PEER):
            expect = refused(CLOSED)
            b.add(f"forbidden-{i}-{peer}", "http", expect, peer=peer, headers=headers, transport="h2", group=f"h2-forbidden-{i}-{peer}")
    yield from b.cases


# --- 17 many-and-large-headers ---------------------------------------------------------------------


def many_and_large_headers() -> Iterator[Case]:
    b = Builder("many-and-large-headers")
    for count in (20, 50, 80, 94, 95, 96, 97, 98, 120):
        headers = [(f"x-junk-{i}", "v") for i in range(count)] + [("x-forwarded-for", SPOOF), ("x-real-ip", SPOOF)]
        total = count + 5  # with host, x-test-id, connection: past 100 headers Envoy answers 431
        expect = refused(431) if total > HEADER_COUNT_LIMIT else accept("http", ATTACKER, headers=headers)
        b.add(f"count-{count}", "http", expect, peer=ATTACKER, headers=headers)
    for size in (1000, 16000, 40000, 57000, 59000, 60500, 61500, 64000, 90000):
        headers = [("x-junk", "a" * size), ("x-forwarded-for", SPOOF)]
        b.add(f"size-{size}", "http", _size_outcome(size, accept("http", ATTACKER, headers=headers)), peer=ATTACKER, headers=headers)
    # The client tries to pre-set trustip's own output headers, repeated lines included.
    own = ["x-real-ip", "x-envoy-external-address", "x-forwarded-for", "forwarded"]
    contexts = [("attacker", "http", ATTACKER, None), ("attacker-both", "both", ATTACKER, None), ("proxy", "http", PROXY_PEER, None),
                ("lb-client", "http", LB, CLIENT), ("lb-edge", "both", LB, EDGE), ("attacker6", "http", ATTACKER6, None)]  # fmt: skip
    for repeat in (1, 2, 5, 20):
        for context, listener, peer, source in contexts:
            headers = []
            for name in own:
                for j in range(repeat):
                    value = f"6.6.{j}.{j + 1}" if name != "forwarded" else f"for=6.6.{j}.{j + 1}"
                    if name == "x-forwarded-for":  # a trusted peer's rightmost element is its client
                        value += f", 198.51.100.{150 + j}"
                    headers.append((name, value))
            b.add(f"own-headers-x{repeat}-{context}", listener, peer=peer, proxy_source=source, headers=headers)
    for context, listener, peer, source in contexts:
        for name in own:
            values = ", ".join(f"6.6.9.{j}" for j in range(1, 200)) + ", 198.51.100.160"
            headers = [(name, values if name != "forwarded" else ", ".join(f"for=6.6.9.{j}" for j in range(1, 200)))]
            b.add(f"own-{name}-list-{context}", listener, peer=peer, proxy_source=source, headers=headers)
    yield from b.cases


# --- 18 connection-reuse ---------------------------------------------------------------------------


def connection_reuse() -> Iterator[Case]:
    """Several requests on one connection: every request is decided for itself."""
    b = Builder("connection-reuse")
    # Keep-alive, the X-Forwarded-For changing per request.
    for context, listener, peer, source in (("attacker", "http", ATTACKER, None), ("proxy", "http", PROXY_PEER, None),
                                            ("lb-edge", "both", LB, EDGE), ("lb-client", "both", LB, CLIENT),
                                            ("attacker6", "both", ATTACKER6, None)):  # fmt: skip
        group = f"keepalive-{context}"
        values = [f"6.6.6.6, 198.51.100.{110 + i}" for i in range(6)] + ["garbage", "", f"198.51.100.120, {HOP}", "6.6.6.6, 0.0.0.0"]
        for i, value in enumerate(values):
            headers = [("x-forwarded-for", value)] if value else []
            b.add(f"keepalive-{context}-{i}", listener, peer=peer, proxy_source=source, headers=headers, transport="keepalive", group=group)
    # Pipelined requests after a refusal: the LB's health-check connection, another path first.
    paths = ["/admin", HC_PATH, "/", HC_PATH, f"{HC_PATH}?x"]
    for listener in ("http", "both"):
        group = f"pipeline-lb-local-{listener}"
        for i, path in enumerate(paths):
            expect = accept(listener, LB, path=path)
            if i > 0:
                expect = expect.also(CLOSED)  # Envoy may close the connection after its 403
            b.add(f"pipeline-lb-local-{listener}-{i}", listener, expect, peer=LB, proxy=LOCAL_V2, path=path,
                  headers=[("x-forwarded-for", SPOOF)], transport="pipeline", group=group)  # fmt: skip
    # Pipelined requests from peers refused for every request.
    for context, peer, proxy in (("attacker-proxy", ATTACKER, via(SPOOF)), ("deny", DENY_PEER, b""),
                                 ("reject-rule-proxy", REJECT_PEER, via(SPOOF, version=1))):  # fmt: skip
        group = f"pipeline-{context}"
        for i in range(2):  # the refusal, then one more request pipelined behind it
            expect = accept("http", peer, SPOOF if proxy else None)
            if i > 0:
                expect = expect.also(CLOSED)
            b.add(f"pipeline-{context}-{i}", "http", expect, peer=peer, proxy=proxy, headers=[("x-forwarded-for", SPOOF)],
                  transport="pipeline", group=group)  # fmt: skip
    # Pipelined requests from an accepted peer, the XFF changing per request.
    for context, peer, source in (("proxy", PROXY_PEER, None), ("lb-edge", LB, EDGE)):
        group = f"pipeline-accepted-{context}"
        for i in range(8):
            headers = [("x-forwarded-for", f"6.6.6.6, 198.51.100.{130 + i}" if i % 2 else f"{SPOOF}, bogus")]
            b.add(f"pipeline-accepted-{context}-{i}", "http", peer=peer, proxy_source=source, headers=headers, transport="pipeline",
                  group=group)  # fmt: skip
    yield from b.cases


# --- 19 slow-and-partial ------------------------------------------------------------------------


def slow_and_partial() -> Iterator[Case]:
    """PROXY headers split across TCP segments, partial headers then close or idle, a header
    and nothing after it."""
    b = Builder("slow-and-partial")
    v2 = via(CLIENT)
    v1 = via(CLIENT, version=1)
    for split in range(1, len(v2)):
        peer = (LB, ATTACKER)[split % 2]
        expect = accept("http", peer, CLIENT)
        b.add(f"v2-split-at-{split}", "http", expect, peer=peer, transport="raw", segments=[v2[:split], v2[split:]], pause=0.01)
    for split in (1, 5, 6, 11, 20, len(v1) - 2, len(v1) - 1):
        for peer in (LB, ATTACKER):
            b.add(f"v1-split-at-{split}-{peer}", "both", accept("both", peer, CLIENT), peer=peer, transport="raw",
                  segments=[v1[:split], v1[split:]], pause=0.01)  # fmt: skip
    b.add("v2-byte-by-byte-lb", "strict", accept("strict", LB, CLIENT), peer=LB, transport="raw", segments=[bytes([x]) for x in v2],
          pause=0.002)  # fmt: skip
    b.add("v1-byte-by-byte-lb", "strict", accept("strict", LB, CLIENT), peer=LB, transport="raw", segments=[bytes([x]) for x in v1],
          pause=0.002)  # fmt: skip
    b.add("v2-byte-by-byte-attacker", "http", accept("http", ATTACKER, SPOOF), peer=ATTACKER, transport="raw",
          segments=[bytes([x]) for x in via(SPOOF)], pause=0.002)  # fmt: skip
    # Partial headers, then nothing (held open): Envoy waits for the rest of the header (its
    # listener filter timeout is 15 s), so nothing reaches the upstream and the connection is
    # still open when the client gives up (measured: TIMEOUT).
    partials = [("v2-10", v2[:10]), ("v2-16", v2[:16]), ("v2-fixed-short-payload", v2[:20]), ("v1-prefix", b"PROXY TCP4 198.5"),
                ("v1-no-crlf", v1[:-2]), ("signature-6", client.PROXY_V2_SIGNATURE[:6]), ("v1-P", b"P"),
                ("v2-length-big", client.PROXY_V2_SIGNATURE + b"\x21\x11\x01\x00" + V2_ADDRESSES)]  # fmt: skip
    for name, raw in partials:
        for listener in ("http", "both", "strict"):
            for peer in (LB, ATTACKER):
                b.add(f"partial-{name}-{listener}-{peer}", listener, refused(TIMEOUT), peer=peer, transport="raw", segments=[raw],
                      hold=0.2)  # fmt: skip
    # A whole header then nothing, or half a request: the HCM waits for the request (TIMEOUT),
    # unless the connection role already refused the header (the attacker's PROXY header on a
    # `both` listener: CLOSED).
    for listener in ("http", "both", "strict"):
        for peer in (LB, ATTACKER):
            held = refused(CLOSED) if accept(listener, peer, CLIENT).outcomes == {CLOSED} else refused(TIMEOUT)
            b.add(f"header-then-nothing-{listener}-{peer}", listener, held, peer=peer, transport="raw", segments=[v2], hold=0.2)
            case = b.add(f"header-then-half-request-{listener}-{peer}", listener, held, peer=peer, transport="raw", hold=0.2)
            case.segments = [v2, b"GET / HTTP/1.1\r\nhost: trustip.test\r\nx-test-id: " + case.test_id.encode()
                             + b"\r\nx-forwarded-for: 6.6.6.6\r\n"]  # fmt: skip
    yield from b.cases


GENERATORS: dict[str, Callable[[], Iterator[Case]]] = {
    "xff-huge": xff_huge,
    "xff-spellings": xff_spellings,
    "xff-trusted-walk-abuse": xff_trusted_walk_abuse,
    "forwarded": forwarded,
    "lookalike-headers": lookalike_headers,
    "client-header-spoof": client_header_spoof,
    "non-utf8-and-control": non_utf8_and_control,
    "special-addresses": special_addresses,
    "ipv4-mapped-and-v6": ipv4_mapped_and_v6,
    "proxy-v1-bad-fields": proxy_v1_bad_fields,
    "proxy-v2-bad-fields": proxy_v2_bad_fields,
    "proxy-v2-tlvs": proxy_v2_tlvs,
    "proxy-spoof-untrusted-peer": proxy_spoof_untrusted_peer,
    "proxy-twice-and-local": proxy_twice_and_local,
    "health-check-path-abuse": health_check_path_abuse,
    "http2": http2,
    "many-and-large-headers": many_and_large_headers,
    "connection-reuse": connection_reuse,
    "slow-and-partial": slow_and_partial,
}
assert tuple(GENERATORS) == CATEGORIES


def corpus(category: str) -> list[Case]:
    cases = list(GENERATORS[category]())
    for case in cases:
        for r in case.expect.r:
            assert not spoofed(ipaddress.ip_address(r)), f"{case.name}: the model makes a spoofed address R ({r})"
    return cases


# --- the invariant ---------------------------------------------------------------------------------


def _strict_address(text: str) -> Address | None:
    try:
        return canonical(ipaddress.ip_address(text))
    except ValueError:
        return None


def _forwarded_address(element: str) -> Address | None:
    element = element.strip()
    if not element.startswith("for="):
        return None
    value = element[4:]
    if value.startswith('"[') and value.endswith(']"'):
        return _strict_address(value[2:-2])
    return _strict_address(value)


def upstream_problems(case: Case, headers: list[tuple[str, str]]) -> list[str]:
    """What is wrong with the headers the upstream received for `case` (names lowercase,
    values latin-1 text of the bytes), against the case's expectation and the global invariant."""
    problems = []
    expect = case.expect
    model = MODELS[case.listener]

    def all_of(name: str) -> list[str]:
        return [v for n, v in headers if n == name]

    rs = {str(address(r)) for r in expect.r}
    external = all_of("x-envoy-external-address")
    r = None
    if len(external) != 1 or _strict_address(external[0]) is None:
        problems.append(f"x-envoy-external-address {external!r}: not one address")
    else:
        r = str(_strict_address(external[0]))
        if ":" in external[0] and ipaddress.ip_address(external[0]).ipv4_mapped is not None:
            problems.append(f"x-envoy-external-address {external[0]!r}: an IPv4-mapped address not written as IPv4")
        if r not in rs:
            problems.append(f"R = {r}, expected one of {sorted(rs)}")
    for name in model.set:
        if all_of(name) != external:
            problems.append(f"{name} {all_of(name)!r} differs from x-envoy-external-address {external!r}")
    for name, parse in (("x-forwarded-for", _strict_address), ("forwarded", _forwarded_address)):
        values = all_of(name)
        if len(values) != 1:
            problems.append(f"{name} {values!r}: not one line")
            continue
        chain = [parse(e.strip()) for e in values[0].split(",")]
        if any(ip is None for ip in chain):
            problems.append(f"{name} {values[0]!r}: an element is not an address")
            continue
        if r is not None and str(chain[0]) != r:
            problems.append(f"{name} {values[0]!r}: does not start with R {r}")
        if expect.c is not None and str(chain[-1]) != str(address(expect.c)):
            problems.append(f"{name} {values[0]!r}: does not end with C {expect.c}")
        if model.hops:
            # Hop counts trust the hops by position: at most N - 1 of them between R and C.
            if len(chain) > model.hops + 1:
                problems.append(f"{name} {values[0]!r}: more than {model.hops - 1} hops between R and C")
        else:
            for ip in chain[1:-1]:
                if not model.trusts(ip):
                    problems.append(f"{name} {values[0]!r}: {ip} between R and C is no trusted hop")
        for element in values[0].split(","):
            text = element.strip().removeprefix("for=").strip('"').strip("[]")
            try:
                mapped = ipaddress.ip_address(text)
            except ValueError:
                continue
            if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
                problems.append(f"{name} {values[0]!r}: an IPv4-mapped address not written as IPv4")
    if model.client_header:
        values = all_of(model.client_header)
        if values and (len(values) != 1 or str(_strict_address(values[0])) != r):
            problems.append(f"{model.client_header} {values!r}: not R")
    if expect.untrusted:
        managed = set(model.set) | {"forwarded", "x-forwarded-for"} | ({model.client_header} if model.client_header else set())
        for name in DOC_DEFAULT_STRIP:
            if name not in managed and all_of(name):
                problems.append(f"{name} {all_of(name)!r} reached the upstream from an untrusted C")
    # Where a spoofed address must not be: every header when C is untrusted; when C is a trusted
    # proxy, the headers trustip writes (its other headers are its own business, as
    # test_lookalike_headers.py shows).
    written = {"x-forwarded-for", "forwarded", *model.set, *TLV_HEADERS.values()}
    if model.client_header:
        written.add(model.client_header)
    for name, value in headers:
        if "_" in name and name.replace("_", "-") in ADDRESS_HEADERS:
            problems.append(f"underscore look-alike {name}: {value!r} reached the upstream")
        if (expect.untrusted or name in written) and _SPOOF_TEXT.search(value.encode("latin-1")):
            problems.append(f"spoofed address in {name}: {value[:200]!r}")
        if MARKER in value and name != "x-test-id":
            problems.append(f"{name} {value!r}: the client's own value of a header only trustip writes")
    return problems


def echo_headers(body: bytes) -> list[tuple[str, str]] | None:
    """The headers the echo upstream received, from its JSON answer."""
    try:
        return [(n, v) for n, v in json.loads(body)["headers"]]
    except (ValueError, KeyError, TypeError):
        return None
