//! Peer addresses as Envoy reports them (`ip:port`, `[v6]:port`), canonicalised so that an
//! IPv4-mapped IPv6 address (`::ffff:203.0.113.9`) is matched and written as IPv4 everywhere.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`; every other address is returned as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Appends the text form of `ip` (as `Display` writes it) to `out`. IPv4, the common case at
/// 32 X-Forwarded-For entries per request, skips the formatting machinery.
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + (octet / 10) % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => push_ipv6(out, v6),
    }
}

/// RFC 5952 text, as `Ipv6Addr`'s `Display` writes it (lowercase, no leading zeros, the longest
/// run of two or more zero groups, the first of equals, as `::`; the IPv4-mapped form with a
/// dotted quad), without the formatting machinery (which the wasm module then leaves out).
fn push_ipv6(out: &mut Vec<u8>, v6: std::net::Ipv6Addr) {
    if let Some(v4) = v6.to_ipv4_mapped() {
        out.extend_from_slice(b"::ffff:");
        push_ip(out, IpAddr::V4(v4));
        return;
    }
    let groups = v6.segments();
    // The longest run of zero groups (length >= 2), first one on ties.
    let (mut best_start, mut best_len, mut run_start, mut run_len) = (0, 0, 0, 0);
    for (i, group) in groups.iter().enumerate() {
        if *group == 0 {
            if run_len == 0 {
                run_start = i;
            }
            run_len += 1;
            if run_len > best_len {
                best_start = run_start;
                best_len = run_len;
            }
        } else {
            run_len = 0;
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut i = 0;
    while i < 8 {
        if best_len >= 2 && i == best_start {
            out.extend_from_slice(if i == 0 { b"::" } else { b":" });
            i += best_len;
            continue;
        }
        let group = groups.get(i).copied().unwrap_or_default();
        let mut started = false;
        for shift in [12u16, 8, 4, 0] {
            let digit = usize::from((group >> shift) & 0xf);
            if digit != 0 || started || shift == 0 {
                started = true;
                out.push(HEX.get(digit).copied().unwrap_or(b'0'));
            }
        }
        i += 1;
        if i < 8 {
            out.push(b':');
        }
    }
}

/// One end of a TCP connection: a canonical IP and a port (0 when the source gave none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub ip: IpAddr,
    pub port: u16,
}

impl Peer {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Peer {
            ip: canonical(ip),
            port,
        }
    }

    /// Parses the bytes Envoy gives for an address (`source.address`,
    /// `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`): `1.2.3.4:80`, `[2001:db8::1]:443`, or a bare IP.
    /// Anything else (a pipe path, stray bytes) is `None`: the caller treats it as malformed.
    /// So is an unspecified address (`0.0.0.0`, `::`, `::ffff:0.0.0.0`): never a client.
    pub fn parse(bytes: &[u8]) -> Option<Peer> {
        Peer::parse_any(bytes).filter(|peer| !peer.ip.is_unspecified())
    }

    /// [`Peer::parse`], unspecified addresses included.
    pub fn parse_any(bytes: &[u8]) -> Option<Peer> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        if let Ok(socket) = SocketAddr::from_str(text) {
            return Some(Peer::new(socket.ip(), socket.port()));
        }
        IpAddr::from_str(text).ok().map(|ip| Peer::new(ip, 0))
    }
}

impl From<SocketAddr> for Peer {
    fn from(socket: SocketAddr) -> Self {
        Peer::new(socket.ip(), socket.port())
    }
}

impl fmt::Display for Peer {
    /// `ip:port`, IPv6 in brackets, as `SocketAddr` writes it (through [`push_ip`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Vec::with_capacity(48);
        if self.ip.is_ipv6() {
            text.push(b'[');
        }
        push_ip(&mut text, self.ip);
        if self.ip.is_ipv6() {
            text.push(b']');
        }
        text.push(b':');
        f.write_str(&String::from_utf8_lossy(&text))?;
        fmt::Display::fmt(&self.port, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use crate::core::proptests::check;

    fn pushed(ip: IpAddr) -> String {
        let mut out = b"prefix ".to_vec();
        push_ip(&mut out, ip);
        String::from_utf8(out).unwrap_or_default()
    }

    /// A 16-bit group that is not zero, with 1 to 4 hex digits.
    fn nonzero_group() -> impl Strategy<Value = u16> {
        prop_oneof![
            1u16..=0xf,
            0x10u16..=0xff,
            0x100u16..=0xfff,
            0x1000u16..=0xffff
        ]
    }

    /// IPv6 addresses with zero groups where the formatter decides something: one or two runs
    /// of zeros of any length at any position (ties included), single zero groups, none; the
    /// IPv4-mapped and IPv4-compatible forms and their near misses; and arbitrary groups.
    fn ipv6_addresses() -> impl Strategy<Value = Ipv6Addr> {
        let runs = (
            proptest::array::uniform8(nonzero_group()),
            proptest::collection::vec((0usize..8, 0usize..=8), 0..=2),
        )
            .prop_map(|(mut groups, runs)| {
                for (start, len) in runs {
                    for group in groups.iter_mut().skip(start).take(len) {
                        *group = 0;
                    }
                }
                Ipv6Addr::from(groups)
            });
        let sparse = proptest::array::uniform8(prop_oneof![1 => Just(0u16), 1 => nonzero_group()])
            .prop_map(Ipv6Addr::from);
        let mapped = any::<u32>().prop_map(|v4| Ipv4Addr::from(v4).to_ipv6_mapped());
        let compatible = prop_oneof![
            any::<u32>().prop_map(|v4| Ipv4Addr::from(v4).to_ipv6_compatible()),
            (0u32..=0x2_0000).prop_map(|v4| Ipv4Addr::from(v4).to_ipv6_compatible()),
        ];
        let near = (
            prop::sample::select(vec![
                [0, 0, 0, 0, 0, 0xfffe],
                [0, 0, 0, 0, 1, 0xffff],
                [1, 0, 0, 0, 0, 0xffff],
                [0, 0, 0, 0, 0xffff, 0],
                [0, 0, 0, 0, 0, 1],
                [0x64, 0xff9b, 0, 0, 0, 0],
            ]),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(head, g6, g7)| {
                let [a, b, c, d, e, f] = head;
                Ipv6Addr::from([a, b, c, d, e, f, g6, g7])
            });
        prop_oneof![
            6 => runs,
            3 => sparse,
            1 => mapped,
            1 => compatible,
            1 => near,
            1 => any::<[u16; 8]>().prop_map(Ipv6Addr::from),
        ]
    }

    /// What an address exercises in the RFC 5952 formatter.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Shape {
        /// The longest run of zero groups has this length (0 to 8).
        LongestRun(usize),
        /// Two runs of the same, longest length (the first one is compressed).
        Tie,
        /// The compressed run starts at the first group or ends at the last.
        RunAtStart,
        RunAtEnd,
        /// One zero group on its own, which is not compressed.
        LoneZero,
        Mapped,
        Compatible,
    }

