//! `trustip explain`: runs the filter's decision on given inputs and prints the outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use trustip::core::addr::Peer;
use trustip::core::config::{Mode, Policy};
use trustip::core::decision::{HeaderUse, Role, Via};
use trustip::core::headers::{HeaderList, HeaderOp};
use trustip::core::inputs::Inputs;
use trustip::core::names;
use trustip::core::tlv::{encode, TlvEncoding, TlvKey};
use trustip::core::verdict::{evaluate, Action, Verdict};
use trustip::core::xff::WalkEnd;

use crate::error::CliError;
use crate::policy_file::PolicyFile;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// The HTTP filter: per request, with headers (root_id trustip-http).
    Http,
    /// The network filter: per connection, no headers (root_id trustip-network).
    Network,
}

/// Run the filter's decision on these inputs: the direct TCP peer D, the address from the PROXY
/// header P, its TLVs and the request headers. Exit status: 0 accept, 1 reject, 2 bad usage or
/// bad configuration.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The policy: the filter's JSON plugin configuration.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The direct peer D: the TCP peer before PROXY processing (e.g. the load balancer).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub peer: String,
    /// The source address P from the PROXY header; omit when the connection carried none, or a
    /// header without client information (v2 LOCAL, v1 UNKNOWN: a load balancer's health check).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub proxy: Option<String>,
    /// A PROXY v2 TLV carried with --proxy, decoded form (aws_vpce_id=vpce-..., azure_link_id=42,
    /// gcp_psc_connection_id=7, authority=host, unique_id=hex). Repeatable.
    #[arg(long = "tlv", value_name = "KEY=VALUE")]
    pub tlvs: Vec<String>,
    /// A request header as sent by the client ('X-Forwarded-For: 1.2.3.4'). Repeatable; repeated
    /// names are joined with ',' as Envoy does.
    #[arg(long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,
    /// The request path (HTTP role), compared with a rule's health_check_paths on a connection
    /// that brings no client information.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
    /// Which filter role decides.
    #[arg(long, value_enum, default_value = "http")]
    pub role: RoleArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_peer(flag: &str, text: &str) -> Result<Peer, CliError> {
    Peer::parse(text.as_bytes()).ok_or_else(|| {
        CliError::Usage(format!(
            "{flag} {text:?}: expected an IP address with an optional port (1.2.3.4:80, [2001:db8::1]:443)"
        ))
    })
}

/// The TLVs as Envoy would store them in filter state for this policy.
fn parse_tlvs(args: &[String], encoding: TlvEncoding) -> Result<[Option<Vec<u8>>; 5], CliError> {
    let mut raw: [Option<Vec<u8>>; 5] = Default::default();
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--tlv {arg:?}: expected KEY=VALUE")))?;
        let key = TlvKey::from_name(key.trim()).ok_or_else(|| {
            let known: Vec<&str> = TlvKey::ALL.iter().map(|k| k.name()).collect();
            CliError::Usage(format!(
                "--tlv {arg:?}: unknown key; known: {}",
                known.join(", ")
            ))
        })?;
        let bytes = encode(key, value).map_err(|err| CliError::Usage(format!("--tlv {err}")))?;
        let bytes = match encoding {
            TlvEncoding::Raw => bytes,
            TlvEncoding::Base64 => base64_encode(&bytes).into_bytes(),
        };
        if let Some(slot) = raw.get_mut(key.index()) {
            *slot = Some(bytes);
        }
    }
    Ok(raw)
}

/// Standard base64 with padding, as Envoy's `value_string_encoding: BASE64` writes it.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        for (slot, byte) in group.iter_mut().zip(chunk) {
            *slot = *byte;
        }
        let [a, b, c] = group;
        let bits = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
        for i in 0..4 {
            let sextet = ((bits >> (18 - 6 * i)) & 0x3f) as usize;
            match ALPHABET.get(sextet) {
                Some(&symbol) if i <= chunk.len() => out.push(char::from(symbol)),
                _ => out.push('='),
            }
        }
    }
    out
}

fn parse_headers(args: &[String]) -> Result<HeaderList, CliError> {
    let mut headers = HeaderList::new();
    for arg in args {
        let (name, value) = arg
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("--header {arg:?}: expected 'Name: value'")))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(CliError::Usage(format!("--header {arg:?}: empty name")));
        }
        headers.append(name, value.trim().as_bytes());
    }
    Ok(headers)
}

/// Everything `explain` reports: the filter's own verdict on these inputs, and the headers
/// the upstream would see once the verdict's plan is carried out.
struct Explanation<'p> {
    verdict: Verdict<'p>,
    headers: BTreeMap<String, Option<String>>,
    changes: BTreeMap<String, &'static str>,
}

