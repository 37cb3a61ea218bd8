//! X-Forwarded-For and RFC 7239 `Forwarded`: lazy, borrowing parsers of their elements (right
//! to left) and the walk over trusted proxies (or a count of trusted hops) that finds the
//! client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::core::addr::canonical;
use crate::core::cidr::CidrTable;

/// Longest element considered; anything longer is malformed.
const MAX_ELEMENT: usize = 64;

/// Parses one X-Forwarded-For element: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, with surrounding whitespace. Zone ids, `unknown`,
/// obfuscated identifiers, unspecified addresses (`0.0.0.0`, `::`, `::ffff:0.0.0.0`: never a
/// client) and anything else are `None` (malformed).
pub fn parse_element(raw: &[u8]) -> Option<IpAddr> {
    parse_element_text(raw).map(|(ip, _)| ip)
}

/// Like [`parse_element`], also returning the element's own bytes when they already are the
/// canonical text of the address (a plain dotted quad), so writers can copy instead of format.
pub fn parse_element_text(raw: &[u8]) -> Option<(IpAddr, Option<&[u8]>)> {
    let raw = raw.trim_ascii();
    if raw.is_empty() || raw.len() > MAX_ELEMENT {
        return None;
    }
    let (ip, text) = match parse_plain_ipv4(raw) {
        Some(v4) => (IpAddr::V4(v4), Some(raw)),
        None => (parse_general(raw)?, None),
    };
    (!ip.is_unspecified()).then_some((ip, text))
}

fn parse_general(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip = Ipv6Addr::from_str(inside).ok()?;
        if !after.is_empty() {
            let port = after.strip_prefix(':')?;
            parse_port(port)?;
        }
        return Some(canonical(IpAddr::V6(ip)));
    }
    if let Ok(ip) = IpAddr::from_str(text) {
        return Some(canonical(ip));
    }
    // `1.2.3.4:80` (an unbracketed IPv6 with a port is ambiguous and not accepted).
    let socket = SocketAddr::from_str(text).ok()?;
    socket.is_ipv4().then(|| canonical(socket.ip()))
}

