//! What goes on the wire: the PROXY v1/v2 prefaces and the request, one connection per probe
//! (from `--bind` when given), and the bytes that come back.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ppp::v2::{Builder, Command, Protocol, Version};
use socket2::{Domain, Socket, Type};

use super::classify::{Outcome, Planted};
use super::http;
use super::usage;
use crate::error::CliError;

/// TEST-NET addresses (RFC 5737, RFC 3849): they never belong to a real client.
const CLAIM_V1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);
const CLAIM_V2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const CLAIM_V1_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x77);
const CLAIM_V2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x77);
const CLAIM_SOURCE_PORT: u16 = 40077;
pub(super) const SPOOFED_XFF: &str = "192.0.2.77";
pub(super) const SPOOFED_REAL_IP: &str = "192.0.2.78";
/// A reply larger than this is cut (the probe only needs the status and the echoed headers).
const MAX_REPLY: usize = 256 * 1024;
const MARKER_HEADER: &str = "X-Trustip-Probe";

/// PROXY v2 with the LOCAL command and no addresses: what a load balancer sends on its own
/// health checks (signature, version 2 + LOCAL, AF_UNSPEC, length 0).
pub(super) const V2_LOCAL: [u8; 16] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00,
];
/// PROXY v1's line for a connection whose addresses are not told.
pub(super) const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";

/// Which PROXY header, if any, precedes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Plain,
    V1,
    V2,
    /// A health check's PROXY v2 LOCAL header: no client information.
    V2Local,
    /// A health check's PROXY v1 `UNKNOWN` line: no client information.
    V1Unknown,
}

impl Carrier {
    pub(super) fn name(self) -> &'static str {
        match self {
            Carrier::Plain => "plain",
            Carrier::V1 => "proxy-v1",
            Carrier::V2 => "proxy-v2",
            Carrier::V2Local => "proxy-v2-local",
            Carrier::V1Unknown => "proxy-v1-unknown",
        }
    }

    /// "v1", "v2", or `None` without a PROXY header.
    pub(super) fn version(self) -> Option<&'static str> {
        match self {
            Carrier::Plain => None,
            Carrier::V1 | Carrier::V1Unknown => Some("v1"),
            Carrier::V2 | Carrier::V2Local => Some("v2"),
        }
    }

    pub(super) fn claim(self, target: SocketAddr) -> Option<IpAddr> {
        match (self, target) {
            (Carrier::Plain | Carrier::V2Local | Carrier::V1Unknown, _) => None,
            (Carrier::V1, SocketAddr::V4(_)) => Some(CLAIM_V1.into()),
            (Carrier::V2, SocketAddr::V4(_)) => Some(CLAIM_V2.into()),
            (Carrier::V1, SocketAddr::V6(_)) => Some(CLAIM_V1_V6.into()),
            (Carrier::V2, SocketAddr::V6(_)) => Some(CLAIM_V2_V6.into()),
        }
    }

    /// The PROXY header bytes claiming [`Carrier::claim`], destination = the target.
    pub(super) fn preface(self, target: SocketAddr) -> Result<Vec<u8>, CliError> {
        match self {
            Carrier::V2Local => return Ok(V2_LOCAL.to_vec()),
            Carrier::V1Unknown => return Ok(V1_UNKNOWN.to_vec()),
            _ => {}
        }
        let Some(claim) = self.claim(target) else {
            return Ok(Vec::new());
        };
        let source = SocketAddr::new(claim, CLAIM_SOURCE_PORT);
        match self {
            Carrier::Plain | Carrier::V2Local | Carrier::V1Unknown => Ok(Vec::new()),
            Carrier::V1 => Ok(ppp::v1::Addresses::from((source, target))
                .to_string()
                .into_bytes()),
            Carrier::V2 => Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (source, target),
            )
            .build()
            .map_err(|err| CliError::Usage(format!("cannot build a PROXY v2 header: {err}"))),
        }
    }
}

/// What every probe shares: where it goes, from where, and what it asks.
pub(super) struct Settings {
    pub(super) target: SocketAddr,
    pub(super) bind: Option<IpAddr>,
    pub(super) path: String,
    pub(super) host: String,
    pub(super) timeout: Duration,
    pub(super) token: String,
}

/// One probe as sent and as answered, for printing.
pub(super) struct Record {
    pub(super) carrier: Carrier,
    pub(super) forged: bool,
    pub(super) claim: Option<IpAddr>,
    pub(super) outcome: Outcome,
    /// Header names (from a JSON echo) in which each planted value was found.
    pub(super) seen_in: Vec<(Planted, Vec<String>)>,
}

pub(super) fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("trustip-probe-{:x}-{:x}", std::process::id(), nanos)
}

