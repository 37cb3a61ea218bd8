//! `trustip probe`: diagnoses a live listener from outside. It sends a few HTTP/1.1 requests
//! (plain, behind a PROXY v1 header, behind a PROXY v2 header, and one carrying a forged
//! X-Forwarded-For), each on its own connection to the one address given, and classifies what
//! came back. The classification is a pure function of the observed outcomes
//! ([`classify::classify`]), so it is unit-tested without a network.
//!
//! - [`wire`]: the PROXY prefaces, the request, the connections and the bytes that come back;
//! - [`http`]: the response (head, body) and what its body echoes;
//! - [`classify`]: the verdict and the advice;
//! - [`report`]: the text report and the `--json` object.

mod classify;
mod health;
mod http;
mod report;
mod wire;

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use classify::{advice, classify, xff_carrier, Observations, Outcome};
use wire::{send, Carrier, Settings};

use crate::error::CliError;
use crate::hostport::{self, HostPort};

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

With --health-check PATH (the load balancer's health check; at most 3 connections):
  connect           a TCP connect alone, nothing sent (a TCP health check)
  proxy-v2-local    GET PATH behind a PROXY v2 LOCAL header (--proxy-version 1: PROXY UNKNOWN)
  plain             GET PATH without a PROXY header
and one cause, with its fix:
  unreachable          nothing accepts a TCP connection (wrong address or port, a firewall)  exit 4
  no_http_answer       accepted, but no HTTP answer (wrong port: TLS, another protocol)      exit 4
  proxy_not_expected   PROXY answered 400 or closed while the plain GET is answered: no
                       proxy_protocol listener filter                                         exit 3
  proxy_local_refused  trustip refuses it (403 x-trustip-reject: missing_proxy, or closed
                       by its network role / listener filter): the load balancer's require
                       rule lacks \"health_check_paths\": [PATH]                                exit 3
  healthy              2xx                                                                    exit 0
  unhealthy_status     another status: 503 (Envoy draining, no healthy upstream), 404, ...    exit 3
trustip decides by the connecting address: --bind an address of the load balancer's rule.

Examples:
  trustip probe 127.0.0.1:10000
  trustip probe gateway.example.com:80 --path /headers --host www.example.com --json
  trustip probe 127.0.0.1:10000 --bind 127.0.0.66     # from another loopback address
  trustip probe 10.0.1.20:80 --health-check /healthz/ready --bind 10.0.0.5";

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
    /// Print one JSON object (listener, proxy_spoofable, xff_spoofable, probes, advice; with
    /// --health-check: cause, status, fix, probes, advice).
    #[arg(long)]
    pub json: bool,
    /// Diagnose the load balancer's health check of PATH instead: a TCP connect alone, then
    /// `GET PATH` behind a PROXY v2 LOCAL header (what load balancers send on health checks),
    /// then the same GET without PROXY; prints the cause and its fix. Probe from an address of
    /// the load balancer's rule (--bind) to see what its health check sees.
    #[arg(long, value_name = "PATH", conflicts_with = "path")]
    pub health_check: Option<String>,
    /// With --health-check: the health check's PROXY header, 2 (v2 LOCAL, the default) or 1
    /// (v1 `PROXY UNKNOWN`).
    #[arg(long, value_name = "1|2")]
    pub proxy_version: Option<u8>,
}

fn usage(text: String) -> CliError {
    CliError::Usage(format!("probe: {text}"))
}

/// The probes' settings from the arguments; `Ok(Err(why))` when the target does not resolve
/// (unreachable, not a usage error).
fn settings(args: &ProbeArgs) -> Result<Result<Settings, String>, CliError> {
    let target = hostport::parse(&args.target).map_err(|err| usage(err.to_string()))?;
    let host = target.host();
    let (option, path) = match &args.health_check {
        Some(path) => ("--health-check", path),
        None => ("--path", &args.path),
    };
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(usage(format!(
            "{option} {path:?}: expected an absolute path without spaces (/headers)"
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
    let target = match target {
        HostPort::Addr(address) => address,
        HostPort::Name(name, port) => match (name.as_str(), port).to_socket_addrs() {
            Ok(mut addresses) => match addresses.next() {
                Some(address) => address,
                None => return Ok(Err(format!("{host} resolves to no address"))),
            },
            Err(err) => return Ok(Err(format!("cannot resolve {host}: {err}"))),
        },
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
        path: path.clone(),
        host: host_header,
        timeout: Duration::from_secs_f64(args.timeout),
        token: wire::token(),
    }))
}

/// The health check's PROXY header (`--proxy-version`), or `None` without `--health-check`.
fn health_carrier(args: &ProbeArgs) -> Result<Option<Carrier>, CliError> {
    match (&args.health_check, args.proxy_version) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(usage(
            "--proxy-version is for --health-check (the listener probe sends both versions)"
                .to_string(),
        )),
        (Some(_), None | Some(2)) => Ok(Some(Carrier::V2Local)),
        (Some(_), Some(1)) => Ok(Some(Carrier::V1Unknown)),
        (Some(_), Some(other)) => Err(usage(format!(
            "--proxy-version {other}: expected 1 (PROXY v1 UNKNOWN) or 2 (PROXY v2 LOCAL)"
        ))),
    }
}

pub fn run(args: &ProbeArgs) -> Result<u8, CliError> {
    let carrier = health_carrier(args)?;
    let settings = settings(args)?;
    if let (Some(carrier), Some(path)) = (carrier, &args.health_check) {
        let target = health::Target {
            given: &args.target,
            path,
            bind: args.bind,
            carrier,
        };
        return health::run(
            &target,
            settings.as_ref().map_err(String::as_str),
            args.json,
        );
    }
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
        report::print_json(args, settings.as_ref(), &records, &verdict, &advice);
    } else {
        report::print_text(args, settings.as_ref(), &records, &verdict, &advice);
    }
    Ok(verdict.exit_code())
}