/// The common case, dotted-quad IPv4 without a port, parsed in one pass without UTF-8
/// validation or the general parser. Same acceptance as `Ipv4Addr::from_str` (no leading zeros,
/// octets <= 255); anything else returns `None` and goes to the general path.
fn parse_plain_ipv4(raw: &[u8]) -> Option<Ipv4Addr> {
    if raw.len() < 7 || raw.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut index = 0;
    let mut value: u16 = 0;
    let mut digits = 0;
    for &byte in raw {
        match byte {
            b'0'..=b'9' => {
                // A leading zero is only allowed as the whole octet.
                if digits == 1 && value == 0 {
                    return None;
                }
                value = value * 10 + u16::from(byte - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' => {
                if digits == 0 {
                    return None;
                }
                *octets.get_mut(index)? = u8::try_from(value).ok()?;
                index += 1;
                value = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if digits == 0 || index != 3 {
        return None;
    }
    *octets.get_mut(3)? = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Elements of all header lines, last line first, each line right to left. Blank lines and a
/// header made only of blanks contribute nothing.
pub fn elements_rev<L: AsRef<[u8]>>(lines: &[L]) -> impl Iterator<Item = &[u8]> {
    lines
        .iter()
        .map(AsRef::as_ref)
        .rev()
        .filter(|line| !line.trim_ascii().is_empty())
        .flat_map(ElementsRev::new)
}

/// The comma-separated elements of one line, right to left, by a backwards scan.
struct ElementsRev<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> ElementsRev<'a> {
    fn new(line: &'a [u8]) -> Self {
        ElementsRev { rest: Some(line) }
    }
}

impl<'a> Iterator for ElementsRev<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr::memrchr(b',', rest) {
            Some(comma) => {
                self.rest = rest.get(..comma);
                rest.get(comma + 1..)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// The `for=` values of RFC 7239 `Forwarded` lines, last line first, each right to left: the
/// value unquoted (`"[2001:db8::1]:443"` gives `[2001:db8::1]:443`), or an empty slice for an
/// element that is not well formed (no `for=`, two of them, a quoted string with an escape or
/// unclosed, stray bytes), which the walk treats as malformed like `unknown` and obfuscated
/// identifiers.
///
/// Parsed from the right, lazily: the elements a trusted proxy appended (the nearest ones) are
/// read the same whatever the client wrote before them, even an unclosed quote meant to swallow
/// them, and no more elements are parsed than the walk examines.
pub fn forwarded_for_rev<L: AsRef<[u8]>>(lines: &[L]) -> impl Iterator<Item = &[u8]> {
    lines
        .iter()
        .map(AsRef::as_ref)
        .rev()
        .filter(|line| !line.trim_ascii().is_empty())
        .flat_map(|line| ForwardedRev { rest: Some(line) })
}

/// The elements of one `Forwarded` line, right to left.
struct ForwardedRev<'a> {
    /// What is left of the line, up to the element to parse next; `None` once done (after the
    /// first element or after one that is not well formed: what lies left of it cannot be
    /// split reliably).
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for ForwardedRev<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let mut line = self.rest.take()?;
        let mut found: Option<&'a [u8]> = None;
        loop {
            // One `name=value` pair, from its end.
            line = trim_end(line);
            let (value, before) = match line.split_last() {
                Some((b'"', inner)) => {
                    let Some(open) = inner.iter().rposition(|b| *b == b'"') else {
                        return Some(&[]);
                    };
                    let value = inner.get(open + 1..).unwrap_or_default();
                    if value.contains(&b'\\') {
                        return Some(&[]);
                    }
                    (value, inner.get(..open).unwrap_or_default())
                }
                _ => {
                    let start = line
                        .iter()
                        .rposition(|b| !is_token(*b))
                        .map_or(0, |i| i + 1);
                    (
                        line.get(start..).unwrap_or_default(),
                        line.get(..start).unwrap_or_default(),
                    )
                }
            };
            let Some(before) = before.strip_suffix(b"=") else {
                return Some(&[]);
            };
            let start = before
                .iter()
                .rposition(|b| !is_token(*b))
                .map_or(0, |i| i + 1);
            let name = before.get(start..).unwrap_or_default();
            if value.is_empty() || name.is_empty() {
                return Some(&[]);
            }
            if name.eq_ignore_ascii_case(b"for") {
                if found.is_some() {
                    return Some(&[]);
                }
                found = Some(value);
            }
            line = trim_end(before.get(..start).unwrap_or_default());
            match line.split_last() {
                None => return Some(found.unwrap_or_default()),
                Some((b';', rest)) => line = rest,
                Some((b',', rest)) => {
                    self.rest = Some(rest);
                    return Some(found.unwrap_or_default());
                }
                Some(_) => return Some(&[]),
            }
        }
    }
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    bytes.get(..end).unwrap_or_default()
}

/// An RFC 9110 token character (what an unquoted name or value may hold).
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Why the walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    /// The connection client is not a trusted proxy: its XFF was not read.
    NotTrusted,
    /// Found an untrusted address: the client.
    Untrusted,
    /// Every address was trusted (or there were none): the leftmost is the client.
    AllTrusted,
    /// A malformed element stopped the walk.
    Malformed,
    /// `max_entries` elements were examined.
    Limit,
    /// `xff.trusted_hops`: the N-th element from the right is the client.
    Counted,
    /// `xff.trusted_hops`: fewer than N elements, so the client is C (as Envoy falls back to
    /// the remote address).
    Short,
}

/// The outcome of the walk: the client R and the verified chain, from R to C, left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk<'a> {
    pub client: IpAddr,
    pub chain: Vec<IpAddr>,
    /// Per chain entry, the element's own text when it is already canonical (see
    /// [`parse_element_text`]).
    pub texts: Vec<Option<&'a [u8]>>,
    pub end: WalkEnd,
}

impl Walk<'_> {
    /// No walk: the chain is C alone.
    pub fn none(c: IpAddr, end: WalkEnd) -> Walk<'static> {
        Walk {
            client: c,
            chain: vec![c],
            texts: vec![None],
            end,
        }
    }
}