    fn shapes(ip: Ipv6Addr) -> Vec<Shape> {
        let groups = ip.segments();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < 8 {
            let len = groups.iter().skip(i).take_while(|g| **g == 0).count();
            if len > 0 {
                runs.push((i, len));
                i += len;
            } else {
                i += 1;
            }
        }
        let longest = runs.iter().map(|r| r.1).max().unwrap_or(0);
        let mut out = vec![Shape::LongestRun(longest)];
        if longest >= 2 {
            if runs.iter().filter(|r| r.1 == longest).count() > 1 {
                out.push(Shape::Tie);
            }
            if let Some((start, len)) = runs.iter().find(|r| r.1 == longest) {
                if *start == 0 {
                    out.push(Shape::RunAtStart);
                }
                if start + len == 8 {
                    out.push(Shape::RunAtEnd);
                }
            }
        }
        if runs.iter().any(|r| r.1 == 1) {
            out.push(Shape::LoneZero);
        }
        if ip.to_ipv4_mapped().is_some() {
            out.push(Shape::Mapped);
        } else if matches!(groups, [0, 0, 0, 0, 0, 0, _, _]) {
            out.push(Shape::Compatible);
        }
        out
    }

    #[test]
    fn push_ip_writes_what_display_writes_ipv6() {
        let cases = 6000;
        let seen = check(cases, ipv6_addresses(), |v6| {
            let ip = IpAddr::V6(v6);
            prop_assert_eq!(pushed(ip), format!("prefix {ip}"), "{:?}", v6.segments());
            Ok(shapes(v6))
        });
        // The generator yields the shapes it claims, each many times.
        let mut counts = std::collections::BTreeMap::new();
        for shape in seen.into_iter().flatten() {
            *counts.entry(shape).or_insert(0u32) += 1;
        }
        let mut wanted: Vec<Shape> = (0..=8).map(Shape::LongestRun).collect();
        wanted.extend([
            Shape::Tie,
            Shape::RunAtStart,
            Shape::RunAtEnd,
            Shape::LoneZero,
            Shape::Mapped,
            Shape::Compatible,
        ]);
        for shape in wanted {
            let n = counts.get(&shape).copied().unwrap_or(0);
            assert!(
                n >= 20,
                "{shape:?} generated {n} times in {cases}: {counts:?}"
            );
        }
        for text in [
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "2001:db8:0:1:1:1:1:1",
            "2001:0:0:1::1",
            "2001:db8::1:0:0:1",
            "::ffff:192.0.2.1",
            "::c000:201",
            "fe80::abcd:ef01:2345:6789",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip.to_string(), text, "Display itself");
            assert_eq!(pushed(ip), format!("prefix {text}"));
        }
    }

    #[test]
    fn push_ip_writes_what_display_writes_ipv4() {
        let cases = 4000;
        let octets =
            proptest::array::uniform4(prop_oneof![Just(0u8), 1u8..=9, 10u8..=99, 100u8..=255,]);
        let widths = check(
            cases,
            prop_oneof![
                any::<u32>().prop_map(Ipv4Addr::from),
                octets.prop_map(Ipv4Addr::from)
            ],
            |v4| {
                let ip = IpAddr::V4(v4);
                prop_assert_eq!(pushed(ip), format!("prefix {ip}"));
                Ok(v4.octets().map(|o| o.to_string().len()))
            },
        );
        // Octets of one, two and three digits in every position.
        for position in 0..4 {
            for width in 1..=3 {
                let n = widths
                    .iter()
                    .filter(|w| w.get(position) == Some(&width))
                    .count();
                assert!(n >= 200, "octet {position} had {width} digits {n} times");
            }
        }
        for text in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.20.199.0"] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(pushed(ip), format!("prefix {text}"));
        }
    }

    #[test]
    fn parses_envoy_address_forms() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"127.0.0.5:4444", Some("127.0.0.5:4444")),
            (b"[::1]:80", Some("[::1]:80")),
            (b"[::ffff:203.0.113.9]:1234", Some("203.0.113.9:1234")),
            (b"203.0.113.9", Some("203.0.113.9:0")),
            (b"::ffff:10.1.2.3", Some("10.1.2.3:0")),
            (b"/var/run/envoy.sock", None),
            (b"", None),
            (b"\xff\xfe", None),
            (b"1.2.3.4:99999", None),
        ];
        for (input, want) in cases {
            let got = Peer::parse(input).map(|p| p.to_string());
            assert_eq!(
                got.as_deref(),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
