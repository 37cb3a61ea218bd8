//! Simple reference implementations the fuzz checks compare the core with: written from the
//! documentation (docs/trust-model.md, docs/configuration.md) with std's parsers and plain
//! loops, sharing no code with the core. Where one is not defined for an input (a `Forwarded`
//! line with an unbalanced quote), it says so and the checks fall back to invariants.

use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

/// `::ffff:a.b.c.d` as `a.b.c.d`: how trustip matches and writes every address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// The longest element the core considers (`xff::MAX_ELEMENT`, an implementation limit): the
/// reference is defined for elements up to this length after trimming.
pub const MAX_ELEMENT: usize = 64;

/// One X-Forwarded-For element as docs/trust-model.md lists the accepted forms: `1.2.3.4`,
/// `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`, surrounding whitespace
/// allowed; no zone id, never an unspecified address. Parsed with std alone.
pub fn element(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?;
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.contains('%') {
        return None;
    }
    let ip = if let Ok(ip) = IpAddr::from_str(text) {
        ip
    } else if let Ok(socket) = SocketAddrV4::from_str(text) {
        IpAddr::V4(*socket.ip())
    } else if let Some(inside) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        IpAddr::V6(Ipv6Addr::from_str(inside).ok()?)
    } else {
        IpAddr::V6(*SocketAddrV6::from_str(text).ok()?.ip())
    };
    let ip = canonical(ip);
    (!ip.is_unspecified()).then_some(ip)
}

/// Elements of the header lines, nearest first: the last line first, each line split on commas
/// and read right to left; a line of blanks has none.
pub fn elements_rev(lines: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in lines.iter().rev() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parts: Vec<&[u8]> = line.split(|b| *b == b',').collect();
        out.extend(parts.into_iter().rev().map(<[u8]>::to_vec));
    }
    out
}

/// A CIDR block as the policy lists it: (network, prefix), an IPv4-mapped block (prefix >= 96)
/// as the IPv4 block it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub net: IpAddr,
    pub prefix: u32,
}

impl Block {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address. `None` for anything else (the core
    /// refuses such a policy; host bits are not checked here).
    pub fn parse(text: &str) -> Option<Block> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net = IpAddr::from_str(addr).ok()?;
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse().ok()?
            }
            Some(_) => return None,
        };
        if prefix > width {
            return None;
        }
        if let IpAddr::V6(v6) = net {
            if let (true, Some(v4)) = (prefix >= 96, v6.to_ipv4_mapped()) {
                return Some(Block {
                    net: IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Some(Block { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                self.prefix == 0 || (u32::from(net) ^ u32::from(ip)) >> (32 - self.prefix) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                self.prefix == 0 || (u128::from(net) ^ u128::from(ip)) >> (128 - self.prefix) == 0
            }
            _ => false,
        }
    }
}

/// Some block of `blocks` contains `ip`.
pub fn any_contains(blocks: &[Block], ip: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}

/// Why the reference walk stopped (the core's `WalkEnd`, minus the cases it does not model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Untrusted,
    AllTrusted,
    Malformed,
    Limit,
    Counted,
    Short,
}

/// The X-Forwarded-For walk of docs/trust-model.md: from C, read the elements right to left,
/// pass over trusted addresses; the first untrusted one is R. A malformed element, or reaching
/// `max_entries`, stops the walk: R is the last valid address examined (C if none). The chain
/// is R ... C, left to right, an address never next to itself.
pub fn walk(
    c: IpAddr,
    elements: &[Vec<u8>],
    trusted: &[Block],
    max_entries: usize,
) -> (IpAddr, Vec<IpAddr>, End) {
    let mut chain = vec![c];
    let mut end = End::AllTrusted;
    for (i, raw) in elements.iter().enumerate() {
        if i >= max_entries {
            end = End::Limit;
            break;
        }
        let Some(ip) = element(raw) else {
            end = End::Malformed;
            break;
        };
        if chain.last() != Some(&ip) {
            chain.push(ip);
        }
        if !any_contains(trusted, ip) {
            end = End::Untrusted;
            break;
        }
    }
    chain.reverse();
    (chain.first().copied().unwrap_or(c), chain, end)
}

/// `xff.trusted_hops: n`: C is hop 1, R is the n-th element from the right whatever the
/// addresses; fewer elements or a malformed one among the first n: R = C.
pub fn count_hops(c: IpAddr, elements: &[Vec<u8>], n: usize) -> (IpAddr, Vec<IpAddr>, End) {
    let mut chain = vec![c];
    for raw in elements.iter().take(n) {
        let Some(ip) = element(raw) else {
            return (c, vec![c], End::Malformed);
        };
        if chain.last() != Some(&ip) {
            chain.push(ip);
        }
    }
    if elements.len() < n {
        return (c, vec![c], End::Short);
    }
    chain.reverse();
    (chain.first().copied().unwrap_or(c), chain, End::Counted)
}

/// An RFC 9110 token byte.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// The `for=` value of one `Forwarded` element without quotes (pairs split on `;`, each
/// `token=token`, blanks around the pair allowed): `Ok(Some(value))` with exactly one `for`,
/// `Ok(None)` for a well-formed element without one, `Err(())` when not well formed.
fn unquoted_element(element: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut found = None;
    for pair in element.split(|b| *b == b';') {
        let pair = trim_ows(pair);
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (
                pair.get(..at).unwrap_or_default(),
                pair.get(at + 1..).unwrap_or_default(),
            ),
            None => return Err(()),
        };
        let token = |t: &[u8]| !t.is_empty() && t.iter().all(|b| is_token(*b));
        if !token(name) || !token(value) {
            return Err(());
        }
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return Err(());
            }
            found = Some(value.to_vec());
        }
    }
    Ok(found)
}

