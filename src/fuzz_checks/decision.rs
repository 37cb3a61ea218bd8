//! Target `decision`: [`evaluate`] (which runs `decide_connection`, then `decide_request`)
//! on anything the host can hand over, under fixed policies and policies built from the input.
//!
//! Input fields (split at `\n`): 0 control bytes (0 the policy, modulo 8: one of [`FIXED`], or
//! 7 a policy built from control bytes 3.., 1 the role, 2 which inputs are present: bit 0 the
//! direct-peer filter state, bit 1 `source.address`, bits 2-6 the five TLVs), 1 the direct-peer
//! filter-state value (D, or `D P`), 2 `source.address`, 3-7 the TLVs as Envoy stores them
//! (aws_vpce_id, azure_link_id, gcp_psc_connection_id, authority, unique_id), then one request
//! header per field, `name: value`.
//!
//! Checked, from docs/trust-model.md, with the rules and trusted blocks matched by
//! [`reference::Block`] and the addresses parsed by std:
//! - D and P are what std reads from the inputs, and the rule is the first whose blocks hold D;
//! - never a spoofed address: C is D, or P only when D's rule trusts PROXY (`require`/`use`)
//!   with its TLV allowlists met, or when D is missing and the policy says P stands in for it
//!   (`if_missing: trust_source`, or shadow mode); enforce mode refuses what the rule table
//!   refuses; with PROXY sent upstream an accepted PROXY header is always the one used;
//! - R differs from C only in the HTTP role, when C (not a health check) is in `xff.trusted`
//!   or the hop the walk reached is trusted for the client header, and R is then an address of
//!   the walked header or of the client header; R, the chain and the client header's use are
//!   a model's: the reference walk (trusted blocks or a count of hops), then the client header;
//! - the headers written carry only R, C, the chain (addresses that were D, P or in the walked
//!   input), TLV values decoded from PROXY information that was used, or the incoming value
//!   (append); an untrusted C's strip list is removed; nothing outside the policy's names;
//! - a refusal writes nothing and publishes no client; per-connection roles read no header;
//!   each input is read at most once; the log line is one line.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::OnceLock;

use super::reference::{self, Block};
use super::tlv::reference_decode;
use super::{byte, ensure, fields, pick, shown};
use crate::core::config::{ForwardedMode, IfMissing, Mode, Policy, XffMode, XffSource};
use crate::core::decision::{HeaderUse, Role, Via, X_FORWARDED_FOR};
use crate::core::headers::{HeaderOp, FORWARDED};
use crate::core::inputs::{Inputs, Read};
use crate::core::tlv::{TlvEncoding, TlvKey};
use crate::core::verdict::{evaluate, Action, Outcome, Verdict};

