//! `trustip probe`: diagnoses a live listener from outside. It sends a few HTTP/1.1 requests
//! (plain, behind a PROXY v1 header, behind a PROXY v2 header, and one carrying a forged
//! X-Forwarded-For), each on its own connection to the one address given, and classifies what
//! came back. The classification is a pure function of the observed outcomes
//! ([`classify`]), so it is unit-tested without a network.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ppp::v2::{Builder, Command, Protocol, Version};
use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};

use crate::error::CliError;

const AFTER_HELP: &str = "\
What it sends (at most 4 connections, all to HOST:PORT, one request each, `Connection: close`):
  plain        GET PATH without a PROXY header
  proxy-v1     the same behind a PROXY v1 header claiming 203.0.113.77 (IPv6: 2001:db8:113::77)
  proxy-v2     the same behind a PROXY v2 header claiming 198.51.100.77 (IPv6: 2001:db8:100::77)
  spoofed-xff  X-Forwarded-For: 192.0.2.77 and X-Real-IP: 192.0.2.78, sent plain when the
               listener serves plain requests, else behind the PROXY header it served
Every request carries `X-Trustip-Probe: <random token>`: when the response body contains the
token, the path echoes request headers (httpbin's /headers does) and the probe can tell whether
the claimed or spoofed addresses reached the upstream.

Listener verdict:
  requires_proxy  a plain request is reset or closed without a reply; PROXY is understood
  no_proxy        a PROXY header is answered with 400 Bad Request (the listener does not parse it)
  optional_proxy  plain requests are served and PROXY headers are understood
  unreachable     no TCP connection (or the name does not resolve), or no HTTP answer at all
proxy_spoofable: true when a claimed PROXY address reached the upstream, false when the PROXY
requests were refused (400, 403 from trustip, connection closed) or served without the claimed
address, null when unknown (the path does not echo headers). xff_spoofable: the same for the
forged X-Forwarded-For / X-Real-IP values (null also when no request could carry them).

Exit status:
  0  nothing found spoofable (including unknown: see the verdict)
  3  a claimed PROXY address or a forged X-Forwarded-For / X-Real-IP reached the upstream
  4  unreachable
  2  usage error

Examples:
  trustip probe 127.0.0.1:10000
  trustip probe gateway.example.com:80 --path /headers --host www.example.com --json
  trustip probe 127.0.0.1:10000 --bind 127.0.0.66     # from another loopback address";

/// Diagnose a live listener from outside: does it expect PROXY headers, and can a client claim
/// another address through PROXY or a forged X-Forwarded-For? Sends only to HOST:PORT.
#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ProbeArgs {
    /// The listener to probe (a name or an IP literal; IPv6 as [::1]:10000). Only the first
    /// address it resolves to is contacted.
    #[arg(value_name = "HOST:PORT")]
    pub target: String,
    /// The request path; one that echoes request headers (httpbin's /headers) lets the probe
    /// see what reaches the upstream.
    #[arg(long, value_name = "PATH", default_value = "/headers")]
    pub path: String,
    /// The Host header to send [default: HOST of HOST:PORT].
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Seconds allowed per connection (connect, send, read the reply).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    /// Connect from this local address (one of this host's addresses, e.g. to probe from a
    /// given network, or as 127.0.0.66 on loopback) [default: the system's choice].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
    /// Print one JSON object (listener, proxy_spoofable, xff_spoofable, probes, advice).
    #[arg(long)]
    pub json: bool,
}

// --- what is sent -----------------------------------------------------------------------

/// TEST-NET addresses (RFC 5737, RFC 3849): they never belong to a real client.
const CLAIM_V1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);
const CLAIM_V2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const CLAIM_V1_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x77);
const CLAIM_V2_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x77);
const CLAIM_SOURCE_PORT: u16 = 40077;
const SPOOFED_XFF: &str = "192.0.2.77";
const SPOOFED_REAL_IP: &str = "192.0.2.78";
/// A reply larger than this is cut (the probe only needs the status and the echoed headers).
const MAX_REPLY: usize = 256 * 1024;
const MARKER_HEADER: &str = "X-Trustip-Probe";

/// Which PROXY header, if any, precedes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Plain,
    V1,
    V2,
}

impl Carrier {
    fn name(self) -> &'static str {
        match self {
            Carrier::Plain => "plain",
            Carrier::V1 => "proxy-v1",
            Carrier::V2 => "proxy-v2",
        }
    }

    fn claim(self, target: SocketAddr) -> Option<IpAddr> {
        match (self, target) {
            (Carrier::Plain, _) => None,
            (Carrier::V1, SocketAddr::V4(_)) => Some(CLAIM_V1.into()),
            (Carrier::V2, SocketAddr::V4(_)) => Some(CLAIM_V2.into()),
            (Carrier::V1, SocketAddr::V6(_)) => Some(CLAIM_V1_V6.into()),
            (Carrier::V2, SocketAddr::V6(_)) => Some(CLAIM_V2_V6.into()),
        }
    }

    /// The PROXY header bytes claiming [`Carrier::claim`], destination = the target.
    fn preface(self, target: SocketAddr) -> Result<Vec<u8>, CliError> {
        let Some(claim) = self.claim(target) else {
            return Ok(Vec::new());
        };
        let source = SocketAddr::new(claim, CLAIM_SOURCE_PORT);
        match self {
            Carrier::Plain => Ok(Vec::new()),
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

/// A value the probe planted, to look for in what the upstream echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// The source address claimed in the PROXY header.
    ProxySource,
    XForwardedFor,
    XRealIp,
}

impl Planted {
    fn name(self) -> &'static str {
        match self {
            Planted::ProxySource => "proxy_source",
            Planted::XForwardedFor => "x-forwarded-for",
            Planted::XRealIp => "x-real-ip",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Planted::ProxySource => "claimed address",
            Planted::XForwardedFor => "forged X-Forwarded-For",
            Planted::XRealIp => "forged X-Real-IP",
        }
    }
}

