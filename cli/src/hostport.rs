//! `HOST:PORT` as the command line reads it, for every command that takes one (`probe`'s
//! target, `render --upstream`, `--listen`, `--admin`).
//!
//! HOST is an IPv4 address, an IPv6 address in brackets (`[::1]:80`, as in URLs) or a host
//! name. The unbracketed IPv6 form (`::1:80`) is refused: it is ambiguous (the address `::1:80`,
//! or `::1` with port 80?), and the message names the bracketed spelling.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::error::CliError;

/// Examples printed with a flag that takes a name or an address.
const HOST_EXAMPLES: &str = "HOST:PORT (127.0.0.1:10000, [::1]:10000, gateway.example.com:80)";
/// Examples printed with a flag that takes an address only.
const IP_EXAMPLES: &str = "IP:PORT (0.0.0.0:10000, [::]:10000)";

/// A parsed `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPort {
    /// An IP literal (IPv6 in brackets) and its port.
    Addr(SocketAddr),
    /// A host name, to be resolved by whoever uses it, and a port.
    Name(String, u16),
}

impl HostPort {
    /// The host as text, without brackets (`127.0.0.1`, `::1`, `gateway.example.com`).
    pub fn host(&self) -> String {
        match self {
            HostPort::Addr(addr) => addr.ip().to_string(),
            HostPort::Name(name, _) => name.clone(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            HostPort::Addr(addr) => addr.port(),
            HostPort::Name(_, port) => *port,
        }
    }

    /// (host without brackets, port).
    pub fn into_parts(self) -> (String, u16) {
        (self.host(), self.port())
    }
}

/// What is wrong with a `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `::1:80`: the suggested bracketed spelling, when one can be guessed.
    UnbracketedIpv6(Option<String>),
    MissingPort,
    BadPort,
    PortZero,
    MissingHost,
    /// `[...]` that does not hold an IPv6 address.
    BadBracketed,
    /// Not an IP address, and not made of host-name characters.
    BadHost,
    /// A name where only an IP address will do (`--listen`, `--admin`).
    NotAnIp,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnbracketedIpv6(Some(suggestion)) => write!(
                f,
                "an IPv6 address with a port must be in brackets (did you mean {suggestion}?)"
            ),
            Problem::UnbracketedIpv6(None) => {
                f.write_str("an IPv6 address with a port must be in brackets ([IPV6]:PORT)")
            }
            Problem::MissingPort => f.write_str("no port"),
            Problem::BadPort => f.write_str("the port is not a number from 1 to 65535"),
            Problem::PortZero => f.write_str("port 0"),
            Problem::MissingHost => f.write_str("no host"),
            Problem::BadBracketed => f.write_str("not an IPv6 address in brackets"),
            Problem::BadHost => f.write_str("not an IP address or a host name"),
            Problem::NotAnIp => f.write_str("not an IP address"),
        }
    }
}

/// A refused `HOST:PORT`: `"::1:80": <problem>: expected HOST:PORT (examples)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {problem}: expected {expected}")]
pub struct HostPortError {
    pub text: String,
    pub problem: Problem,
    expected: &'static str,
}

/// Parses `HOST:PORT` where HOST is an IP address or a host name; port 0 is refused.
pub fn parse(text: &str) -> Result<HostPort, HostPortError> {
    let refuse = |problem| HostPortError {
        text: text.to_string(),
        problem,
        expected: HOST_EXAMPLES,
    };
    let parsed = split(text).map_err(refuse)?;
    if parsed.port() == 0 {
        return Err(refuse(Problem::PortZero));
    }
    Ok(parsed)
}

/// Parses `IP:PORT` (IPv6 in brackets; port 0, "any free port", is allowed: something that
/// binds may ask for it).
pub fn parse_ip(text: &str) -> Result<SocketAddr, HostPortError> {
    let refuse = |problem| HostPortError {
        text: text.to_string(),
        problem,
        expected: IP_EXAMPLES,
    };
    match split(text).map_err(refuse)? {
        HostPort::Addr(addr) => Ok(addr),
        HostPort::Name(..) => Err(refuse(Problem::NotAnIp)),
    }
}

/// `flag HOST:PORT` for a command-line flag: a usage error names the flag.
pub fn parse_host_port(flag: &str, text: &str) -> Result<HostPort, CliError> {
    parse(text).map_err(|err| CliError::Usage(format!("{flag} {err}")))
}

/// `flag IP:PORT` for a command-line flag: a usage error names the flag.
pub fn parse_socket_addr(flag: &str, text: &str) -> Result<SocketAddr, CliError> {
    parse_ip(text).map_err(|err| CliError::Usage(format!("{flag} {err}")))
}

/// The grammar, any port (0 included).
fn split(text: &str) -> Result<HostPort, Problem> {
    // IPv4 and bracketed IPv6 (with a numeric scope id) as the standard library reads them.
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(HostPort::Addr(addr));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(Problem::BadBracketed)?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(Problem::BadBracketed);
        }
        let port = after.strip_prefix(':').ok_or(Problem::MissingPort)?;
        // A valid address whose port did not parse (or a scope id the library refused).
        return Err(if port.parse::<u16>().is_ok() {
            Problem::BadBracketed
        } else {
            Problem::BadPort
        });
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(Problem::MissingPort);
    };
    if host.contains(':') {
        return Err(Problem::UnbracketedIpv6(suggestion(text, host, port)));
    }
    if host.is_empty() {
        return Err(Problem::MissingHost);
    }
    let port: u16 = port.parse().map_err(|_| Problem::BadPort)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPort::Addr(SocketAddr::new(ip, port)));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(Problem::BadHost);
    }
    Ok(HostPort::Name(host.to_string(), port))
}