/// The policies of the core's property tests, and two more: everything trusted, and binary
/// TLVs stored as base64.
pub const FIXED: [&str; 7] = [
    r#"{"mode":"enforce","rules":[
      {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
      {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
      {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
      "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"max_entries":8},
      "headers":{"x_forwarded_for":"append","forwarded":"append","set":["x-real-ip"],
                 "tlv":{"aws_vpce_id":"x-amzn-vpce-id","unique_id":"x-unique-id"}}}"#,
    r#"{"mode":"shadow","direct_peer":{"if_missing":"trust_source"},"rules":[
      {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
      {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
      {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
      "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"max_entries":4},
      "headers":{"x_forwarded_for":"overwrite","forwarded":"overwrite",
                 "set":["x-real-ip","x-envoy-external-address"],
                 "tlv":{"aws_vpce_id":"x-amzn-vpce-id","unique_id":"x-unique-id"}}}"#,
    r#"{"mode":"enforce","upstream_proxy_protocol":true,"rules":[
      {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]},
       "health_check_paths":["/healthz/ready","/ping"]},
      {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
      {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
      "xff":{"trusted":["10.0.0.0/8","2001:db8::/32","127.0.0.5"],"max_entries":8},
      "headers":{"x_forwarded_for":"append","forwarded":"append","set":["x-real-ip"],
                 "tlv":{"aws_vpce_id":"x-amzn-vpce-id","unique_id":"x-unique-id"}}}"#,
    r#"{"mode":"enforce","rules":[
      {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
      {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
      {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
      "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"trusted_hops":2,"max_entries":8},
      "client_header":{"name":"cf-connecting-ip","trusted":["10.0.0.0/8","198.51.100.0/24"]},
      "headers":{"x_forwarded_for":"overwrite","set":["x-real-ip"]}}"#,
    r#"{"mode":"shadow","rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use"}],
      "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"source":"forwarded","max_entries":6},
      "client_header":{"name":"cf-connecting-ip","trusted":["198.51.100.0/24"],"fail_closed":true},
      "headers":{"x_forwarded_for":"append","forwarded":"overwrite","set":["x-real-ip"]}}"#,
    r#"{"rules":[{"from":["0.0.0.0/0","::/0"],"proxy_protocol":"use"}],
      "xff":{"trusted":["0.0.0.0/0","::/0"],"max_entries":1024},
      "client_header":{"name":"true-client-ip","trusted":["0.0.0.0/0"],"fail_closed":true},
      "headers":{"x_forwarded_for":"overwrite","forwarded":"overwrite","strip":["x-real-ip"]}}"#,
    r#"{"tlv_encoding":"base64","rules":[
      {"from":["127.0.0.5","::ffff:10.0.0.0/104"],"proxy_protocol":"require",
       "tlvs":{"gcp_psc_connection_id":["1311768467294899695"],"azure_link_id":["42","7"]}},
      {"from":["203.0.113.0/24"],"proxy_protocol":"deny"}],
      "xff":{"trusted":["127.0.0.5"],"trusted_hops":1},
      "headers":{"tlv":{"gcp_psc_connection_id":"x-gcp-psc","azure_link_id":"x-azure",
                        "authority":"x-authority","unique_id":"x-unique-id"}}}"#,
];

/// What the checks need of a policy besides the compiled one: its blocks, read from the JSON
/// with serde_json and matched with [`Block`].
pub struct Reference {
    /// Per rule: its blocks and its `proxy_protocol` word.
    pub rules: Vec<(Vec<Block>, String)>,
    pub xff_trusted: Vec<Block>,
    pub header_trusted: Vec<Block>,
}

fn blocks(value: Option<&serde_json::Value>) -> Vec<Block> {
    value
        .and_then(serde_json::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(serde_json::Value::as_str)
                .filter_map(Block::parse)
                .collect()
        })
        .unwrap_or_default()
}

impl Reference {
    pub fn from_json(text: &str) -> Option<Reference> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let rules = value
            .get("rules")
            .and_then(serde_json::Value::as_array)
            .map(|rules| {
                rules
                    .iter()
                    .map(|rule| {
                        let word = rule
                            .get("proxy_protocol")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default();
                        (blocks(rule.get("from")), word.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let xff = value.get("xff");
        let header = value.get("client_header");
        Some(Reference {
            rules,
            xff_trusted: blocks(xff.and_then(|x| x.get("trusted"))),
            header_trusted: blocks(header.and_then(|h| h.get("trusted"))),
        })
    }

    /// The first rule whose blocks hold `ip`: its index and word (`None`: the implicit
    /// `reject`).
    pub fn rule(&self, ip: IpAddr) -> Option<(usize, &str)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, (blocks, _))| reference::any_contains(blocks, ip))
            .map(|(i, (_, word))| (i, word.as_str()))
    }
}

/// Control bytes read one at a time, 0 once they run out (the first choice of each).
pub struct Choices<'a> {
    bytes: &'a [u8],
}

impl Choices<'_> {
    pub fn new(bytes: &[u8]) -> Choices<'_> {
        Choices { bytes }
    }

    pub fn next(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((first, rest)) => {
                self.bytes = rest;
                *first
            }
            None => 0,
        }
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let selector = self.next();
        pick(items, selector)
    }

    /// Some of `items`, chosen by the bits of one byte (at most 8).
    pub fn some_of(&mut self, items: &[&str]) -> Vec<String> {
        let bits = self.next();
        items
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, item)| format!("\"{item}\""))
            .collect()
    }
}

const BLOCKS: [&str; 8] = [
    "10.0.0.0/8",
    "127.0.0.5",
    "::1",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "2001:db8::/32",
    "::ffff:203.0.113.0/120",
    "198.51.100.0/24",
];

