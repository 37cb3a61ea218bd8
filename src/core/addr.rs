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
/// run of two or more zero groups, the first of equals, as `::`; IPv4-mapped and
/// IPv4-compatible forms as `Display` has them), without the formatting machinery.
fn push_ipv6(out: &mut Vec<u8>, v6: std::net::Ipv6Addr) {
    let groups = v6.segments();
    // `Display` writes these two forms with a dotted quad; rare here, leave them to it.
    let compatible = matches!(groups, [0, 0, 0, 0, 0, 0, g, _] if g != 0);
    if v6.to_ipv4_mapped().is_some() || compatible {
        use std::io::Write as _;
        let _ = write!(out, "{v6}");
        return;
    }
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
    pub fn parse(bytes: &[u8]) -> Option<Peer> {
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ip_writes_what_display_writes() {
        let mut seed: u32 = 0x1234_5678;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(seed));
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "2001:db8::1",
            "::",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, text.as_bytes());
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
