//! Target `config`: the policy parser, [`Policy::from_json`], on any bytes (the input is the
//! configuration text, as Envoy hands it to `on_configure` or `config_new`).
//!
//! Checked: it never panics; a refusal displays as exactly one line without control
//! characters, line separators or bidi controls (a configuration cannot forge log lines);
//! the JSON reader accepts exactly what serde_json accepts (the same tree; a repeated key is
//! the one difference, refused by trustip), and refuses the rest with serde_json's message; an
//! accepted policy keeps the limits docs/configuration.md states.

use crate::core::config::{Policy, ProxyProtocol, MAX_SET, MAX_STRIP};
use crate::core::json;
use crate::core::json::serde_tree::{from_serde, sorted};

use super::{ensure, shown};

/// Characters a log line must not carry as they are.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

const FRAMING: &[&str] = &[
    "transfer-encoding",
    "content-length",
    "host",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

/// A header name trustip may write or strip: a lowercase token, not a pseudo-header, not
/// framing or hop-by-hop.
fn writable(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            !b.is_ascii_uppercase()
                && (b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        })
        && !FRAMING.contains(&name)
}

/// The limits of docs/configuration.md, on an accepted policy.
fn keeps_the_limits(policy: &Policy) -> Result<(), String> {
    let headers = &policy.headers;
    let checks: [(bool, &str); 12] = [
        (
            (400..=599).contains(&policy.reject_status),
            "reject_status out of 400..=599",
        ),
        (
            (1..=1024).contains(&policy.xff_max_entries),
            "max_entries out of 1..=1024",
        ),
        (
            policy.xff_hops <= policy.xff_max_entries,
            "trusted_hops above max_entries",
        ),
        (
            policy.xff_hops == 0 || policy.xff_trusted_count > 0,
            "trusted_hops without xff.trusted",
        ),
        (headers.set.len() <= MAX_SET, "too many set headers"),
        (headers.strip.len() <= MAX_STRIP, "too many strip headers"),
        (
            headers
                .set
                .iter()
                .chain(&headers.strip)
                .chain(headers.tlv.iter().map(|(_, n)| n))
                .all(|n| writable(n)),
            "a header name that is not a lowercase token, or a framing header",
        ),
        (
            headers
                .set
                .iter()
                .chain(headers.tlv.iter().map(|(_, n)| n))
                .chain(policy.client_header.iter().map(|h| &h.name))
                .all(|n| n != "x-forwarded-for" && n != "forwarded"),
            "x-forwarded-for or forwarded written by set, tlv or client_header",
        ),
        (
            policy.rules.iter().all(|r| !r.from.is_empty()),
            "a rule without from",
        ),
        (
            policy.rules.iter().all(|r| {
                r.health_check_paths.is_empty() || r.proxy_protocol == ProxyProtocol::Require
            }),
            "health_check_paths on a rule other than require",
        ),
        (
            policy.rules.iter().all(|r| {
                r.tlvs.is_empty()
                    || matches!(
                        r.proxy_protocol,
                        ProxyProtocol::Require | ProxyProtocol::Use
                    )
            }),
            "tlvs on a rule other than require or use",
        ),
        (
            policy
                .rules
                .iter()
                .all(|r| r.tlvs.iter().all(|(_, values)| !values.is_empty())),
            "an empty TLV allowlist",
        ),
    ];
    for (ok, what) in checks {
        ensure(ok, || what.to_string())?;
    }
    Ok(())
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let policy = Policy::from_json(data);
    if let Err(err) = &policy {
        let line = err.to_string();
        ensure(!line.chars().any(unprintable), || {
            format!("refusal of {} is not one clean line: {line:?}", shown(data))
        })?;
        ensure(!err.path.is_empty() && !err.message.is_empty(), || {
            format!("refusal without a path or a message: {err:?}")
        })?;
    }
    if data.trim_ascii().is_empty() {
        // Empty means every default.
        return ensure(policy.is_ok(), || format!("blank refused: {policy:?}"));
    }

    let ours = json::parse(data);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    match (&ours, &theirs) {
        (Ok(ours), Ok(theirs)) => {
            let (ours, theirs) = (sorted(ours.clone()), sorted(from_serde(theirs)));
            ensure(ours == theirs, || {
                format!("{}: tree {ours:?}, serde_json {theirs:?}", shown(data))
            })?;
        }
        (Err(ours), Ok(_)) => ensure(ours.message == "duplicate key" && ours.path != ".", || {
            format!("{}: refused ({ours}), serde_json accepts it", shown(data))
        })?,
        (Ok(_), Err(theirs)) => {
            return Err(format!(
                "{}: accepted, serde_json refuses it ({theirs})",
                shown(data)
            ))
        }
        (Err(ours), Err(theirs)) => {
            let same = match std::str::from_utf8(data) {
                Ok(_) => ours.message == theirs.to_string(),
                Err(_) => ours.message.starts_with("invalid UTF-8 at line "),
            };
            ensure(same && ours.path == "." && ours.value.is_none(), || {
                format!("{}: refused as {ours}, serde_json {theirs}", shown(data))
            })?;
            // Not JSON: the policy is refused with that same error.
            ensure(policy.as_ref().err() == Some(ours), || {
                format!("{}: policy {policy:?}, JSON error {ours}", shown(data))
            })?;
        }
    }
    if let Ok(policy) = &policy {
        ensure(theirs.is_ok(), || {
            format!("{}: a policy from what is not JSON", shown(data))
        })?;
        keeps_the_limits(policy).map_err(|why| format!("{}: accepted, but {why}", shown(data)))?;
    }
    Ok(())
}