/// A policy built from choices: every field of docs/configuration.md with a few values each.
/// (Combinations the parser refuses are skipped by the caller.)
pub fn generated(choices: &mut Choices) -> String {
    let enforce = !choices.next().is_multiple_of(3);
    let mut fields = vec![format!(
        "\"mode\":\"{}\"",
        if enforce { "enforce" } else { "shadow" }
    )];
    if choices.next().is_multiple_of(4) {
        fields.push(r#""direct_peer":{"if_missing":"trust_source"}"#.to_string());
    }
    let mut rules = Vec::new();
    for _ in 0..choices.next() % 4 {
        let mut from = choices.some_of(&BLOCKS);
        if from.is_empty() {
            from.push("\"127.0.0.5\"".to_string());
        }
        let word = choices
            .pick(&["require", "use", "ignore", "reject", "deny"])
            .unwrap_or("use");
        let mut rule = format!(
            "{{\"from\":[{}],\"proxy_protocol\":\"{word}\"",
            from.join(",")
        );
        let extras = choices.next();
        if matches!(word, "require" | "use") {
            rule.push_str(match extras & 3 {
                1 => r#","tlvs":{"aws_vpce_id":["vpce-1","vpce-2"]}"#,
                2 => r#","tlvs":{"unique_id":["00ab10"]}"#,
                3 => r#","tlvs":{"aws_vpce_id":["vpce-1"],"unique_id":["00ab10"]}"#,
                _ => "",
            });
        }
        if word == "require" && extras & 4 != 0 {
            rule.push_str(r#","health_check_paths":["/healthz"]"#);
        }
        rule.push('}');
        rules.push(rule);
    }
    fields.push(format!("\"rules\":[{}]", rules.join(",")));
    let trusted = choices.some_of(&BLOCKS);
    let max_entries = choices.pick(&[1u32, 2, 4, 32]).unwrap_or(32);
    let hops = if trusted.is_empty() {
        0
    } else {
        u32::from(choices.next() % 3).min(max_entries)
    };
    let source = choices
        .pick(&["x-forwarded-for", "forwarded"])
        .unwrap_or("x-forwarded-for");
    fields.push(format!(
        "\"xff\":{{\"trusted\":[{}],\"max_entries\":{max_entries},\"trusted_hops\":{hops},\"source\":\"{source}\"}}",
        trusted.join(",")
    ));
    if choices.next().is_multiple_of(3) {
        let mut trusted = choices.some_of(&BLOCKS);
        if trusted.is_empty() {
            trusted.push("\"10.0.0.0/8\"".to_string());
        }
        let fail_closed = choices.next().is_multiple_of(2);
        fields.push(format!(
            "\"client_header\":{{\"name\":\"cf-connecting-ip\",\"trusted\":[{}],\"fail_closed\":{fail_closed}}}",
            trusted.join(",")
        ));
    }
    let xff_mode = choices
        .pick(&["overwrite", "append", "preserve", "remove"])
        .unwrap_or("overwrite");
    let forwarded = choices
        .pick(&["none", "overwrite", "append"])
        .unwrap_or("none");
    let set = choices.some_of(&["x-real-ip", "x-envoy-external-address", "x-client-ip"]);
    let tlv = choices.some_of(&[
        "aws_vpce_id\":\"x-amzn-vpce-id",
        "unique_id\":\"x-unique-id",
        "azure_link_id\":\"x-azure",
    ]);
    fields.push(format!(
        "\"headers\":{{\"x_forwarded_for\":\"{xff_mode}\",\"forwarded\":\"{forwarded}\",\"set\":[{}],\"tlv\":{{{}}}}}",
        set.join(","),
        tlv.join(",")
    ));
    if enforce && choices.next().is_multiple_of(3) {
        fields.push(r#""upstream_proxy_protocol":true"#.to_string());
    }
    if choices.next().is_multiple_of(4) {
        fields.push(r#""tlv_encoding":"base64""#.to_string());
    }
    format!("{{{}}}", fields.join(","))
}

fn fixed() -> &'static [(Policy, Reference)] {
    static CELL: OnceLock<Vec<(Policy, Reference)>> = OnceLock::new();
    CELL.get_or_init(|| {
        FIXED
            .iter()
            .filter_map(|text| {
                let policy = Policy::from_json(text.as_bytes()).ok()?;
                Some((policy, Reference::from_json(text)?))
            })
            .collect()
    })
}

/// An address as std reads Envoy's text (`ip:port`, `[v6]:port`, a bare IP, port 0), canonical.
pub(crate) fn std_socket(bytes: &[u8]) -> Option<(IpAddr, u16)> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let (ip, port) = SocketAddr::from_str(text)
        .map(|s| (s.ip(), s.port()))
        .or_else(|_| IpAddr::from_str(text).map(|ip| (ip, 0)))
        .ok()?;
    Some((reference::canonical(ip), port))
}

/// [`std_socket`]'s address (for the native target).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn std_peer(bytes: &[u8]) -> Option<IpAddr> {
    std_socket(bytes).map(|(ip, _)| ip)
}

/// An address and port.
pub(crate) type Socket = (IpAddr, u16);

fn usable(peer: Option<Socket>) -> Option<Socket> {
    peer.filter(|(ip, _)| !ip.is_unspecified())
}

/// D and P as docs/trust-model.md defines them from the inputs: D is the filter-state value's
/// first word; P its second word (an unspecified one is no client information: P = D), else
/// `source.address`. `None` for D when it is absent or not an address.
pub(crate) fn peers(
    direct: Option<&[u8]>,
    source: Option<&[u8]>,
) -> (Option<Socket>, Option<Socket>) {
    let from_source = || usable(source.and_then(std_socket));
    let Some(value) = direct.map(<[u8]>::trim_ascii) else {
        return (None, from_source());
    };
    match value.iter().position(|b| *b == b' ') {
        None => (usable(std_socket(value)), from_source()),
        Some(space) => {
            let d = usable(std_socket(value.get(..space).unwrap_or_default()));
            let p = std_socket(value.get(space..).unwrap_or_default());
            match (d, p) {
                (Some(d), Some(p)) if p.0.is_unspecified() => (Some(d), Some(d)),
                (Some(d), Some(p)) => (Some(d), Some(p)),
                _ => (None, from_source()),
            }
        }
    }
}

/// The address's canonical text, as std writes it (not the core's writer under test).
pub(crate) fn text(ip: IpAddr) -> Vec<u8> {
    reference::canonical(ip).to_string().into_bytes()
}

/// An RFC 7239 `for=` element, written from the RFC: IPv6 quoted and bracketed.
fn forwarded_element(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => format!("for={v4}").into_bytes(),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\"").into_bytes(),
    }
}