fn explain<'p>(policy: &'p Policy, args: &ExplainArgs) -> Result<Explanation<'p>, CliError> {
    let direct = parse_peer("--peer", &args.peer)?;
    let source = match &args.proxy {
        Some(text) => parse_peer("--proxy", text)?,
        None => direct,
    };
    if args.proxy.is_none() && !args.tlvs.is_empty() {
        return Err(CliError::Usage(
            "--tlv needs --proxy: TLVs travel in a PROXY header".to_string(),
        ));
    }
    let role = match args.role {
        RoleArg::Http => Role::Http,
        RoleArg::Network => Role::Network,
    };
    // What Envoy hands the filter with the rendered configuration: D and P in one
    // filter-state value, the TLVs as the proxy_protocol filter stores them, the headers.
    let mut inputs = Inputs::with_peers(&direct.to_string(), &source.to_string());
    inputs.tlvs = parse_tlvs(&args.tlvs, policy.tlv_encoding)?;
    if role == Role::Http {
        inputs.headers = parse_headers(&args.headers)?;
    }
    let incoming = inputs.headers.clone();
    if role == Role::Http {
        inputs
            .headers
            .append(names::PATH_HEADER, args.path.as_bytes());
    }
    let verdict = evaluate(policy, role, &mut inputs);

    let mut after = incoming.clone();
    after.apply(&verdict.headers);
    let mut names: Vec<String> = incoming
        .entries()
        .iter()
        .chain(after.entries())
        .map(|(name, _)| name.clone())
        .collect();
    names.sort();
    names.dedup();
    let mut final_headers = BTreeMap::new();
    let mut changes = BTreeMap::new();
    if role == Role::Http && verdict.action == Action::Continue {
        for name in names {
            let old = incoming.get(&name);
            let new = after.get(&name);
            let change = match (&old, &new) {
                (None, Some(_)) => "set",
                (Some(_), None) => "removed",
                (Some(a), Some(b)) if a != b => "rewritten",
                _ => "unchanged",
            };
            changes.insert(name.clone(), change);
            final_headers.insert(name, new.map(|v| String::from_utf8_lossy(&v).into_owned()));
        }
    }
    Ok(Explanation {
        verdict,
        headers: final_headers,
        changes,
    })
}

fn plan_lines(verdict: &Verdict) -> Vec<String> {
    verdict
        .headers
        .iter()
        .map(|op| match op {
            HeaderOp::Set(name, value) => format!("set {name}: {}", String::from_utf8_lossy(value)),
            HeaderOp::Remove(name) => format!("remove {name}"),
        })
        .collect()
}

fn action_text(policy: &Policy, verdict: &Verdict) -> String {
    match verdict.action {
        Action::Continue => "continue".to_string(),
        Action::Close => "close the connection".to_string(),
        Action::Respond { status } => format!(
            "answer {status} with {}: {} (reject_status {})",
            names::REJECT_HEADER,
            verdict.reason(),
            policy.reject_status
        ),
    }
}

/// What the CDN's client header gave, as `explain` prints it.
fn header_use_name(used: HeaderUse) -> &'static str {
    match used {
        HeaderUse::Used => "used (R)",
        HeaderUse::Invalid => "sent by a trusted edge but not one address",
        HeaderUse::NotTrusted => "not from a trusted edge (removed)",
    }
}

fn walk_name(end: WalkEnd) -> &'static str {
    match end {
        WalkEnd::NotTrusted => "not_walked",
        WalkEnd::Untrusted => "untrusted_found",
        WalkEnd::AllTrusted => "all_trusted",
        WalkEnd::Malformed => "malformed",
        WalkEnd::Limit => "limit",
        WalkEnd::Counted => "trusted_hops_counted",
        WalkEnd::Short => "fewer_than_trusted_hops",
    }
}

fn rule_text(policy: &Policy, rule: Option<usize>) -> String {
    match rule.and_then(|i| policy.rules.get(i)) {
        Some(rule) => rule.to_string(),
        None => "from any proxy_protocol reject".to_string(),
    }
}