/// One `Forwarded` line without any `"`, read as the walk reads it, nearest element first:
/// each element's `for=` value, or an empty value for an element with none or not well formed,
/// up to and including the first empty one (the walk stops there). `None` when the line holds
/// a quote (see [`forwarded_line_quoted`]).
pub fn forwarded_line_unquoted(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    if line.contains(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    for element in line.split(|b| *b == b',').rev() {
        let value = unquoted_element(element).ok().flatten().unwrap_or_default();
        let stop = value.is_empty();
        out.push(value);
        if stop {
            break;
        }
    }
    Some(out)
}

/// One `Forwarded` line read left to right as RFC 7239 writes it (tokens, quoted strings
/// without escapes), when the whole line is well formed: the `for=` values, nearest first, an
/// empty value for an element without one. `None` when the line is not well formed anywhere
/// (then left-to-right and right-to-left readings may differ by design, and only the
/// invariants apply).
pub fn forwarded_line_quoted(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut elements = Vec::new();
    let mut pos = 0usize;
    let at = |pos: usize| line.get(pos).copied();
    let skip_ows = |mut pos: usize| {
        while matches!(line.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        pos
    };
    loop {
        // One element: pairs separated by `;`.
        let mut found: Option<Vec<u8>> = None;
        loop {
            pos = skip_ows(pos);
            let start = pos;
            while at(pos).is_some_and(is_token) {
                pos += 1;
            }
            let name = line.get(start..pos)?.to_vec();
            if name.is_empty() || at(pos) != Some(b'=') {
                return None;
            }
            pos += 1;
            let value = if at(pos) == Some(b'"') {
                let open = pos + 1;
                let close = open + line.get(open..)?.iter().position(|b| *b == b'"')?;
                let value = line.get(open..close)?.to_vec();
                if value.contains(&b'\\') {
                    return None;
                }
                pos = close + 1;
                value
            } else {
                let start = pos;
                while at(pos).is_some_and(is_token) {
                    pos += 1;
                }
                line.get(start..pos)?.to_vec()
            };
            if value.is_empty() {
                return None;
            }
            if name.eq_ignore_ascii_case(b"for") {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
            pos = skip_ows(pos);
            match at(pos) {
                Some(b';') => pos += 1,
                _ => break,
            }
        }
        elements.push(found.unwrap_or_default());
        match at(pos) {
            None => break,
            Some(b',') => pos += 1,
            Some(_) => return None,
        }
    }
    elements.reverse();
    Some(elements)
}

/// The `for=` values the walk reads from one `Forwarded` line (the whole header value),
/// nearest first, up to and including the first empty one: none for a line of blanks, else
/// [`forwarded_line_unquoted`], else [`forwarded_line_quoted`]. `None` where neither is
/// defined (a quote in a line that is not well formed).
pub fn forwarded_walked(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Some(Vec::new());
    }
    if let Some(values) = forwarded_line_unquoted(line) {
        return Some(values);
    }
    let mut out = Vec::new();
    for value in forwarded_line_quoted(line)? {
        let stop = value.is_empty();
        out.push(value);
        if stop {
            break;
        }
    }
    Some(out)
}

/// Every byte string a `Forwarded` reader could take for a `for=` value of `line`, whether or
/// not the line is well formed: each run of token bytes right after a `=`, and each stretch
/// between two consecutive quotes. A superset of what any reading yields (a quoted value holds
/// no quote, an unquoted one is a whole token after `=`), for checks that only need to know
/// where an address may have come from.
pub fn forwarded_candidates(line: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (at, byte) in line.iter().enumerate() {
        if *byte == b'=' {
            let rest = line.get(at + 1..).unwrap_or_default();
            let len = rest.iter().take_while(|b| is_token(**b)).count();
            out.push(rest.get(..len).unwrap_or_default().to_vec());
        }
    }
    let quotes: Vec<usize> = line
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'"')
        .map(|(at, _)| at)
        .collect();
    for pair in quotes.windows(2) {
        if let [open, close] = pair {
            out.push(line.get(open + 1..*close).unwrap_or_default().to_vec());
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 section 4), decoded by collecting sextets: `None`
/// for a length that is not a multiple of four, a byte outside the alphabet, or padding other
/// than one or two `=` at the very end. Bits left over after the last byte are ignored, as
/// most decoders do.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let padding = text.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 {
        return None;
    }
    let body = text.get(..text.len() - padding)?;
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in body {
        let sextet = ALPHABET.iter().position(|a| a == byte)?;
        acc = (acc << 6) | u32::try_from(sextet).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// Standard base64 with padding, as Envoy's `value_string_encoding: BASE64` writes it.
pub fn base64_encode(bytes: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        for (slot, byte) in group.iter_mut().zip(chunk) {
            *slot = *byte;
        }
        let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(ALPHABET.get(sextet).copied().unwrap_or(b'='));
            } else {
                out.push(b'=');
            }
        }
    }
    out
}