// --- what came back ---------------------------------------------------------------------

/// An HTTP reply, reduced to what the verdict needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The `x-trustip-reject` header: trustip's HTTP role refused the request (reason).
    pub trustip_reject: Option<String>,
    /// The body contains the probe's token: the path echoes request headers.
    pub echoes: bool,
    /// The planted values found in the body.
    pub seen: Vec<Planted>,
}

/// What one connection gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    ConnectFailed(String),
    /// Closed (FIN) without a byte of reply.
    Closed,
    /// Reset without a byte of reply.
    Reset,
    /// No reply within the timeout.
    Timeout,
    /// Bytes that are not an HTTP response.
    NotHttp,
    Response(Reply),
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::ConnectFailed(_) => "connect_failed",
            Outcome::Closed => "closed",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::NotHttp => "not_http",
            Outcome::Response(_) => "response",
        }
    }

    /// An HTTP response that is not a trustip rejection: the request went through.
    fn served(&self) -> Option<&Reply> {
        match self {
            Outcome::Response(reply) if reply.trustip_reject.is_none() => Some(reply),
            _ => None,
        }
    }
}

/// How the listener treats requests that come without a PROXY header, or with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    RequiresProxy,
    NoProxy,
    OptionalProxy,
    Unreachable,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::RequiresProxy => "requires_proxy",
            ListenerKind::NoProxy => "no_proxy",
            ListenerKind::OptionalProxy => "optional_proxy",
            ListenerKind::Unreachable => "unreachable",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            ListenerKind::RequiresProxy => "expects a PROXY header on every connection",
            ListenerKind::NoProxy => "does not expect PROXY headers (answers them with 400)",
            ListenerKind::OptionalProxy => "accepts connections with and without a PROXY header",
            ListenerKind::Unreachable => "no TCP connection, or no HTTP answer",
        }
    }
}

/// What the PROXY requests say about the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyState {
    /// Served: the PROXY header was parsed and believed (at least enough to pass).
    Served,
    /// Parsed, then refused: closed without reply, or a trustip rejection.
    Refused,
    /// `400 Bad Request`: the PROXY header reached the HTTP parser.
    NotUnderstood,
    /// No connection, no reply in time, or a reply that is not HTTP.
    Unknown,
}

/// A PROXY request that went through (not refused, not answered 400 for an unparsed header).
fn proxy_served(outcome: &Outcome) -> Option<&Reply> {
    match proxy_state(outcome) {
        ProxyState::Served => outcome.served(),
        _ => None,
    }
}

fn proxy_state(outcome: &Outcome) -> ProxyState {
    match outcome {
        Outcome::ConnectFailed(_) => ProxyState::Unknown,
        Outcome::Response(reply) if reply.trustip_reject.is_some() => ProxyState::Refused,
        Outcome::Response(reply) if reply.status == 400 => ProxyState::NotUnderstood,
        Outcome::Response(_) => ProxyState::Served,
        Outcome::Closed | Outcome::Reset => ProxyState::Refused,
        // A listener that hangs or answers something else than HTTP tells nothing about PROXY.
        Outcome::Timeout | Outcome::NotHttp => ProxyState::Unknown,
    }
}

/// All the probes' outcomes; `xff` is absent when no request could carry the forged headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observations {
    pub plain: Outcome,
    pub v1: Option<Outcome>,
    pub v2: Option<Outcome>,
    pub xff: Option<(Carrier, Outcome)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub listener: ListenerKind,
    pub proxy_spoofable: Option<bool>,
    pub xff_spoofable: Option<bool>,
}

impl Verdict {
    pub fn exit_code(&self) -> u8 {
        if self.listener == ListenerKind::Unreachable {
            4
        } else if self.proxy_spoofable == Some(true) || self.xff_spoofable == Some(true) {
            3
        } else {
            0
        }
    }
}

/// Which request carries the forged X-Forwarded-For: plain when plain requests are served,
/// else behind the first PROXY header that was served, else none (nothing would reach).
pub fn xff_carrier(plain: &Outcome, v1: &Outcome, v2: &Outcome) -> Option<Carrier> {
    if plain.served().is_some() {
        Some(Carrier::Plain)
    } else if proxy_served(v1).is_some() {
        Some(Carrier::V1)
    } else if proxy_served(v2).is_some() {
        Some(Carrier::V2)
    } else {
        None
    }
}

/// `Some(true)` when a planted value reached the upstream in a served, echoing reply,
/// `Some(false)` when served replies echo without it, `None` when no served reply echoes.
fn reached(replies: &[&Reply], planted: &[Planted]) -> Option<bool> {
    let echoing: Vec<&&Reply> = replies.iter().filter(|r| r.echoes).collect();
    if echoing.is_empty() {
        return None;
    }
    Some(
        echoing
            .iter()
            .any(|r| r.seen.iter().any(|s| planted.contains(s))),
    )
}