/// The decoded value of a stored TLV, per the policy's storage encoding (reference decoders).
fn stored_tlv(raw: &[u8], key: TlvKey, encoding: TlvEncoding) -> Option<String> {
    match encoding {
        TlvEncoding::Raw => reference_decode(key, raw),
        TlvEncoding::Base64 => reference_decode(key, &reference::base64_decode(raw)?),
    }
}

struct Case<'a> {
    policy: &'a Policy,
    reference: &'a Reference,
    role: Role,
    host: Inputs,
    tlvs: [Option<Vec<u8>>; 5],
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let parts = fields(data);
    let field = |i: usize| parts.get(i).copied();
    let control = field(0).unwrap_or_default();
    let role = pick(
        &[Role::Http, Role::Network, Role::Listener],
        byte(control, 1),
    )
    .unwrap_or(Role::Http);
    let present = byte(control, 2);

    let generated_policy;
    let selector = usize::from(byte(control, 0) % 8);
    let (policy, reference) = match fixed().get(selector) {
        Some((policy, reference)) => (policy, reference),
        None => {
            let text = generated(&mut Choices::new(control.get(3..).unwrap_or_default()));
            let Ok(policy) = Policy::from_json(text.as_bytes()) else {
                // A combination the parser refuses (the config target covers refusals).
                return Ok(());
            };
            let reference =
                Reference::from_json(&text).ok_or_else(|| format!("unreadable {text}"))?;
            generated_policy = (policy, reference);
            (&generated_policy.0, &generated_policy.1)
        }
    };

    let mut host = Inputs {
        direct_peer: (present & 1 != 0).then(|| field(1).unwrap_or_default().to_vec()),
        source: (present & 2 != 0).then(|| field(2).unwrap_or_default().to_vec()),
        ..Inputs::default()
    };
    let mut tlvs: [Option<Vec<u8>>; 5] = Default::default();
    for key in TlvKey::ALL {
        if present & (4 << key.index()) != 0 {
            let value = field(3 + key.index()).unwrap_or_default();
            host = host.tlv(key, value);
            if let Some(slot) = tlvs.get_mut(key.index()) {
                *slot = Some(value.to_vec());
            }
        }
    }
    for header in parts.iter().skip(8) {
        let (name, value) = match header.windows(2).position(|w| w == b": ") {
            Some(at) => (
                header.get(..at).unwrap_or_default(),
                header.get(at + 2..).unwrap_or_default(),
            ),
            None => (&[][..], *header),
        };
        if !name.is_empty() {
            host.headers.append(&String::from_utf8_lossy(name), value);
        }
    }
    let mut case = Case {
        policy,
        reference,
        role,
        host,
        tlvs,
    };
    let incoming = case.host.clone();
    let verdict = evaluate(policy, role, &mut case.host);
    check_verdict(&case, &incoming, &verdict).map_err(|why| {
        format!(
            "{why}\n  role {:?}, D/P {:?}, source {:?}, verdict {verdict:?}",
            role,
            incoming.direct_peer.as_deref().map(shown),
            incoming.source.as_deref().map(shown)
        )
    })
}

