//! The client-IP headers the upstream sees: strip, X-Forwarded-For, RFC 7239 `Forwarded`, the
//! `set` headers and the TLV headers, planned in that order as a list of [`HeaderOp`]s that the
//! glue carries out.

use std::net::IpAddr;

use crate::core::addr::push_ip;
use crate::core::config::{ForwardedMode, Policy, XffMode};
use crate::core::decision::{ConnectionDecision, HeaderUse, X_FORWARDED_FOR};
use crate::core::xff::Walk;

pub const FORWARDED: &str = "forwarded";

/// One change to the request headers. Names are lowercase and borrowed from the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp<'p> {
    /// Remove every value of the header.
    Remove(&'p str),
    /// Replace every value of the header with this one.
    Set(&'p str, Vec<u8>),
}

impl HeaderOp<'_> {
    pub fn name(&self) -> &str {
        match self {
            HeaderOp::Remove(name) | HeaderOp::Set(name, _) => name,
        }
    }
}

/// Reads request headers for the plan: each name is read from the host at most once, and a
/// read sees the changes already planned (a stripped header reads as absent).
pub struct HeaderView<'p, R: FnMut(&str) -> Option<Vec<u8>>> {
    read: R,
    seen: Vec<(&'p str, Option<Vec<u8>>)>,
    pub ops: Vec<HeaderOp<'p>>,
}

impl<'p, R: FnMut(&str) -> Option<Vec<u8>>> HeaderView<'p, R> {
    pub fn new(read: R) -> Self {
        HeaderView {
            read,
            seen: Vec::new(),
            ops: Vec::new(),
        }
    }

    /// The value as the host holds it before any planned change (read once).
    pub fn incoming(&mut self, name: &'p str) -> Option<&[u8]> {
        let index = match self.seen.iter().position(|(n, _)| *n == name) {
            Some(index) => index,
            None => {
                let value = (self.read)(name);
                self.seen.push((name, value));
                self.seen.len() - 1
            }
        };
        self.seen.get(index).and_then(|(_, v)| v.as_deref())
    }

    /// The value after the changes planned so far.
    pub fn current(&mut self, name: &'p str) -> Option<Vec<u8>> {
        match self.ops.iter().rev().find(|op| op.name() == name) {
            Some(HeaderOp::Set(_, value)) => Some(value.clone()),
            Some(HeaderOp::Remove(_)) => None,
            None => self.incoming(name).map(<[u8]>::to_vec),
        }
    }
}