/// The verdict: a pure function of what the probes observed.
pub fn classify(obs: &Observations) -> Verdict {
    let unreachable = Verdict {
        listener: ListenerKind::Unreachable,
        proxy_spoofable: None,
        xff_spoofable: None,
    };
    if matches!(obs.plain, Outcome::ConnectFailed(_)) {
        return unreachable;
    }
    let proxies: Vec<&Outcome> = [obs.v1.as_ref(), obs.v2.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let states: Vec<ProxyState> = proxies.iter().map(|o| proxy_state(o)).collect();
    let understood = states
        .iter()
        .any(|s| matches!(s, ProxyState::Served | ProxyState::Refused));
    let not_understood = states.contains(&ProxyState::NotUnderstood);
    let listener = match (understood, not_understood, obs.plain.served().is_some()) {
        (true, _, true) => ListenerKind::OptionalProxy,
        (true, _, false) => ListenerKind::RequiresProxy,
        (false, true, _) => ListenerKind::NoProxy,
        (false, false, _) => return unreachable,
    };

    let served: Vec<&Reply> = proxies.iter().filter_map(|o| proxy_served(o)).collect();
    let proxy_spoofable = if served.is_empty() {
        // Refused or not understood: the claimed address went nowhere.
        Some(false)
    } else {
        reached(&served, &[Planted::ProxySource])
    };
    let xff_spoofable = match &obs.xff {
        Some((_, outcome)) => match outcome.served() {
            Some(reply) => reached(&[reply], &[Planted::XForwardedFor, Planted::XRealIp]),
            None => None,
        },
        None => None,
    };
    Verdict {
        listener,
        proxy_spoofable,
        xff_spoofable,
    }
}

/// Plain advice, each line starting with `fix:`, `ok:` or `note:`.
pub fn advice(obs: &Observations, verdict: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    let proxies: Vec<&Outcome> = [obs.v1.as_ref(), obs.v2.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let served_proxy = proxies.iter().any(|o| proxy_served(o).is_some());
    match verdict.listener {
        ListenerKind::Unreachable => {
            match &obs.plain {
                Outcome::ConnectFailed(why) => out.push(format!(
                    "fix: nothing accepted a TCP connection ({why}): check the address, the port and any firewall in between"
                )),
                _ => out.push(
                    "fix: connections were accepted but no request got an HTTP answer (no reply in time, or not HTTP): is this a plain-text HTTP listener? (a TLS listener needs its load balancer's view, not this probe)"
                        .to_string(),
                ),
            }
            return out;
        }
        ListenerKind::NoProxy => out.push(
            "note: this listener does not expect PROXY headers: if the load balancer sends PROXY, its clients get 400 Bad Request: enable proxy_protocol on the gateway (the envoy.filters.listener.proxy_protocol listener filter, Istio's gatewayTopology proxyProtocol; `trustip render` wires both) or turn PROXY off on the load balancer. Without PROXY the gateway sees the load balancer's address as the client"
                .to_string(),
        ),
        ListenerKind::RequiresProxy => out.push(
            "note: this listener requires a PROXY header: a load balancer that does not send one gets its connections reset (clients see \"Empty reply from server\"): turn PROXY on at the load balancer (HAProxy: send-proxy-v2), or allow requests without PROXY on the listener (allow_requests_without_proxy_protocol: true) and let trustip's rules decide"
                .to_string(),
        ),
        ListenerKind::OptionalProxy => out.push(
            "note: this listener accepts connections with and without a PROXY header: only the rules that decide whose PROXY header to believe (trustip) stand between a direct client and a forged address"
                .to_string(),
        ),
    }
    match verdict.proxy_spoofable {
        Some(true) => out.push(
            "fix: this listener believes PROXY headers from anyone: the address this probe claimed reached the upstream: add trustip rules that trust PROXY only from the load balancer ({\"from\": [\"<load balancer CIDR>\"], \"proxy_protocol\": \"require\"}; the implicit last rule rejects everyone else's PROXY headers)"
                .to_string(),
        ),
        Some(false) if served_proxy => out.push(
            "ok: the listener took a PROXY header from this probe but the claimed address did not reach the upstream"
                .to_string(),
        ),
        Some(false) if verdict.listener != ListenerKind::NoProxy => {
            let reasons: Vec<String> = proxies
                .iter()
                .filter_map(|o| match o {
                    Outcome::Response(Reply {
                        trustip_reject: Some(reason),
                        status,
                        ..
                    }) => Some(format!("{status} from trustip: {reason}")),
                    _ => None,
                })
                .collect();
            let mut reasons = reasons;
            reasons.dedup();
            let how = if reasons.is_empty() {
                "the connection was closed without a reply".to_string()
            } else {
                reasons.join(", ")
            };
            out.push(format!(
                "ok: PROXY headers from this probe's address were refused ({how}): make sure the load balancer's addresses are the only ones trusted"
            ));
        }
        Some(false) => {}
        None => out.push(
            "note: the listener took a PROXY header from this probe but the response does not echo request headers, so whether the claimed address reaches the upstream is unknown: point --path at an endpoint that echoes them (httpbin's /headers)"
                .to_string(),
        ),
    }
    let xff_seen: Vec<Planted> = match &obs.xff {
        Some((_, Outcome::Response(reply))) => reply.seen.clone(),
        _ => Vec::new(),
    };
    match verdict.xff_spoofable {
        Some(true) => {
            if xff_seen.contains(&Planted::XForwardedFor) {
                out.push(
                    "fix: a client-supplied X-Forwarded-For reaches the upstream: let trustip overwrite it (headers.x_forwarded_for: \"overwrite\", the default)"
                        .to_string(),
                );
            }
            if xff_seen.contains(&Planted::XRealIp) {
                out.push(
                    "fix: a client-supplied X-Real-IP reaches the upstream: let trustip strip it (headers.strip, whose default includes x-real-ip)"
                        .to_string(),
                );
            }
        }
        Some(false) => out.push(
            "ok: a client-supplied X-Forwarded-For or X-Real-IP does not reach the upstream".to_string(),
        ),
        None => match &obs.xff {
            None => out.push(
                "note: no request of this probe was served, so what happens to a client-supplied X-Forwarded-For is unknown from here"
                    .to_string(),
            ),
            Some(_) => out.push(
                "note: whether a client-supplied X-Forwarded-For reaches the upstream is unknown: point --path at an endpoint that echoes request headers (httpbin's /headers)"
                    .to_string(),
            ),
        },
    }
    out
}

// --- the network part -------------------------------------------------------------------

struct Settings {
    target: SocketAddr,
    bind: Option<IpAddr>,
    path: String,
    host: String,
    timeout: Duration,
    token: String,
}

/// One probe as sent and as answered, for printing.
struct Record {
    carrier: Carrier,
    forged: bool,
    claim: Option<IpAddr>,
    outcome: Outcome,
    /// Header names (from a JSON echo) in which each planted value was found.
    seen_in: Vec<(Planted, Vec<String>)>,
}

impl Record {
    fn name(&self) -> &'static str {
        if self.forged {
            "spoofed-xff"
        } else {
            self.carrier.name()
        }
    }

    fn sent(&self) -> String {
        let mut text = match (self.carrier, self.claim) {
            (Carrier::Plain, _) | (_, None) => "no PROXY header".to_string(),
            (Carrier::V1, Some(ip)) => format!("PROXY v1 claiming {ip}"),
            (Carrier::V2, Some(ip)) => format!("PROXY v2 claiming {ip}"),
        };
        if self.forged {
            text = format!("XFF {SPOOFED_XFF}, X-Real-IP {SPOOFED_REAL_IP}, {text}");
        }
        text
    }
}

fn token() -> String {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The HTTP head (status, headers) and where the body starts, if `raw` holds a whole head.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    body_start: usize,
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(raw.get(..end)?);
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Head {
        status,
        headers,
        body_start: end + 4,
    })
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// Removes chunked framing (best effort: a truncated body gives what arrived).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(body, b"\r\n") {
        let size_text = String::from_utf8_lossy(body.get(..line_end).unwrap_or_default());
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let chunk = body.get(start..start.saturating_add(size));
        match chunk {
            Some(chunk) => out.extend_from_slice(chunk),
            None => {
                out.extend_from_slice(body.get(start..).unwrap_or_default());
                break;
            }
        }
        body = body.get(start + size + 2..).unwrap_or_default();
    }
    out
}