fn check_verdict(case: &Case, incoming: &Inputs, verdict: &Verdict) -> Result<(), String> {
    let (policy, reference, role) = (case.policy, case.reference, case.role);
    let connection = &verdict.connection;

    // Each input read at most once; per-connection roles read no header.
    for (i, read) in case.host.reads.iter().enumerate() {
        ensure(
            !case.host.reads.iter().skip(i + 1).any(|r| r == read),
            || format!("{read:?} read twice: {:?}", case.host.reads),
        )?;
        ensure(
            !(role.per_connection() && matches!(read, Read::Header(_))),
            || format!("the {} role read {read:?}", role.name()),
        )?;
    }
    if let Some(line) = &verdict.log {
        ensure(!line.chars().any(char::is_control), || {
            format!("log line {line:?}")
        })?;
    }

    // D and P as std reads them, and the rule of D.
    let (d_peer, p_peer) = peers(incoming.direct_peer.as_deref(), incoming.source.as_deref());
    let as_pair = |peer: Option<crate::core::addr::Peer>| peer.map(|x| (x.ip, x.port));
    ensure(as_pair(connection.direct_peer.peer()) == d_peer, || {
        format!("D {:?}, std reads {d_peer:?}", connection.direct_peer)
    })?;
    let standin_peer = match (d_peer, policy.if_missing) {
        (Some(d), _) => Some(d),
        (None, IfMissing::TrustSource) => p_peer,
        (None, IfMissing::Reject) => None,
    };
    if d_peer.is_some() {
        ensure(as_pair(connection.source) == p_peer, || {
            format!("P {:?}, std reads {p_peer:?}", connection.source)
        })?;
    }
    // A PROXY header was used exactly when P differs from D, address or port.
    let proxy = match (standin_peer, p_peer) {
        (Some(d), Some(p)) => d != p,
        _ => false,
    };
    let (d, p) = (d_peer.map(|x| x.0), p_peer.map(|x| x.0));
    let d_or_standin = standin_peer.map(|x| x.0);
    let rule = d_or_standin.and_then(|d| reference.rule(d));
    if d_or_standin.is_some() {
        ensure(connection.rule == rule.map(|(i, _)| i), || {
            format!("rule {:?}, reference {rule:?}", connection.rule)
        })?;
    }
    let word = rule.map_or("reject", |(_, word)| word);

    let Some(c) = connection.client else {
        // Refused: nothing written, nothing published, the action refuses.
        ensure(
            verdict.client.is_none() && verdict.headers.is_empty() && verdict.request.is_none(),
            || "a refusal that writes or publishes".to_string(),
        )?;
        let action = if role.per_connection() {
            Action::Close
        } else {
            Action::Respond {
                status: policy.reject_status,
            }
        };
        ensure(
            verdict.action == action && matches!(verdict.outcome, Outcome::Rejected(_)),
            || format!("refused with {:?} {:?}", verdict.action, verdict.outcome),
        )?;
        return Ok(());
    };
    ensure(verdict.action == Action::Continue, || {
        format!("accepted with {:?}", verdict.action)
    })?;

    // Never a spoofed address: C is D, or P with a rule that trusts PROXY (TLVs checked), or
    // P standing in for a missing D.
    if Some(c) != d {
        let standin = d.is_none()
            && (policy.if_missing == IfMissing::TrustSource || policy.mode == Mode::Shadow);
        let trusted_proxy = proxy && matches!(word, "require" | "use");
        ensure(Some(c) == p && (standin || trusted_proxy), || {
            format!("C = {c} is neither D {d:?} nor a P {p:?} the {word} rule trusts")
        })?;
    }
    if connection.via == Via::Proxy {
        ensure(
            proxy && matches!(word, "require" | "use") && Some(c) == p,
            || format!("via PROXY with rule {word}, D {d:?}, P {p:?}"),
        )?;
        let rule = connection.rule.and_then(|i| policy.rules.get(i));
        for (key, allowed) in rule.map(|r| r.tlvs.as_slice()).unwrap_or_default() {
            let value = case
                .tlvs
                .get(key.index())
                .cloned()
                .flatten()
                .and_then(|raw| stored_tlv(&raw, *key, policy.tlv_encoding));
            ensure(value.is_some_and(|v| allowed.contains(&v)), || {
                format!("via PROXY, but {} is not allowed", key.name())
            })?;
        }
    }
    if policy.mode == Mode::Enforce {
        let refused = match word {
            "deny" => true,
            "reject" => proxy,
            "ignore" => proxy && policy.upstream_proxy_protocol,
            "require" => !proxy && connection.via != Via::HealthCheck,
            _ => false,
        } || d_or_standin.is_none();
        ensure(!refused, || {
            format!("accepted under a {word} rule (PROXY {proxy}, D {d:?})")
        })?;
        ensure(connection.rejection.is_none(), || {
            "enforce mode accepted a rejection".to_string()
        })?;
    }
    if policy.upstream_proxy_protocol && proxy {
        ensure(connection.via == Via::Proxy, || {
            "a PROXY header not used would be sent upstream".to_string()
        })?;
    }

    let Some(r) = verdict.client else {
        return Err("accepted without a client to publish".to_string());
    };
    if role.per_connection() {
        return ensure(
            r == c && verdict.headers.is_empty() && verdict.request.is_none(),
            || format!("the {} role moved the client or wrote headers", role.name()),
        );
    }
    let Some(request) = &verdict.request else {
        return Err("an HTTP verdict without its walk".to_string());
    };
    check_request(case, incoming, verdict, c, r, &request.chain)
}