/// Walks the X-Forwarded-For lines right to left starting from the connection client `c`
/// (which the caller found trusted), passing over trusted addresses. (The decision calls
/// [`walk_elements`] with the header source the policy names; this is the tests' shorthand.)
#[cfg(test)]
pub fn walk<'a, L: AsRef<[u8]>>(
    c: IpAddr,
    lines: &'a [L],
    trusted: &CidrTable,
    max_entries: usize,
) -> Walk<'a> {
    walk_elements(c, &mut elements_rev(lines), trusted, max_entries)
}

/// With `hops` > 0 trusted hops (C being the first): the `hops`-th element from the right is
/// the client and the elements right of it are the hops, whatever their addresses, as Envoy's
/// `use_remote_address` with `xff_num_trusted_hops`. Fewer elements (`Short`), or a malformed
/// one among them (`Malformed`): the client is C.
pub fn count_hops<'a>(
    c: IpAddr,
    elements: &mut dyn Iterator<Item = &'a [u8]>,
    hops: usize,
) -> Walk<'a> {
    let mut chain = Vec::with_capacity(hops + 1);
    let mut texts = Vec::with_capacity(hops + 1);
    chain.push(c);
    texts.push(None);
    let mut seen = 0;
    for raw in elements.take(hops) {
        let Some((ip, text)) = parse_element_text(raw) else {
            return Walk::none(c, WalkEnd::Malformed);
        };
        seen += 1;
        if chain.last() != Some(&ip) {
            chain.push(ip);
            texts.push(text);
        }
    }
    if seen < hops {
        return Walk::none(c, WalkEnd::Short);
    }
    chain.reverse();
    texts.reverse();
    Walk {
        client: chain.first().copied().unwrap_or(c),
        chain,
        texts,
        end: WalkEnd::Counted,
    }
}