/// Whether `raw` already holds a whole response (no need to wait for the close).
fn complete(raw: &[u8]) -> bool {
    let Some(head) = parse_head(raw) else {
        return false;
    };
    let body = raw.get(head.body_start..).unwrap_or_default();
    if head.chunked() {
        return body.starts_with(b"0\r\n\r\n") || find(body, b"\r\n0\r\n\r\n").is_some();
    }
    match head
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(length) => body.len() >= length,
        None => false,
    }
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
                if raw.len() >= MAX_REPLY || complete(&raw) {
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

/// Where in a JSON echo (httpbin's `{"headers": {name: value | [values]}}` or a list of
/// `[name, value]` pairs) a value occurs: the header names, lowercased.
fn headers_containing(body: &Value, needle: &str) -> Vec<String> {
    let contains = |v: &Value| match v {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| s.contains(needle))),
        _ => false,
    };
    let mut names = Vec::new();
    match body.get("headers") {
        Some(Value::Object(map)) => {
            for (name, value) in map {
                if contains(value) {
                    names.push(name.to_ascii_lowercase());
                }
            }
        }
        Some(Value::Array(pairs)) => {
            for pair in pairs {
                if let (Some(name), Some(value)) = (pair.get(0), pair.get(1)) {
                    if let (Some(name), true) = (name.as_str(), contains(value)) {
                        names.push(name.to_ascii_lowercase());
                    }
                }
            }
        }
        _ => {}
    }
    names.sort();
    names.dedup();
    names
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