fn check_request(
    case: &Case,
    incoming: &Inputs,
    verdict: &Verdict,
    c: IpAddr,
    r: IpAddr,
    chain: &[IpAddr],
) -> Result<(), String> {
    let (policy, reference) = (case.policy, case.reference);
    let connection = &verdict.connection;
    let request = verdict.request.as_ref().ok_or("no request part")?;
    let health = connection.via == Via::HealthCheck;
    let c_trusted = !health && reference::any_contains(&reference.xff_trusted, c);

    // What the walk read, as the reference reads it.
    let walked_name = match policy.xff_source {
        XffSource::XForwardedFor => X_FORWARDED_FOR,
        XffSource::Forwarded => FORWARDED,
    };
    let walked_value = incoming.headers.get(walked_name);
    // `None` for a `Forwarded` value the reference readers do not define (a quote in a value
    // that is not well formed): then what depends on the walked elements is not checked.
    let elements: Option<Vec<Vec<u8>>> = match (&walked_value, policy.xff_source) {
        (None, _) => Some(Vec::new()),
        (Some(value), XffSource::XForwardedFor) => {
            Some(reference::elements_rev(&[value.as_slice()]))
        }
        (Some(value), XffSource::Forwarded) => reference::forwarded_walked(value),
    };
    let in_walked: Option<Vec<IpAddr>> = elements.as_ref().map(|elements| {
        elements
            .iter()
            .filter_map(|e| reference::element(e))
            .collect()
    });
    let header_name = policy.client_header.as_ref().map(|h| h.name.as_str());
    let header_value = header_name
        .and_then(|name| incoming.headers.get(name))
        .and_then(|v| reference::element(&v));
    let used = request.client_header == HeaderUse::Used;

    // The chain: R first, C last, no address next to itself, every address known.
    ensure(
        chain.first() == Some(&r) && chain.last() == Some(&c),
        || format!("chain {chain:?} for R {r}, C {c}"),
    )?;
    ensure(chain.windows(2).all(|w| w.first() != w.get(1)), || {
        format!("chain {chain:?} repeats an address next to itself")
    })?;
    let known = |ip: &IpAddr| {
        *ip == c
            || in_walked.as_ref().is_none_or(|w| w.contains(ip))
            || (used && header_value == Some(*ip))
    };
    ensure(chain.iter().all(known), || {
        format!("chain {chain:?} holds an address that was not in the input")
    })?;

    // The request, modelled: the walk (only from a trusted C that is not a health check),
    // then the client header when the hop the walk reached is trusted for it. A client header
    // equal to the walk's R adds no hop (no address next to itself).
    let (walk_r, walk_chain) = match (c_trusted, &elements) {
        (true, Some(elements)) => {
            let (r, chain, _) = match policy.xff_hops {
                0 => reference::walk(c, elements, &reference.xff_trusted, policy.xff_max_entries),
                n => reference::count_hops(c, elements, n),
            };
            (r, chain)
        }
        (false, _) => (c, vec![c]),
        // The walked value is one the reference does not read: no model of the request.
        (true, None) => return check_headers(case, incoming, verdict, c, r, chain),
    };
    let trusted_edge = policy.client_header.is_some()
        && !health
        && reference::any_contains(&reference.header_trusted, walk_r);
    let (want_use, want_r, want_chain) = match (trusted_edge, header_value) {
        (true, Some(ip)) => {
            let mut chain = walk_chain.clone();
            if chain.first() != Some(&ip) {
                chain.insert(0, ip);
            }
            (HeaderUse::Used, ip, chain)
        }
        (true, None) => (HeaderUse::Invalid, walk_r, walk_chain),
        (false, _) => (HeaderUse::NotTrusted, walk_r, walk_chain),
    };
    ensure(
        request.client_header == want_use && r == want_r && chain == want_chain.as_slice(),
        || {
            format!(
                "request gave {:?} R {r} chain {chain:?}; model {want_use:?} R {want_r} chain {want_chain:?}",
                request.client_header
            )
        },
    )?;

    check_headers(case, incoming, verdict, c, r, chain)
}

