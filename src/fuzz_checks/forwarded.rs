//! Target `forwarded`: RFC 7239 `Forwarded` as the walk reads it ([`forwarded_for_rev`]).
//!
//! Input: a control line, then the client's `Forwarded` lines. Control bytes: 0 the form of
//! the element a trusted proxy appends (IPv6 quoted with a port, IPv4 quoted with a port and
//! `proto`, IPv4 after `by=`), 1 the address's last part, 2 and 3 the port, 4 whether the
//! proxy's element is on a line of its own.
//!
//! Checked: it never panics; every value it yields lies inside the input, right after `for=`
//! or `for="`, and holds no quote or backslash; a line without quotes, and a line RFC 7239
//! reads as well formed, give the values of [`reference`]; whatever the client wrote before it,
//! the element the proxy appended is read as written, by the parser and by the decision.

use std::net::IpAddr;
use std::sync::OnceLock;

use super::reference;
use super::{byte, ensure, fields, shown};
use crate::core::config::Policy;
use crate::core::decision::Role;
use crate::core::inputs::Inputs;
use crate::core::verdict::evaluate;
use crate::core::xff::forwarded_for_rev;

/// The trusted proxy 10.0.0.5 walks `Forwarded` (no rules: it is its own client).
const POLICY: &str = r#"{"xff":{"trusted":["10.0.0.0/8"],"source":"forwarded"}}"#;
const PROXY: &str = "10.0.0.5:4000";

fn policy() -> Result<&'static Policy, String> {
    static POLICY_CELL: OnceLock<Result<Policy, String>> = OnceLock::new();
    POLICY_CELL
        .get_or_init(|| Policy::from_json(POLICY.as_bytes()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Where `value` starts inside `line`, when it is a subslice of it.
fn offset_in(line: &[u8], value: &[u8]) -> Option<usize> {
    let range = line.as_ptr_range();
    let start = value.as_ptr();
    let inside = range.start <= start && value.as_ptr_range().end <= range.end;
    inside.then(|| start as usize - range.start as usize)
}

/// Every value lies inside one of `lines`, right after `for=` or `for="`.
fn values_come_from_the_input(lines: &[&[u8]]) -> Result<usize, String> {
    let mut count = 0;
    for value in forwarded_for_rev(lines) {
        count += 1;
        if value.is_empty() {
            continue;
        }
        ensure(!value.contains(&b'"') && !value.contains(&b'\\'), || {
            format!("value {} holds a quote or backslash", shown(value))
        })?;
        let place = lines
            .iter()
            .find_map(|line| offset_in(line, value).map(|at| (*line, at)));
        let Some((line, at)) = place else {
            return Err(format!("value {} is not in the input", shown(value)));
        };
        let before = line.get(..at).unwrap_or_default();
        let before = before.strip_suffix(b"\"").unwrap_or(before);
        let named = before.len() >= 4
            && before
                .get(before.len() - 4..)
                .is_some_and(|name| name.eq_ignore_ascii_case(b"for="));
        ensure(named, || {
            format!(
                "value {} does not follow for= in {}",
                shown(value),
                shown(line)
            )
        })?;
    }
    Ok(count)
}

/// The values the walk reads from one line: up to and including the first empty one.
fn walked(line: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for value in forwarded_for_rev(&[line]) {
        out.push(value.to_vec());
        if value.is_empty() {
            break;
        }
    }
    out
}

fn until_empty(values: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for value in values {
        let stop = value.is_empty();
        out.push(value);
        if stop {
            break;
        }
    }
    out
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let mut parts = fields(data);
    let control = if parts.is_empty() {
        &[][..]
    } else {
        parts.remove(0)
    };
    let lines = parts;

    // The parser over the client's lines, and over them joined as Envoy joins repeated lines.
    values_come_from_the_input(&lines)?;
    let joined = lines.join(&b","[..]);
    values_come_from_the_input(&[joined.as_slice()])?;

    // Line by line against the references, where they are defined.
    for line in lines.iter().filter(|l| !l.trim_ascii().is_empty()) {
        let ours = walked(line);
        let theirs = reference::forwarded_line_unquoted(line)
            .or_else(|| reference::forwarded_line_quoted(line).map(until_empty));
        if let Some(theirs) = theirs {
            ensure(ours == theirs, || {
                format!(
                    "line {}: core {:?}, reference {:?}",
                    shown(line),
                    ours.iter().map(|v| shown(v)).collect::<Vec<_>>(),
                    theirs.iter().map(|v| shown(v)).collect::<Vec<_>>()
                )
            })?;
        }
    }

    // A trusted proxy appends its element after whatever the client wrote.
    let last = byte(control, 1);
    let port = u16::from_be_bytes([byte(control, 2), byte(control, 3)]);
    let (ip, value, element) = match byte(control, 0) % 3 {
        0 => {
            let ip = format!("2001:db8:1::{last:x}");
            let value = format!("[{ip}]:{port}");
            (ip, value.clone(), format!("for=\"{value}\""))
        }
        1 => {
            let ip = format!("203.0.113.{last}");
            let value = format!("{ip}:{port}");
            (ip, value.clone(), format!("for=\"{value}\";proto=https"))
        }
        _ => {
            let ip = format!("198.51.100.{last}");
            (ip.clone(), ip.clone(), format!("by=_edge;For={ip}"))
        }
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("bad address {ip}"))?;
    let own_line = byte(control, 4) % 2 == 1;
    let mut sent: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
    match (own_line, sent.last_mut()) {
        (false, Some(line)) => {
            line.extend_from_slice(b", ");
            line.extend_from_slice(element.as_bytes());
        }
        _ => sent.push(element.clone().into_bytes()),
    }
    let first = forwarded_for_rev(&sent).next().map(<[u8]>::to_vec);
    ensure(first.as_deref() == Some(value.as_bytes()), || {
        format!(
            "the proxy's {element} after {} read as {:?}",
            shown(&lines.join(&b"\\n"[..])),
            first.as_deref().map(shown)
        )
    })?;

    let mut host = Inputs::with_peers(PROXY, PROXY);
    for line in &sent {
        host.headers.append("forwarded", line);
    }
    let verdict = evaluate(policy()?, Role::Http, &mut host);
    ensure(verdict.client == Some(ip), || {
        format!(
            "the proxy's {element} after {}: R = {:?}",
            shown(&lines.join(&b"\\n"[..])),
            verdict.client
        )
    })?;
    Ok(())
}