fn send(settings: &Settings, carrier: Carrier, forged: bool) -> Result<Record, CliError> {
    let claim = carrier.claim(settings.target);
    let mut planted: Vec<(Planted, String)> = Vec::new();
    if let Some(ip) = claim {
        planted.push((Planted::ProxySource, ip.to_string()));
    }
    if forged {
        planted.push((Planted::XForwardedFor, SPOOFED_XFF.to_string()));
        planted.push((Planted::XRealIp, SPOOFED_REAL_IP.to_string()));
    }
    let mut record = Record {
        carrier,
        forged,
        claim,
        outcome: Outcome::Timeout,
        seen_in: Vec::new(),
    };
    let mut bytes = carrier.preface(settings.target)?;
    bytes.extend_from_slice(&request(settings, forged));

    let deadline = Instant::now() + settings.timeout;
    let mut stream = match connect(settings)? {
        Ok(stream) => stream,
        Err(err) => {
            record.outcome = Outcome::ConnectFailed(err.to_string());
            return Ok(record);
        }
    };
    let _ = stream.set_write_timeout(Some(settings.timeout));
    let mut reset = false;
    if let Err(err) = stream.write_all(&bytes) {
        // The peer may have answered and closed already: still read what it sent.
        reset = is_reset(&err);
    }
    let (raw, ending) = read_reply(&mut stream, deadline);
    let reset = reset || matches!(ending, Ending::Reset);
    record.outcome = match parse_head(&raw) {
        None if raw.is_empty() && matches!(ending, Ending::Timeout) => Outcome::Timeout,
        None if raw.is_empty() && reset => Outcome::Reset,
        None if raw.is_empty() => Outcome::Closed,
        None if matches!(ending, Ending::Timeout) && raw.starts_with(b"HTTP/") => Outcome::Timeout,
        None => Outcome::NotHttp,
        Some(head) => {
            let raw_body = raw.get(head.body_start..).unwrap_or_default();
            let body = if head.chunked() {
                dechunk(raw_body)
            } else {
                raw_body.to_vec()
            };
            let echoes = find(&body, settings.token.as_bytes()).is_some();
            let json: Option<Value> = serde_json::from_slice(&body).ok();
            let mut seen = Vec::new();
            for (what, value) in &planted {
                if echoes && find(&body, value.as_bytes()).is_some() {
                    seen.push(*what);
                    let names = json
                        .as_ref()
                        .map(|j| headers_containing(j, value))
                        .unwrap_or_default();
                    record.seen_in.push((*what, names));
                }
            }
            Outcome::Response(Reply {
                status: head.status,
                trustip_reject: head.header("x-trustip-reject").map(str::to_string),
                echoes,
                seen,
            })
        }
    };
    Ok(record)
}

// --- arguments and output ---------------------------------------------------------------

fn usage(text: String) -> CliError {
    CliError::Usage(format!("probe: {text}"))
}