fn request(settings: &Settings, forged: bool) -> Vec<u8> {
    let mut text = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: trustip-probe/{}\r\nAccept: */*\r\n{MARKER_HEADER}: {}\r\n",
        settings.path,
        settings.host,
        env!("CARGO_PKG_VERSION"),
        settings.token
    );
    if forged {
        let _ = write!(
            text,
            "X-Forwarded-For: {SPOOFED_XFF}\r\nX-Real-IP: {SPOOFED_REAL_IP}\r\n"
        );
    }
    text.push_str("Connection: close\r\n\r\n");
    text.into_bytes()
}

enum Ending {
    Eof,
    Reset,
    Timeout,
    Complete,
}

fn is_reset(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

fn read_reply(stream: &mut TcpStream, deadline: Instant) -> (Vec<u8>, Ending) {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16384];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return (raw, Ending::Timeout);
        }
        if stream.set_read_timeout(Some(remaining)).is_err() {
            return (raw, Ending::Timeout);
        }
        match stream.read(&mut buffer) {
            Ok(0) => return (raw, Ending::Eof),
            Ok(n) => {
                raw.extend_from_slice(buffer.get(..n).unwrap_or_default());
                if raw.len() >= MAX_REPLY || http::complete(&raw) {
                    return (raw, Ending::Complete);
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (raw, Ending::Timeout)
            }
            Err(err) if is_reset(&err) => return (raw, Ending::Reset),
            Err(_) => return (raw, Ending::Reset),
        }
    }
}

/// A TCP connection opened and closed without a byte sent (what a TCP health check does):
/// `Err(why)` when it fails.
pub(super) fn connect_only(settings: &Settings) -> Result<Result<(), String>, CliError> {
    Ok(connect(settings)?.map(drop).map_err(|err| err.to_string()))
}

/// A connection to the target, from `--bind` when given. A local address that cannot be bound
/// is a usage error; a failed connect is an outcome.
fn connect(settings: &Settings) -> Result<std::io::Result<TcpStream>, CliError> {
    let Some(local) = settings.bind else {
        return Ok(TcpStream::connect_timeout(
            &settings.target,
            settings.timeout,
        ));
    };
    let bind_error = |err: std::io::Error| usage(format!("--bind {local}: {err}"));
    let socket = Socket::new(
        Domain::for_address(settings.target),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_error)?;
    socket
        .bind(&SocketAddr::new(local, 0).into())
        .map_err(bind_error)?;
    Ok(socket
        .connect_timeout(&settings.target.into(), settings.timeout)
        .map(|()| TcpStream::from(socket)))
}

pub(super) fn send(
    settings: &Settings,
    carrier: Carrier,
    forged: bool,
) -> Result<Record, CliError> {
    let claim = carrier.claim(settings.target);
    let mut planted: Vec<(Planted, String)> = Vec::new();
    if let Some(ip) = claim {
        planted.push((Planted::ProxySource, ip.to_string()));
    }
    if forged {
        planted.push((Planted::XForwardedFor, SPOOFED_XFF.to_string()));
        planted.push((Planted::XRealIp, SPOOFED_REAL_IP.to_string()));
    }
    let mut bytes = carrier.preface(settings.target)?;
    bytes.extend_from_slice(&request(settings, forged));

    let deadline = Instant::now() + settings.timeout;
    let mut stream = match connect(settings)? {
        Ok(stream) => stream,
        Err(err) => {
            return Ok(Record {
                carrier,
                forged,
                claim,
                outcome: Outcome::ConnectFailed(err.to_string()),
                seen_in: Vec::new(),
            })
        }
    };
    let _ = stream.set_write_timeout(Some(settings.timeout));
    let mut reset = false;
    if let Err(err) = stream.write_all(&bytes) {
        // The peer may have answered and closed already: still read what it sent.
        reset = is_reset(&err);
    }
    let (raw, ending) = read_reply(&mut stream, deadline);
    let ended = http::Ended {
        timed_out: matches!(ending, Ending::Timeout),
        reset: reset || matches!(ending, Ending::Reset),
    };
    let (outcome, seen_in) = http::interpret(&raw, &ended, &settings.token, &planted);
    Ok(Record {
        carrier,
        forged,
        claim,
        outcome,
        seen_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers() {
        let target: SocketAddr = "127.0.0.1:10000".parse().unwrap();
        assert_eq!(
            Carrier::V1.preface(target).unwrap(),
            b"PROXY TCP4 203.0.113.77 127.0.0.1 40077 10000\r\n"
        );
        let v2 = Carrier::V2.preface(target).unwrap();
        let parsed = ppp::v2::Header::try_from(v2.as_slice()).unwrap();
        assert_eq!(
            parsed.addresses,
            ppp::v2::Addresses::from((
                "198.51.100.77:40077".parse::<SocketAddr>().unwrap(),
                target
            ))
        );
        assert_eq!(parsed.command, Command::Proxy);
        let v6: SocketAddr = "[::1]:10000".parse().unwrap();
        assert_eq!(
            Carrier::V1.preface(v6).unwrap(),
            b"PROXY TCP6 2001:db8:113::77 ::1 40077 10000\r\n"
        );
        assert!(Carrier::Plain.preface(target).unwrap().is_empty());
        // The health check's headers: no addresses.
        let local = Carrier::V2Local.preface(target).unwrap();
        let parsed = ppp::v2::Header::try_from(local.as_slice()).unwrap();
        assert_eq!(parsed.command, Command::Local);
        assert_eq!(parsed.addresses, ppp::v2::Addresses::Unspecified);
        assert_eq!(parsed.len(), local.len());
        assert_eq!(
            Carrier::V1Unknown.preface(target).unwrap(),
            b"PROXY UNKNOWN\r\n"
        );
        assert!(matches!(
            ppp::v1::Header::try_from("PROXY UNKNOWN\r\n"),
            Ok(ppp::v1::Header {
                addresses: ppp::v1::Addresses::Unknown,
                ..
            })
        ));
        assert_eq!(Carrier::V2Local.claim(target), None);
    }
}