/// For `::1:80` → `[::1]:80`; for a whole address without a port (`2001:db8::1`) →
/// `[2001:db8::1]:PORT`.
fn suggestion(text: &str, host: &str, port: &str) -> Option<String> {
    if host.parse::<Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok() {
        Some(format!("[{host}]:{port}"))
    } else if text.parse::<Ipv6Addr>().is_ok() {
        Some(format!("[{text}]:PORT"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Problem {
        parse(text).unwrap_err().problem
    }

    #[test]
    fn ipv4_and_bracketed_ipv6() {
        assert_eq!(
            parse("127.0.0.1:80").unwrap(),
            HostPort::Addr("127.0.0.1:80".parse().unwrap())
        );
        let v6 = parse("[::1]:10000").unwrap();
        assert_eq!(v6, HostPort::Addr("[::1]:10000".parse().unwrap()));
        assert_eq!(v6.into_parts(), ("::1".to_string(), 10000));
        assert_eq!(
            parse("[2001:db8::7]:443").unwrap().into_parts(),
            ("2001:db8::7".to_string(), 443)
        );
        assert_eq!(
            parse_ip("[::]:10000").unwrap(),
            "[::]:10000".parse().unwrap()
        );
        assert_eq!(
            parse_ip("0.0.0.0:10000").unwrap(),
            "0.0.0.0:10000".parse().unwrap()
        );
    }

    #[test]
    fn host_names() {
        assert_eq!(
            parse("gw.example:443").unwrap(),
            HostPort::Name("gw.example".into(), 443)
        );
        assert_eq!(
            parse("httpbin:8080").unwrap().into_parts(),
            ("httpbin".to_string(), 8080)
        );
        assert_eq!(
            parse("my_service-1.ns.svc.cluster.local.:80").unwrap(),
            HostPort::Name("my_service-1.ns.svc.cluster.local.".into(), 80)
        );
        // Names are for HOST:PORT flags only.
        let err = parse_ip("nowhere:80").unwrap_err();
        assert_eq!(err.problem, Problem::NotAnIp);
        assert!(err.to_string().contains("expected IP:PORT"), "{err}");
    }

    #[test]
    fn unbracketed_ipv6_is_refused_with_the_bracketed_spelling() {
        assert_eq!(
            problem("::1:80"),
            Problem::UnbracketedIpv6(Some("[::1]:80".into()))
        );
        let message = parse("::1:80").unwrap_err().to_string();
        assert_eq!(
            message,
            "\"::1:80\": an IPv6 address with a port must be in brackets (did you mean [::1]:80?): \
             expected HOST:PORT (127.0.0.1:10000, [::1]:10000, gateway.example.com:80)"
        );
        assert_eq!(
            problem("2001:db8::7:8080"),
            Problem::UnbracketedIpv6(Some("[2001:db8::7]:8080".into()))
        );
        // No port at all: the last group is part of the address.
        assert_eq!(
            problem("2001:db8:0:0:0:0:0:1"),
            Problem::UnbracketedIpv6(Some("[2001:db8:0:0:0:0:0:1]:PORT".into()))
        );
        assert_eq!(problem("a:b:c"), Problem::UnbracketedIpv6(None));
        assert_eq!(
            parse_ip("::1:80").unwrap_err().problem,
            Problem::UnbracketedIpv6(Some("[::1]:80".into()))
        );
        let flagged = parse_host_port("--upstream", "::1:80")
            .unwrap_err()
            .to_string();
        assert!(
            flagged.starts_with("trustip: --upstream \"::1:80\": ")
                && flagged.contains("[::1]:80?"),
            "{flagged}"
        );
    }

    #[test]
    fn missing_or_bad_ports() {
        assert_eq!(problem("127.0.0.1"), Problem::MissingPort);
        assert_eq!(problem("host"), Problem::MissingPort);
        assert_eq!(problem(""), Problem::MissingPort);
        assert_eq!(problem("[::1]"), Problem::MissingPort);
        assert_eq!(problem("[::1]80"), Problem::MissingPort);
        assert_eq!(problem("host:x"), Problem::BadPort);
        assert_eq!(problem("host:"), Problem::BadPort);
        assert_eq!(problem("127.0.0.1:65536"), Problem::BadPort);
        assert_eq!(problem("[::1]:-1"), Problem::BadPort);
        assert_eq!(problem("host:0"), Problem::PortZero);
        assert_eq!(problem("127.0.0.1:0"), Problem::PortZero);
        // Binding flags may ask for any free port.
        assert_eq!(parse_ip("127.0.0.1:0").unwrap().port(), 0);
    }

    #[test]
    fn bad_hosts() {
        assert_eq!(problem(":80"), Problem::MissingHost);
        assert_eq!(problem("[zz]:80"), Problem::BadBracketed);
        assert_eq!(problem("[gw.example]:80"), Problem::BadBracketed);
        assert_eq!(problem("[::1:80"), Problem::BadBracketed);
        assert_eq!(problem("a b:80"), Problem::BadHost);
        assert_eq!(problem("\"x\":80"), Problem::BadHost);
        assert_eq!(problem("a]:80"), Problem::BadHost);
    }
}