/// `HOST:PORT` → (host as written, without brackets, port).
fn split_target(text: &str) -> Result<(String, u16), CliError> {
    let bad = || {
        usage(format!(
            "{text:?}: expected HOST:PORT (127.0.0.1:10000, [::1]:10000, gateway.example.com:80)"
        ))
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let bracketed = host.starts_with('[') && host.ends_with(']');
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 || (host.contains(':') && !bracketed) {
        return Err(bad());
    }
    if bracketed && host.parse::<Ipv6Addr>().is_err() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn settings(args: &ProbeArgs) -> Result<Result<Settings, String>, CliError> {
    let (host, port) = split_target(&args.target)?;
    if !args.path.starts_with('/')
        || args
            .path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(usage(format!(
            "--path {:?}: expected an absolute path without spaces (/headers)",
            args.path
        )));
    }
    let host_header = match &args.host {
        Some(name) => name.clone(),
        None if host.contains(':') => format!("[{host}]"),
        None => host.clone(),
    };
    if host_header.is_empty()
        || host_header
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(usage(format!(
            "--host {host_header:?}: expected a host name"
        )));
    }
    if !args.timeout.is_finite() || args.timeout <= 0.0 || args.timeout > 300.0 {
        return Err(usage(format!(
            "--timeout {}: expected seconds between 0 and 300",
            args.timeout
        )));
    }
    let target = match (host.as_str(), port).to_socket_addrs() {
        Ok(mut addresses) => match addresses.next() {
            Some(address) => address,
            None => return Ok(Err(format!("{host} resolves to no address"))),
        },
        Err(err) => return Ok(Err(format!("cannot resolve {host}: {err}"))),
    };
    if let Some(local) = args.bind {
        if local.is_ipv4() != target.is_ipv4() {
            return Err(usage(format!(
                "--bind {local}: not of the same address family as {target}"
            )));
        }
    }
    Ok(Ok(Settings {
        target,
        bind: args.bind,
        path: args.path.clone(),
        host: host_header,
        timeout: Duration::from_secs_f64(args.timeout),
        token: token(),
    }))
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn describe(record: &Record, timeout: Duration) -> String {
    match &record.outcome {
        Outcome::ConnectFailed(err) => format!("connect failed: {err}"),
        Outcome::Closed => "closed without a reply".to_string(),
        Outcome::Reset => "reset without a reply".to_string(),
        Outcome::Timeout => format!("no reply within {}s", timeout.as_secs_f64()),
        Outcome::NotHttp => "a reply that is not HTTP".to_string(),
        Outcome::Response(reply) => {
            let mut text = reply.status.to_string();
            if let Some(reason) = &reply.trustip_reject {
                let _ = write!(text, " rejected by trustip ({reason})");
                return text;
            }
            if reply.status == 400 && record.carrier != Carrier::Plain {
                text.push_str(" Bad Request: PROXY header not understood");
                return text;
            }
            if !reply.echoes {
                text.push_str(", does not echo request headers");
                return text;
            }
            if record.seen_in.is_empty() {
                text.push_str(if record.forged || record.claim.is_some() {
                    ", echoes headers, upstream got none of the planted values"
                } else {
                    ", echoes request headers"
                });
                return text;
            }
            let reached: Vec<String> = record
                .seen_in
                .iter()
                .map(|(what, names)| {
                    if names.is_empty() {
                        what.label().to_string()
                    } else {
                        format!("{} (as {})", what.label(), names.join(", "))
                    }
                })
                .collect();
            let _ = write!(text, ", upstream got the {}", reached.join(" and the "));
            text
        }
    }
}

fn record_json(record: &Record) -> Value {
    let reply = match &record.outcome {
        Outcome::Response(reply) => Some(reply),
        _ => None,
    };
    let seen: Vec<Value> = record
        .seen_in
        .iter()
        .map(|(what, names)| json!({"planted": what.name(), "headers": names}))
        .collect();
    json!({
        "name": record.name(),
        "proxy": match record.carrier { Carrier::Plain => None, Carrier::V1 => Some("v1"), Carrier::V2 => Some("v2") },
        "claimed_source": record.claim.map(|ip| ip.to_string()),
        "forged_headers": if record.forged {
            json!({"x-forwarded-for": SPOOFED_XFF, "x-real-ip": SPOOFED_REAL_IP})
        } else {
            Value::Null
        },
        "sent": record.sent(),
        "outcome": record.outcome.word(),
        "error": match &record.outcome { Outcome::ConnectFailed(err) => Some(err.clone()), _ => None },
        "status": reply.map(|r| r.status),
        "trustip_reject": reply.and_then(|r| r.trustip_reject.clone()),
        "echoes_headers": reply.map(|r| r.echoes),
        "reached_upstream": seen,
    })
}

fn print_text(
    args: &ProbeArgs,
    settings: Option<&Settings>,
    records: &[Record],
    verdict: &Verdict,
    advice: &[String],
) {
    match settings {
        Some(s) => {
            let resolved = s.target.to_string();
            let address = if resolved == args.target {
                String::new()
            } else {
                format!("{resolved}, ")
            };
            println!(
                "trustip probe {} ({address}GET {}, Host: {})",
                args.target, s.path, s.host
            );
        }
        None => println!("trustip probe {}", args.target),
    }
    if !records.is_empty() {
        let timeout = settings.map_or(Duration::ZERO, |s| s.timeout);
        let rows: Vec<(&str, String, String)> = records
            .iter()
            .map(|r| (r.name(), r.sent(), describe(r, timeout)))
            .collect();
        let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(4);
        println!();
        println!("  {:<12} {:<width$}  got", "probe", "sent");
        for (name, sent, got) in &rows {
            println!("  {name:<12} {sent:<width$}  {got}");
        }
    }
    println!();
    println!(
        "  {:<16} {:<15} {}",
        "listener",
        verdict.listener.name(),
        verdict.listener.meaning()
    );
    println!(
        "  {:<16} {:<15} does an address claimed in a PROXY header reach the upstream?",
        "proxy_spoofable",
        yes_no(verdict.proxy_spoofable),
    );
    println!(
        "  {:<16} {:<15} does a client-supplied X-Forwarded-For / X-Real-IP reach the upstream?",
        "xff_spoofable",
        yes_no(verdict.xff_spoofable),
    );
    println!();
    println!("advice:");
    for line in advice {
        println!("  {line}");
    }
}

pub fn run(args: &ProbeArgs) -> Result<u8, CliError> {
    let settings = settings(args)?;
    let (settings, records, obs) = match settings {
        Err(why) => (
            None,
            Vec::new(),
            Observations {
                plain: Outcome::ConnectFailed(why),
                v1: None,
                v2: None,
                xff: None,
            },
        ),
        Ok(settings) => {
            let mut records = Vec::new();
            let plain = send(&settings, Carrier::Plain, false)?;
            let plain_outcome = plain.outcome.clone();
            records.push(plain);
            let mut obs = Observations {
                plain: plain_outcome,
                v1: None,
                v2: None,
                xff: None,
            };
            if !matches!(obs.plain, Outcome::ConnectFailed(_)) {
                let v1 = send(&settings, Carrier::V1, false)?;
                let v2 = send(&settings, Carrier::V2, false)?;
                let carrier = xff_carrier(&obs.plain, &v1.outcome, &v2.outcome);
                obs.v1 = Some(v1.outcome.clone());
                obs.v2 = Some(v2.outcome.clone());
                records.push(v1);
                records.push(v2);
                if let Some(carrier) = carrier {
                    let forged = send(&settings, carrier, true)?;
                    obs.xff = Some((carrier, forged.outcome.clone()));
                    records.push(forged);
                }
            }
            (Some(settings), records, obs)
        }
    };
    let verdict = classify(&obs);
    let advice = advice(&obs, &verdict);
    if args.json {
        let out = json!({
            "target": args.target,
            "address": settings.as_ref().map(|s| s.target.to_string()),
            "path": args.path,
            "host": settings.as_ref().map(|s| s.host.clone()),
            "listener": verdict.listener.name(),
            "proxy_spoofable": verdict.proxy_spoofable,
            "xff_spoofable": verdict.xff_spoofable,
            "probes": records.iter().map(record_json).collect::<Vec<_>>(),
            "advice": advice,
        });
        println!("{out}");
    } else {
        print_text(args, settings.as_ref(), &records, &verdict, &advice);
    }
    Ok(verdict.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, echoes: bool, seen: &[Planted]) -> Outcome {
        Outcome::Response(Reply {
            status,
            trustip_reject: None,
            echoes,
            seen: seen.to_vec(),
        })
    }

    fn trustip(status: u16, reason: &str) -> Outcome {
        Outcome::Response(Reply {
            status,
            trustip_reject: Some(reason.to_string()),
            echoes: false,
            seen: Vec::new(),
        })
    }

    const CLAIM: &[Planted] = &[Planted::ProxySource];
    const XFF: &[Planted] = &[Planted::XForwardedFor];
    const REAL_IP: &[Planted] = &[Planted::XRealIp];

    fn obs(plain: Outcome, v1: Outcome, v2: Outcome) -> Observations {
        let xff = xff_carrier(&plain, &v1, &v2);
        Observations {
            plain,
            v1: Some(v1),
            v2: Some(v2),
            xff: xff.map(|c| (c, Outcome::Closed)),
        }
    }

    fn with_xff(mut o: Observations, outcome: Outcome) -> Observations {
        let carrier = o.xff.as_ref().map(|(c, _)| *c).expect("a carrier");
        o.xff = Some((carrier, outcome));
        o
    }

    fn verdict(listener: ListenerKind, proxy: Option<bool>, xff: Option<bool>) -> Verdict {
        Verdict {
            listener,
            proxy_spoofable: proxy,
            xff_spoofable: xff,
        }
    }

    use ListenerKind::*;

    #[test]
    fn classification_table() {
        let echo = || reply(200, true, &[]);
        let cases: Vec<(&str, Observations, Verdict)> = vec![
            (
                "nothing listens",
                Observations {
                    plain: Outcome::ConnectFailed("Connection refused".into()),
                    v1: None,
                    v2: None,
                    xff: None,
                },
                verdict(Unreachable, None, None),
            ),
            (
                "plain Envoy, no proxy_protocol, XFF passes",
                with_xff(
                    obs(echo(), reply(400, false, &[]), reply(400, false, &[])),
                    reply(200, true, &[Planted::XForwardedFor, Planted::XRealIp]),
                ),
                verdict(NoProxy, Some(false), Some(true)),
            ),
            (
                "no proxy_protocol, trustip overwrites XFF",
                with_xff(
                    obs(echo(), reply(400, false, &[]), reply(400, false, &[])),
                    echo(),
                ),
                verdict(NoProxy, Some(false), Some(false)),
            ),
            (
                "strict proxy_protocol, believes anyone",
                with_xff(
                    obs(
                        Outcome::Reset,
                        reply(200, true, CLAIM),
                        reply(200, true, CLAIM),
                    ),
                    reply(200, true, &[Planted::ProxySource, Planted::XForwardedFor]),
                ),
                verdict(RequiresProxy, Some(true), Some(true)),
            ),
            (
                "strict proxy_protocol, trustip network role closes PROXY from strangers",
                obs(Outcome::Reset, Outcome::Closed, Outcome::Closed),
                verdict(RequiresProxy, Some(false), None),
            ),
            (
                "strict proxy_protocol, trustip HTTP role answers 403",
                obs(
                    Outcome::Closed,
                    trustip(403, "untrusted_proxy"),
                    trustip(403, "untrusted_proxy"),
                ),
                verdict(RequiresProxy, Some(false), None),
            ),
            (
                "optional proxy_protocol, believes anyone",
                with_xff(
                    obs(echo(), reply(200, true, CLAIM), reply(200, true, CLAIM)),
                    reply(200, true, XFF),
                ),
                verdict(OptionalProxy, Some(true), Some(true)),
            ),
            (
                "optional proxy_protocol with trustip",
                with_xff(obs(echo(), Outcome::Closed, Outcome::Reset), echo()),
                verdict(OptionalProxy, Some(false), Some(false)),
            ),
            (
                "optional, X-Real-IP alone leaks",
                with_xff(
                    obs(echo(), Outcome::Closed, Outcome::Closed),
                    reply(200, true, REAL_IP),
                ),
                verdict(OptionalProxy, Some(false), Some(true)),
            ),
            (
                "optional, path does not echo",
                with_xff(
                    obs(
                        reply(404, false, &[]),
                        reply(404, false, &[]),
                        reply(404, false, &[]),
                    ),
                    reply(404, false, &[]),
                ),
                verdict(OptionalProxy, None, None),
            ),
            (
                "PROXY served but the claim is not forwarded (an ignore rule)",
                with_xff(obs(echo(), echo(), echo()), echo()),
                verdict(OptionalProxy, Some(false), Some(false)),
            ),
            (
                "only v2 understood",
                with_xff(
                    obs(echo(), reply(400, false, &[]), reply(200, true, CLAIM)),
                    echo(),
                ),
                verdict(OptionalProxy, Some(true), Some(false)),
            ),
            (
                "trustip rejects plain requests (require for everyone) but believes PROXY",
                with_xff(
                    obs(
                        trustip(403, "missing_proxy"),
                        reply(200, true, CLAIM),
                        reply(200, true, CLAIM),
                    ),
                    reply(200, true, CLAIM),
                ),
                verdict(RequiresProxy, Some(true), Some(false)),
            ),
            (
                "a trustip reject_status of 400 is not taken for an unparsed PROXY header",
                with_xff(
                    obs(
                        echo(),
                        trustip(400, "untrusted_proxy"),
                        trustip(400, "untrusted_proxy"),
                    ),
                    echo(),
                ),
                verdict(OptionalProxy, Some(false), Some(false)),
            ),
            (
                "a listener that accepts and never answers",
                Observations {
                    plain: Outcome::Timeout,
                    v1: Some(Outcome::Timeout),
                    v2: Some(Outcome::Timeout),
                    xff: None,
                },
                verdict(Unreachable, None, None),
            ),
            (
                "a close counts as a refusal even when other replies are not HTTP",
                Observations {
                    plain: Outcome::NotHttp,
                    v1: Some(Outcome::NotHttp),
                    v2: Some(Outcome::Closed),
                    xff: None,
                },
                verdict(RequiresProxy, Some(false), None),
            ),
            (
                "PROXY probes could not connect",
                Observations {
                    plain: echo(),
                    v1: Some(Outcome::ConnectFailed("refused".into())),
                    v2: Some(Outcome::ConnectFailed("refused".into())),
                    xff: None,
                },
                verdict(Unreachable, None, None),
            ),
        ];
        for (name, observations, expected) in cases {
            assert_eq!(classify(&observations), expected, "{name}");
            let advice = advice(&observations, &expected);
            assert!(!advice.is_empty(), "{name}: no advice");
            assert!(
                advice.iter().all(|a| a.starts_with("fix: ")
                    || a.starts_with("ok: ")
                    || a.starts_with("note: ")),
                "{name}: {advice:?}"
            );
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(verdict(Unreachable, None, None).exit_code(), 4);
        assert_eq!(
            verdict(OptionalProxy, Some(true), Some(false)).exit_code(),
            3
        );
        assert_eq!(verdict(NoProxy, Some(false), Some(true)).exit_code(), 3);
        assert_eq!(verdict(RequiresProxy, Some(false), None).exit_code(), 0);
        assert_eq!(verdict(OptionalProxy, None, None).exit_code(), 0);
    }

    #[test]
    fn xff_goes_plain_when_plain_is_served_else_behind_a_served_proxy_header() {
        let ok = reply(200, true, &[]);
        assert_eq!(
            xff_carrier(&ok, &Outcome::Closed, &Outcome::Closed),
            Some(Carrier::Plain)
        );
        assert_eq!(xff_carrier(&Outcome::Reset, &ok, &ok), Some(Carrier::V1));
        assert_eq!(
            xff_carrier(&Outcome::Reset, &reply(400, false, &[]), &ok),
            Some(Carrier::V2)
        );
        assert_eq!(
            xff_carrier(&Outcome::Reset, &Outcome::Closed, &trustip(403, "x")),
            None
        );
    }

    #[test]
    fn advice_names_the_fix() {
        let leaky = with_xff(
            obs(
                Outcome::Reset,
                reply(200, true, CLAIM),
                reply(200, true, CLAIM),
            ),
            reply(200, true, &[Planted::XForwardedFor, Planted::XRealIp]),
        );
        let text = advice(&leaky, &classify(&leaky)).join("\n");
        assert!(
            text.contains("believes PROXY headers from anyone: "),
            "{text}"
        );
        assert!(text.contains("add trustip rules"), "{text}");
        assert!(
            text.contains("X-Forwarded-For reaches the upstream: let trustip overwrite it"),
            "{text}"
        );
        assert!(text.contains("X-Real-IP reaches the upstream"), "{text}");
        assert!(text.contains("Empty reply from server"), "{text}");

        let no_proxy = obs(
            reply(200, true, &[]),
            reply(400, false, &[]),
            reply(400, false, &[]),
        );
        let text = advice(&no_proxy, &classify(&no_proxy)).join("\n");
        assert!(
            text.contains("enable proxy_protocol on the gateway"),
            "{text}"
        );

        let refused = obs(
            reply(200, true, &[]),
            trustip(403, "untrusted_proxy"),
            Outcome::Closed,
        );
        let text = advice(&refused, &classify(&refused)).join("\n");
        assert!(text.contains("403 from trustip: untrusted_proxy"), "{text}");
    }

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
    }

    #[test]
    fn targets() {
        assert_eq!(
            split_target("127.0.0.1:80").unwrap(),
            ("127.0.0.1".into(), 80)
        );
        assert_eq!(split_target("[::1]:10000").unwrap(), ("::1".into(), 10000));
        assert_eq!(
            split_target("gw.example:443").unwrap(),
            ("gw.example".into(), 443)
        );
        for bad in [
            "127.0.0.1",
            "::1:80",
            ":80",
            "host:0",
            "host:x",
            "[zz]:80",
            "",
        ] {
            assert!(split_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX-Trustip-Reject: tlv\r\n\r\nhello";
        let head = parse_head(raw).unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("x-trustip-reject"), Some("tlv"));
        assert!(complete(raw));
        assert!(!complete(&raw[..raw.len() - 1]));
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert!(complete(chunked));
        let head = parse_head(chunked).unwrap();
        assert_eq!(dechunk(&chunked[head.body_start..]), b"hello world");
    }

    #[test]
    fn echoed_header_names() {
        let httpbin: Value = serde_json::from_str(
            r#"{"headers": {"X-Forwarded-For": ["192.0.2.77, 10.0.0.1"], "X-Real-Ip": ["192.0.2.78"], "Host": ["h"]}}"#,
        )
        .unwrap();
        assert_eq!(
            headers_containing(&httpbin, "192.0.2.77"),
            vec!["x-forwarded-for"]
        );
        let pairs: Value =
            serde_json::from_str(r#"{"headers": [["x-envoy-external-address", "203.0.113.77"], ["x-forwarded-for", "203.0.113.77"]]}"#)
                .unwrap();
        assert_eq!(
            headers_containing(&pairs, "203.0.113.77"),
            vec!["x-envoy-external-address", "x-forwarded-for"]
        );
    }
}
