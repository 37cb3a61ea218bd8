//! The client-IP headers the upstream sees: strip, X-Forwarded-For, RFC 7239 `Forwarded`, the
//! `set` headers and the TLV headers, applied in that order through [`HeaderAccess`].

use std::net::IpAddr;

use crate::core::addr::push_ip;
use crate::core::config::{ForwardedMode, Policy, XffMode};
use crate::core::decision::{ConnectionDecision, X_FORWARDED_FOR};
use crate::core::xff::Walk;

pub const FORWARDED: &str = "forwarded";

/// The request headers as the host holds them. Names are lowercase.
pub trait HeaderAccess {
    /// The value (all of it, as bytes), or `None` when absent.
    fn get(&mut self, name: &str) -> Option<Vec<u8>>;
    /// Replaces every value of `name` with `value`.
    fn set(&mut self, name: &str, value: &[u8]);
    fn remove(&mut self, name: &str);
}

/// An RFC 7239 `for=` element: IPv6 is quoted and bracketed.
pub fn forwarded_element(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    }
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

/// Applies the header steps; returns how many incoming headers the strip step removed.
/// `c_trusted`: C is in `xff.trusted`; `incoming_xff`: the X-Forwarded-For value if it was read.
pub fn apply_headers(
    policy: &Policy,
    connection: &ConnectionDecision,
    c_trusted: bool,
    walk: &Walk,
    incoming_xff: Option<&[u8]>,
    headers: &mut impl HeaderAccess,
) -> u32 {
    let Some(c) = connection.client else {
        return 0;
    };
    let rules = &policy.headers;

    // 1. Headers only a trusted proxy may send.
    let mut stripped = 0;
    if !c_trusted {
        for name in &rules.strip {
            if headers.get(name).is_some() {
                headers.remove(name);
                stripped += 1;
            }
        }
    }

    // 2. X-Forwarded-For.
    match rules.x_forwarded_for {
        XffMode::Overwrite => headers.set(X_FORWARDED_FOR, &join_chain(walk)),
        XffMode::Append => {
            let mut element = Vec::with_capacity(40);
            push_ip(&mut element, c);
            headers.set(X_FORWARDED_FOR, &appended(incoming_xff, &element));
        }
        XffMode::Preserve => {}
        XffMode::Remove => headers.remove(X_FORWARDED_FOR),
    }

    // 3. Forwarded.
    match rules.forwarded {
        ForwardedMode::None => {}
        ForwardedMode::Overwrite => {
            let elements: Vec<String> =
                walk.chain.iter().map(|ip| forwarded_element(*ip)).collect();
            headers.set(FORWARDED, elements.join(", ").as_bytes());
        }
        ForwardedMode::Append => {
            let incoming = headers.get(FORWARDED);
            headers.set(
                FORWARDED,
                &appended(incoming.as_deref(), forwarded_element(c).as_bytes()),
            );
        }
    }

    // 4. The client R.
    let mut client = Vec::with_capacity(40);
    push_ip(&mut client, walk.client);
    for name in &rules.set {
        headers.set(name, &client);
    }

    // 5. TLV values, only from PROXY information that was used; never from the client.
    for (key, name) in &rules.tlv {
        match connection.tlv(*key) {
            Some(value) => headers.set(name, value.as_bytes()),
            None => headers.remove(name),
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

impl HeaderAccess for HeaderList {
    /// Repeated lines are joined with `,`, as Envoy does for X-Forwarded-For.
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
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

    fn set(&mut self, name: &str, value: &[u8]) {
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

    fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| n != name);
    }
}