/// The headers written: only R, C, the chain, TLV values of PROXY information that was used,
/// or the incoming value; an untrusted C's strip list removed.
fn check_headers(
    case: &Case,
    incoming: &Inputs,
    verdict: &Verdict,
    c: IpAddr,
    r: IpAddr,
    chain: &[IpAddr],
) -> Result<(), String> {
    let policy = case.policy;
    let connection = &verdict.connection;
    let request = verdict.request.as_ref().ok_or("no request part")?;
    let health = connection.via == Via::HealthCheck;
    let c_trusted = !health && reference::any_contains(&case.reference.xff_trusted, c);
    let header_name = policy.client_header.as_ref().map(|h| h.name.as_str());
    let used = request.client_header == HeaderUse::Used;
    let rules = &policy.headers;
    let tlv_names: Vec<&str> = rules.tlv.iter().map(|(_, n)| n.as_str()).collect();
    let incoming_value = |name: &str| incoming.headers.get(name);
    // What append mode writes: the incoming value (unless the strip step removed it), then
    // `last`.
    let appended = |name: &str, last: &[u8]| {
        let stripped = !c_trusted && rules.strip.iter().any(|n| n == name);
        let before = if stripped { None } else { incoming_value(name) };
        let mut v = before
            .filter(|v| !v.trim_ascii().is_empty())
            .map(|mut v| {
                v.extend_from_slice(b", ");
                v
            })
            .unwrap_or_default();
        v.extend_from_slice(last);
        v
    };
    for op in &verdict.headers {
        let name = op.name();
        let value = match op {
            HeaderOp::Set(_, value) => Some(value.as_slice()),
            HeaderOp::Remove(_) => None,
        };
        if rules.set.iter().any(|n| n == name) && value.is_some() {
            ensure(value == Some(&text(r)[..]), || {
                format!("{name} set to {:?}, R is {r}", value.map(shown))
            })?;
        } else if header_name == Some(name) {
            ensure(
                value.is_none() || (used && value == Some(&text(r)[..])),
                || format!("client header {name} written {:?}", value.map(shown)),
            )?;
        } else if name == X_FORWARDED_FOR && value.is_none() {
            let stripped = !c_trusted && rules.strip.iter().any(|n| n == name);
            ensure(rules.x_forwarded_for == XffMode::Remove || stripped, || {
                format!(
                    "x-forwarded-for removed in {:?} mode",
                    rules.x_forwarded_for
                )
            })?;
        } else if name == X_FORWARDED_FOR {
            let want = match rules.x_forwarded_for {
                XffMode::Overwrite => Some(
                    chain
                        .iter()
                        .map(|ip| text(*ip))
                        .collect::<Vec<_>>()
                        .join(&b", "[..]),
                ),
                XffMode::Append => Some(appended(name, &text(c))),
                XffMode::Remove => None,
                XffMode::Preserve => {
                    return Err("x-forwarded-for written in preserve mode".to_string())
                }
            };
            ensure(value == want.as_deref(), || {
                format!(
                    "x-forwarded-for {:?}, want {:?}",
                    value.map(shown),
                    want.as_deref().map(shown)
                )
            })?;
        } else if name == FORWARDED && rules.forwarded != ForwardedMode::None && value.is_some() {
            let want = match rules.forwarded {
                ForwardedMode::Overwrite => chain
                    .iter()
                    .map(|ip| forwarded_element(*ip))
                    .collect::<Vec<_>>()
                    .join(&b", "[..]),
                _ => appended(name, &forwarded_element(c)),
            };
            ensure(value == Some(want.as_slice()), || {
                format!("forwarded {:?}, want {}", value.map(shown), shown(&want))
            })?;
        } else if let Some((key, _)) = rules.tlv.iter().find(|(_, n)| n == name) {
            if let Some(value) = value {
                let want = case
                    .tlvs
                    .get(key.index())
                    .cloned()
                    .flatten()
                    .and_then(|raw| stored_tlv(&raw, *key, policy.tlv_encoding));
                ensure(
                    connection.via == Via::Proxy
                        && want.as_deref().map(str::as_bytes) == Some(value),
                    || format!("{name} set to {} (via {:?})", shown(value), connection.via),
                )?;
            }
        } else if value.is_none() {
            ensure(!c_trusted && rules.strip.iter().any(|n| n == name), || {
                format!("{name} removed (C {c} trusted: {c_trusted})")
            })?;
        } else {
            return Err(format!("{name} written, the policy does not name it"));
        }
    }
    // An untrusted C's strip list is removed (and TLV headers never pass from the client).
    let removed = |name: &str| {
        verdict
            .headers
            .iter()
            .rev()
            .find(|op| op.name() == name)
            .is_some_and(|op| matches!(op, HeaderOp::Remove(_)) || tlv_names.contains(&name))
    };
    if !c_trusted {
        for name in &rules.strip {
            let written = rules.set.contains(name)
                || tlv_names.contains(&name.as_str())
                || header_name == Some(name.as_str())
                || name == X_FORWARDED_FOR
                || name == FORWARDED;
            if incoming.headers.get(name).is_some() && !written {
                ensure(removed(name), || {
                    format!("{name} from untrusted C {c} kept")
                })?;
            }
        }
    }
    for name in &tlv_names {
        ensure(verdict.headers.iter().any(|op| op.name() == *name), || {
            format!("TLV header {name} neither set nor removed")
        })?;
    }
    Ok(())
}