/// [`walk`] over any elements, nearest first.
pub fn walk_elements<'a>(
    c: IpAddr,
    elements: &mut dyn Iterator<Item = &'a [u8]>,
    trusted: &CidrTable,
    max_entries: usize,
) -> Walk<'a> {
    // Built nearest first (C, then the elements right to left), reversed at the end. A hop
    // equal to its neighbour (R = C, or an address a proxy appended twice) is written once.
    let capacity = max_entries.min(32) + 1;
    let mut chain = Vec::with_capacity(capacity);
    let mut texts = Vec::with_capacity(capacity);
    chain.push(c);
    texts.push(None);
    let mut end = WalkEnd::AllTrusted;
    for (count, raw) in elements.enumerate() {
        if count >= max_entries {
            end = WalkEnd::Limit;
            break;
        }
        let Some((ip, text)) = parse_element_text(raw) else {
            end = WalkEnd::Malformed;
            break;
        };
        if chain.last() != Some(&ip) {
            chain.push(ip);
            texts.push(text);
        }
        if !trusted.contains(ip) {
            end = WalkEnd::Untrusted;
            break;
        }
    }
    chain.reverse();
    texts.reverse();
    let client = chain.first().copied().unwrap_or(c);
    Walk {
        client,
        chain,
        texts,
        end,
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::core::proptests::check;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Candidate dotted quads: well-formed ones (octets 0..=255 in decimal) and near misses
    /// (a leading zero, an octet above 255 or of four digits, an empty, missing or extra
    /// octet, a stray character, a port, blanks), so both answers of the parser are exercised.
    fn dotted_quads() -> impl Strategy<Value = Vec<u8>> {
        let octet = prop_oneof![
            6 => (0u16..=255).prop_map(|o| o.to_string()),
            1 => (0u16..=99).prop_map(|o| format!("0{o}")),
            1 => (256u16..=999).prop_map(|o| o.to_string()),
            1 => (1000u16..=9999).prop_map(|o| o.to_string()),
            1 => Just(String::new()),
        ];
        let quad = proptest::collection::vec(octet, 3..=5).prop_map(|o| o.join("."));
        let mutated = (
            quad.clone(),
            any::<prop::sample::Index>(),
            prop::sample::select(&b"0123456789.:x /"[..]),
        )
            .prop_map(|(q, at, byte)| {
                let mut raw = q.into_bytes();
                if !raw.is_empty() {
                    let i = at.index(raw.len());
                    if let Some(b) = raw.get_mut(i) {
                        *b = byte;
                    }
                }
                raw
            });
        prop_oneof![
            6 => (0u16..=255, 0u16..=255, 0u16..=255, 0u16..=255)
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}").into_bytes()),
            4 => quad.prop_map(String::into_bytes),
            2 => mutated,
            1 => (0u16..=255, 0u16..=255, 0u16..=255, 0u16..=255, any::<u16>())
                .prop_map(|(a, b, c, d, port)| format!("{a}.{b}.{c}.{d}:{port}").into_bytes()),
            1 => (0u16..=255, 0u16..=255, 0u16..=255, 0u16..=255)
                .prop_map(|(a, b, c, d)| format!(" {a}.{b}.{c}.{d}").into_bytes()),
        ]
    }

    #[test]
    fn fast_ipv4_path_agrees_with_std() {
        // Same acceptance as `Ipv4Addr::from_str`, both ways: what it takes, the fast path takes
        // with the same value; what it refuses, the fast path refuses (and leaves to the
        // general parser).
        let (mut valid, mut invalid) = (0u32, 0u32);
        let cases = 4000;
        check(cases, dotted_quads(), |raw| {
            let std = std::str::from_utf8(&raw)
                .ok()
                .and_then(|t| t.parse::<Ipv4Addr>().ok());
            prop_assert_eq!(
                parse_plain_ipv4(&raw),
                std,
                "{:?}",
                String::from_utf8_lossy(&raw)
            );
            // Through the element parser: the fast path's text is the element itself (and
            // 0.0.0.0 is never a client).
            if let Some(ip) = std {
                let want = (!ip.is_unspecified()).then_some((IpAddr::V4(ip), Some(&raw[..])));
                prop_assert_eq!(parse_element_text(&raw), want);
            }
            Ok(std.is_some())
        })
        .into_iter()
        .for_each(|hit| if hit { valid += 1 } else { invalid += 1 });
        // The generator yields what it claims: plenty of both kinds.
        assert!(
            valid >= cases / 3,
            "only {valid} of {cases} candidates were addresses"
        );
        assert!(
            invalid >= cases / 5,
            "only {invalid} of {cases} candidates were not addresses"
        );
        for octets in [[0, 0, 0, 0], [1, 22, 199, 255], [10, 0, 100, 9]] {
            let ip = Ipv4Addr::from(octets);
            assert_eq!(parse_plain_ipv4(ip.to_string().as_bytes()), Some(ip));
        }
    }

    #[test]
    fn parses_elements() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"1.2.3.4", Some("1.2.3.4")),
            (b"  1.2.3.4\t", Some("1.2.3.4")),
            (b"1.2.3.4:80", Some("1.2.3.4")),
            (b"2001:db8::1", Some("2001:db8::1")),
            (b"[2001:db8::1]", Some("2001:db8::1")),
            (b"[2001:db8::1]:443", Some("2001:db8::1")),
            (b"::ffff:203.0.113.9", Some("203.0.113.9")),
            (b"[::ffff:203.0.113.9]:1", Some("203.0.113.9")),
            (b"fe80::1%eth0", None),
            (b"[fe80::1%eth0]:80", None),
            (b"unknown", None),
            (b"_hidden", None),
            (b"", None),
            (b"1.2.3.4:", None),
            (b"1.2.3.4:99999", None),
            (b"[2001:db8::1]443", None),
            (b"[2001:db8::1", None),
            (b"1.2.3", None),
            (b"\xff1.2.3.4", None),
            (b"1.2.3.4 5.6.7.8", None),
            (b"01.2.3.4", None),
            (b"1.2.3.256", None),
            (b"1.2.3.4.5", None),
            (b"1..3.4", None),
            (b"255.255.255.255", Some("255.255.255.255")),
            // Unspecified addresses are never a client, in any spelling.
            (b"0.0.0.0", None),
            (b"0.0.0.0:80", None),
            (b"::", None),
            (b"[::]:443", None),
            (b"::ffff:0.0.0.0", None),
            (b"[::ffff:0.0.0.0]", None),
            (b"0.0.0.1", Some("0.0.0.1")),
            (b"1.2.3.04", None),
            (b"1.2.3.0", Some("1.2.3.0")),
            (b"100.200.250.255", Some("100.200.250.255")),
            (b"1.2.3.", None),
            (b".1.2.3", None),
        ];
        for (raw, want) in cases {
            assert_eq!(
                parse_element(raw),
                want.map(ip),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    fn table(blocks: &[&str]) -> CidrTable {
        CidrTable::new(blocks.iter().map(|b| (b.parse().unwrap(), 0)))
    }

    #[test]
    fn walks_right_to_left() {
        let trusted = table(&["10.0.0.0/8", "2001:db8::/32"]);
        let c = ip("10.0.0.1");
        // (lines, max, client, chain, end)
        let cases: &[(&[&str], usize, &str, &[&str], WalkEnd)] = &[
            (&[], 32, "10.0.0.1", &["10.0.0.1"], WalkEnd::AllTrusted),
            (
                &["1.1.1.1"],
                32,
                "1.1.1.1",
                &["1.1.1.1", "10.0.0.1"],
                WalkEnd::Untrusted,
            ),
            (
                &["6.6.6.6, 1.1.1.1, 10.0.0.2, 10.0.0.3"],
                32,
                "1.1.1.1",
                &["1.1.1.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"],
                WalkEnd::Untrusted,
            ),
            (
                &["10.9.9.9, 10.0.0.2"],
                32,
                "10.9.9.9",
                &["10.9.9.9", "10.0.0.2", "10.0.0.1"],
                WalkEnd::AllTrusted,
            ),
            (
                &["1.1.1.1, garbage, 10.0.0.2"],
                32,
                "10.0.0.2",
                &["10.0.0.2", "10.0.0.1"],
                WalkEnd::Malformed,
            ),
            (
                &["1.1.1.1, unknown"],
                32,
                "10.0.0.1",
                &["10.0.0.1"],
                WalkEnd::Malformed,
            ),
            (
                &["1.1.1.1, 10.0.0.4, 10.0.0.3, 10.0.0.2"],
                2,
                "10.0.0.3",
                &["10.0.0.3", "10.0.0.2", "10.0.0.1"],
                WalkEnd::Limit,
            ),
            (
                &["1.1.1.1:8080, [2001:db8::5]:443"],
                32,
                "1.1.1.1",
                &["1.1.1.1", "2001:db8::5", "10.0.0.1"],
                WalkEnd::Untrusted,
            ),
            (
                &["7.7.7.7, 1.1.1.1", "10.0.0.2"],
                32,
                "1.1.1.1",
                &["1.1.1.1", "10.0.0.2", "10.0.0.1"],
                WalkEnd::Untrusted,
            ),
            (&["  "], 32, "10.0.0.1", &["10.0.0.1"], WalkEnd::AllTrusted),
            (
                &["10.0.0.1"],
                32,
                "10.0.0.1",
                &["10.0.0.1"],
                WalkEnd::AllTrusted,
            ),
        ];
        for (lines, max, client, chain, end) in cases {
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            let got = walk(c, &lines, &trusted, *max);
            assert_eq!(got.client, ip(client), "{lines:?}");
            assert_eq!(
                got.chain,
                chain.iter().map(|s| ip(s)).collect::<Vec<_>>(),
                "{lines:?}"
            );
            assert_eq!(got.end, *end, "{lines:?}");
        }
    }
}
