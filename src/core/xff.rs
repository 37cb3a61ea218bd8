//! X-Forwarded-For: a lazy, borrowing parser of its elements (right to left) and the walk over
//! trusted proxies that finds the client.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::core::addr::canonical;
use crate::core::cidr::CidrTable;

/// Longest element considered; anything longer is malformed.
const MAX_ELEMENT: usize = 64;

/// Parses one X-Forwarded-For element: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`, with surrounding whitespace. Zone ids, `unknown`,
/// obfuscated identifiers and anything else are `None` (malformed).
pub fn parse_element(raw: &[u8]) -> Option<IpAddr> {
    let raw = raw.trim_ascii();
    if raw.is_empty() || raw.len() > MAX_ELEMENT {
        return None;
    }
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

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Elements of all header lines, last line first, each line right to left. Blank lines and a
/// header made only of blanks contribute nothing.
pub fn elements_rev<'a>(lines: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    lines
        .iter()
        .rev()
        .filter(|line| !line.trim_ascii().is_empty())
        .flat_map(|line| line.rsplit(|b| *b == b','))
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
}

/// The outcome of the walk: the client R and the verified chain, from R to C, left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub client: IpAddr,
    pub chain: Vec<IpAddr>,
    pub end: WalkEnd,
}

/// Walks the X-Forwarded-For lines right to left starting from the connection client `c`
/// (which the caller found trusted), passing over trusted addresses.
pub fn walk(c: IpAddr, lines: &[&[u8]], trusted: &CidrTable, max_entries: usize) -> Walk {
    // Examined valid addresses, nearest first.
    let mut examined: Vec<IpAddr> = Vec::new();
    let mut end = WalkEnd::AllTrusted;
    for (count, raw) in elements_rev(lines).enumerate() {
        if count >= max_entries {
            end = WalkEnd::Limit;
            break;
        }
        let Some(ip) = parse_element(raw) else {
            end = WalkEnd::Malformed;
            break;
        };
        examined.push(ip);
        if !trusted.contains(ip) {
            end = WalkEnd::Untrusted;
            break;
        }
    }
    let mut chain: Vec<IpAddr> = examined.into_iter().rev().collect();
    chain.push(c);
    // A hop equal to its neighbour (R = C, or an address a proxy appended twice) is written once.
    chain.dedup();
    let client = chain.first().copied().unwrap_or(c);
    Walk { client, chain, end }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