/// An RFC 7239 `for=` element: IPv6 is quoted and bracketed.
pub fn forwarded_element(ip: IpAddr) -> String {
    let mut text = Vec::with_capacity(48);
    text.extend_from_slice(if ip.is_ipv6() { b"for=\"[" } else { b"for=" });
    push_ip(&mut text, ip);
    if ip.is_ipv6() {
        text.extend_from_slice(b"]\"");
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn join_chain(walk: &Walk) -> Vec<u8> {
    let mut out = Vec::with_capacity(walk.chain.len() * 17);
    let mut texts = walk.texts.iter();
    for (i, ip) in walk.chain.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        match texts.next().copied().flatten() {
            // Canonical already (checked by the parser): copy.
            Some(text) => out.extend_from_slice(text),
            None => push_ip(&mut out, *ip),
        }
    }
    out
}

fn appended(incoming: Option<&[u8]>, element: &[u8]) -> Vec<u8> {
    let mut value = Vec::new();
    if let Some(incoming) = incoming.filter(|v| !v.trim_ascii().is_empty()) {
        value.extend_from_slice(incoming);
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(element);
    value
}

/// Plans the header steps into `view.ops`; returns how many incoming headers the strip step
/// removes. `c_trusted`: C is in `xff.trusted`; `client_header`: what the CDN's client header
/// gave.
pub fn plan_headers<'p, R: FnMut(&str) -> Option<Vec<u8>>>(
    policy: &'p Policy,
    connection: &ConnectionDecision,
    c_trusted: bool,
    walk: &Walk,
    client_header: HeaderUse,
    view: &mut HeaderView<'p, R>,
) -> u32 {
    let Some(c) = connection.client else {
        return 0;
    };
    let rules = &policy.headers;

    // 1. Headers only a trusted proxy may send.
    let mut stripped = 0;
    if !c_trusted {
        for name in &rules.strip {
            if view.incoming(name).is_some() {
                view.ops.push(HeaderOp::Remove(name));
                stripped += 1;
            }
        }
    }

    // 2. X-Forwarded-For.
    match rules.x_forwarded_for {
        XffMode::Overwrite => view
            .ops
            .push(HeaderOp::Set(X_FORWARDED_FOR, join_chain(walk))),
        XffMode::Append => {
            let mut element = Vec::with_capacity(40);
            push_ip(&mut element, c);
            // As the strip step left it: a stripped X-Forwarded-For is not appended to.
            let incoming = view.current(X_FORWARDED_FOR);
            let value = appended(incoming.as_deref(), &element);
            view.ops.push(HeaderOp::Set(X_FORWARDED_FOR, value));
        }
        XffMode::Preserve => {}
        XffMode::Remove => view.ops.push(HeaderOp::Remove(X_FORWARDED_FOR)),
    }

    // 3. Forwarded.
    match rules.forwarded {
        ForwardedMode::None => {}
        ForwardedMode::Overwrite => {
            let elements: Vec<String> =
                walk.chain.iter().map(|ip| forwarded_element(*ip)).collect();
            view.ops
                .push(HeaderOp::Set(FORWARDED, elements.join(", ").into_bytes()));
        }
        ForwardedMode::Append => {
            let incoming = view.current(FORWARDED);
            let value = appended(incoming.as_deref(), forwarded_element(c).as_bytes());
            view.ops.push(HeaderOp::Set(FORWARDED, value));
        }
    }

    // 4. The client R.
    let mut client = Vec::with_capacity(40);
    push_ip(&mut client, walk.client);
    for name in &rules.set {
        view.ops.push(HeaderOp::Set(name, client.clone()));
    }
    // The CDN's client header: R when R came from it, otherwise removed (whoever sent it was
    // not trusted for it, or sent something that is not an address).
    if let Some(header) = &policy.client_header {
        view.ops.push(match client_header {
            HeaderUse::Used => HeaderOp::Set(&header.name, client.clone()),
            HeaderUse::NotTrusted | HeaderUse::Invalid => HeaderOp::Remove(&header.name),
        });
    }

    // 5. TLV values, only from PROXY information that was used; never from the client.
    for (key, name) in &rules.tlv {
        match connection.tlv(*key) {
            Some(value) => view
                .ops
                .push(HeaderOp::Set(name, value.as_bytes().to_vec())),
            None => view.ops.push(HeaderOp::Remove(name)),
        }
    }
    stripped
}

/// An ordered, in-memory header list: what the command-line tools and the tests use in place
/// of Envoy's header map. Repeated names keep their order, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderList {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn append(&mut self, name: &str, value: &[u8]) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_vec()));
    }

    pub fn entries(&self) -> &[(String, Vec<u8>)] {
        &self.entries
    }
}

impl HeaderList {
    /// Carries out a plan, as the glue does on Envoy's header map.
    pub fn apply(&mut self, ops: &[HeaderOp]) {
        for op in ops {
            match op {
                HeaderOp::Set(name, value) => self.set(name, value),
                HeaderOp::Remove(name) => self.remove(name),
            }
        }
    }

    /// Repeated lines are joined with `,`, as Envoy does for X-Forwarded-For.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        let mut values = self
            .entries
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v);
        let first = values.next()?;
        let mut joined = first.clone();
        for value in values {
            joined.push(b',');
            joined.extend_from_slice(value);
        }
        Some(joined)
    }

    /// Replaces every value of `name` with `value` (in the first one's place).
    pub fn set(&mut self, name: &str, value: &[u8]) {
        match self.entries.iter().position(|(n, _)| n == name) {
            Some(first) => {
                let mut index = 0;
                self.entries.retain(|(n, _)| {
                    let keep = n != name || index == first;
                    index += 1;
                    keep
                });
                if let Some(entry) = self.entries.get_mut(first) {
                    entry.1 = value.to_vec();
                }
            }
            None => self.entries.push((name.to_string(), value.to_vec())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| n != name);
    }
}