fn to_json(policy: &Policy, e: &Explanation) -> Value {
    let v = &e.verdict;
    let c = &v.connection;
    let rejected = v.action != Action::Continue;
    let tlvs: BTreeMap<&str, &str> = TlvKey::ALL
        .iter()
        .filter_map(|k| c.tlv(*k).map(|value| (k.name(), value)))
        .collect();
    let counters: BTreeMap<String, u32> = v.counter_names().into_iter().collect();
    json!({
        "action": if rejected { "reject" } else { "accept" },
        "reason": v.reason(),
        "role": v.role.name(),
        "mode": match c.mode { Mode::Enforce => "enforce", Mode::Shadow => "shadow" },
        "shadow_rejection": c.shadow_rejection().map(|r| r.name()),
        "detail": c.rejection.as_ref().and_then(|r| r.detail.clone()),
        "rule": c.rule,
        "rule_text": rule_text(policy, c.rule),
        "direct_peer": c.direct_peer.peer().map(|p| p.to_string()),
        "source": c.source.map(|p| p.to_string()),
        "proxy_used": c.proxy_present,
        "proxy_ignored": c.proxy_ignored,
        "connection_client": c.client.map(|ip| ip.to_string()),
        "client_ip": v.client.map(|ip| ip.to_string()),
        "chain": v.request.as_ref().map(|r| r.chain.iter().map(|ip| ip.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "xff_walk": v.request.as_ref().map(|r| walk_name(r.walk_end)),
        "client_header": policy.client_header.as_ref().and(v.request.as_ref()).map(|r| header_use_name(r.client_header)),
        "tlvs": tlvs,
        "status": match v.action { Action::Respond { status } => Some(status), _ => None },
        "verdict": action_text(policy, v),
        "plan": plan_lines(v),
        "log": v.log_line(0),
        "counters": counters,
        "headers": e.headers,
    })
}

fn print_text(policy: &Policy, e: &Explanation) {
    let v = &e.verdict;
    let c = &v.connection;
    let dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
    let rejected = v.action != Action::Continue;
    println!(
        "{} ({})",
        if rejected { "REJECT" } else { "ACCEPT" },
        v.reason()
    );
    if let Some(reason) = c.shadow_rejection() {
        println!(
            "  shadow mode: this would be rejected ({}) in enforce mode; it proceeds with C = D",
            reason.name()
        );
    }
    if let Some(detail) = c.rejection.as_ref().and_then(|r| r.detail.as_deref()) {
        println!("  why:        {detail}");
    }
    println!(
        "  rule:       {}: {}",
        c.rule.map_or("implicit".to_string(), |i| format!("#{i}")),
        rule_text(policy, c.rule)
    );
    println!(
        "  direct D:   {}",
        dash(c.direct_peer.peer().map(|p| p.to_string()))
    );
    let proxy_note = match (c.proxy_present, c.proxy_ignored) {
        (false, _) => " (no PROXY header, or one without client information)",
        (true, true) => " (PROXY header ignored by the rule)",
        (true, false) => " (from the PROXY header)",
    };
    println!(
        "  source P:   {}{proxy_note}",
        dash(c.source.map(|p| p.to_string()))
    );
    let via = match (c.client, c.via) {
        (None, _) => "",
        (Some(_), Via::Proxy) => " (= P)",
        (Some(_), Via::Direct) => " (= D)",
        (Some(_), Via::HealthCheck) => " (= D, the load balancer's health check)",
    };
    println!(
        "  client C:   {}{via}",
        dash(c.client.map(|ip| ip.to_string()))
    );
    for key in TlvKey::ALL {
        if let Some(value) = c.tlv(key) {
            println!("  tlv:        {} = {value}", key.name());
        }
    }
    if v.role == Role::Http {
        println!("  client R:   {}", dash(v.client.map(|ip| ip.to_string())));
        if let Some(request) = &v.request {
            println!("  xff walk:   {}", walk_name(request.walk_end));
            if let Some(header) = &policy.client_header {
                println!(
                    "  {}: {}",
                    header.name,
                    header_use_name(request.client_header)
                );
            }
            println!(
                "  chain:      {}",
                request
                    .chain
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    println!("  verdict:    {}", action_text(policy, v));
    for line in plan_lines(v) {
        println!("    {line}");
    }
    if let Some(line) = v.log_line(0) {
        println!("  log:        {line}");
    }
    let counters: Vec<String> = v
        .counter_names()
        .into_iter()
        .map(|(name, by)| format!("{}{name} +{by}", names::WASM_STATS_PREFIX))
        .collect();
    println!("  counters:   {}", counters.join(", "));
    match (v.role, v.action) {
        (Role::Network, Action::Close) => {
            println!("  network role: the connection is closed before any byte reaches HTTP")
        }
        (Role::Http, Action::Respond { status }) => {
            println!("  http role:  answered {status} locally; nothing reaches the upstream")
        }
        (Role::Http, _) => {
            println!("  upstream sees:");
            for (name, value) in &e.headers {
                let change = e.changes.get(name).copied().unwrap_or("unchanged");
                match value {
                    Some(value) => println!("    {name}: {value}   [{change}]"),
                    None => println!("    {name}   [{change}]"),
                }
            }
        }
        _ => {}
    }
}

pub fn run(args: &ExplainArgs) -> Result<u8, CliError> {
    let file = PolicyFile::load(&args.config)?;
    let explanation = explain(&file.policy, args)?;
    if args.json {
        println!("{}", to_json(&file.policy, &explanation));
    } else {
        print_text(&file.policy, &explanation);
    }
    Ok(if explanation.verdict.action == Action::Continue {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_through_the_filter_decoder() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(
                trustip::core::tlv::decode_base64(text.as_bytes()),
                Some(bytes)
            );
        }
        assert_eq!(
            base64_encode(b"\x12\x34\x56\x78\x90\xab\xcd\xef"),
            "EjRWeJCrze8="
        );
    }
}
