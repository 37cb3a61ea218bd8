//! `trustip probe --health-check PATH`: why does the load balancer's health check fail? Three
//! connections, like a load balancer's health check and its neighbours: a TCP connect alone, the
//! health check itself (a PROXY v2 LOCAL header, or v1 `PROXY UNKNOWN`, then `GET PATH`), and
//! the same request without a PROXY header. The cause is a pure function of what came back
//! ([`diagnose`]), unit-tested without a network.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::json;

use super::classify::{Outcome, Reply};
use super::report::record_json;
use super::wire::{connect_only, send, Carrier, Record, Settings};
use crate::error::CliError;

/// Why the health check fails (or that it does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// (a) Nothing accepts a TCP connection: wrong address or port, or a firewall.
    Unreachable,
    /// (a) Connections are accepted but no HTTP answer comes back: a port that does not speak
    /// plain HTTP (TLS, another protocol).
    NoHttpAnswer,
    /// (b) The health check's PROXY header is not understood (400, or closed) while the same
    /// request without it is answered: the listener has no proxy_protocol listener filter.
    ProxyNotExpected,
    /// (c) trustip refuses the health check: a 403 with `x-trustip-reject` (missing_proxy when
    /// the rule requires PROXY and does not list the path), or the connection closed as
    /// trustip's network role or listener filter closes it.
    ProxyLocalRefused,
    /// (d) A 2xx answer.
    Healthy,
    /// (e) Any other answer: 503 (Envoy's health_check filter while draining, no healthy
    /// upstream), 404 (no route), ...
    UnhealthyStatus,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Unreachable => "unreachable",
            Cause::NoHttpAnswer => "no_http_answer",
            Cause::ProxyNotExpected => "proxy_not_expected",
            Cause::ProxyLocalRefused => "proxy_local_refused",
            Cause::Healthy => "healthy",
            Cause::UnhealthyStatus => "unhealthy_status",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Cause::Unreachable => "nothing accepts a TCP connection there",
            Cause::NoHttpAnswer => "connections are accepted, but no HTTP answer comes back",
            Cause::ProxyNotExpected => {
                "the listener does not expect the health check's PROXY header"
            }
            Cause::ProxyLocalRefused => {
                "trustip refuses the health check (it brings no client information)"
            }
            Cause::Healthy => "the health check passes",
            Cause::UnhealthyStatus => "the health check gets an answer that is not 2xx or 3xx",
        }
    }

    /// 0 healthy, 4 nothing answered HTTP (as probe's unreachable), 3 a cause found.
    pub fn exit_code(self) -> u8 {
        match self {
            Cause::Healthy => 0,
            Cause::Unreachable | Cause::NoHttpAnswer => 4,
            Cause::ProxyNotExpected | Cause::ProxyLocalRefused | Cause::UnhealthyStatus => 3,
        }
    }
}

/// What the three connections gave; `local` and `plain` are absent when the connect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observations {
    pub connect: Result<(), String>,
    pub local: Option<Outcome>,
    pub plain: Option<Outcome>,
}

/// An HTTP answer that is not trustip's rejection and not a 400: the request was understood.
fn works(outcome: &Outcome) -> Option<&Reply> {
    match outcome {
        Outcome::Response(reply) if reply.trustip_reject.is_none() && reply.status != 400 => {
            Some(reply)
        }
        _ => None,
    }
}

fn trustip_rejection(outcome: &Outcome) -> Option<&Reply> {
    match outcome {
        Outcome::Response(reply) if reply.trustip_reject.is_some() => Some(reply),
        _ => None,
    }
}

fn closed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Closed | Outcome::Reset)
}

/// The cause: a pure function of the observations.
pub fn diagnose(obs: &Observations) -> Cause {
    let (Ok(()), Some(local), Some(plain)) = (&obs.connect, &obs.local, &obs.plain) else {
        return Cause::Unreachable;
    };
    if matches!(local, Outcome::ConnectFailed(_)) {
        return Cause::Unreachable;
    }
    if trustip_rejection(local).is_some() {
        return Cause::ProxyLocalRefused;
    }
    match local {
        // 2xx and 3xx: what HAProxy's httpchk accepts by default (an NLB's matcher can too).
        Outcome::Response(reply) if (200..400).contains(&reply.status) => Cause::Healthy,
        // 400 to the PROXY request, a real answer without it (or trustip's refusal: a listener
        // without proxy_protocol in front of a require rule): the header reached the HTTP parser.
        Outcome::Response(reply)
            if reply.status == 400
                && (works(plain).is_some() || trustip_rejection(plain).is_some()) =>
        {
            Cause::ProxyNotExpected
        }
        Outcome::Response(_) => Cause::UnhealthyStatus,
        // Closed: either the listener choked on the header (the plain request works), or
        // trustip closed a connection without client information from a require rule's peer
        // (the plain request, the same thing to trustip, is closed or refused too).
        Outcome::Closed | Outcome::Reset | Outcome::Timeout | Outcome::NotHttp
            if works(plain).is_some() =>
        {
            Cause::ProxyNotExpected
        }
        Outcome::Closed | Outcome::Reset if closed(plain) || trustip_rejection(plain).is_some() => {
            Cause::ProxyLocalRefused
        }
        _ => Cause::NoHttpAnswer,
    }
}

fn version_name(carrier: Carrier) -> &'static str {
    match carrier {
        Carrier::V1Unknown => "PROXY v1 UNKNOWN",
        _ => "PROXY v2 LOCAL",
    }
}

/// A short description of what a connection gave.
fn got(outcome: &Outcome) -> String {
    match outcome {
        Outcome::ConnectFailed(err) => format!("connect failed: {err}"),
        Outcome::Closed => "closed without a reply".to_string(),
        Outcome::Reset => "reset without a reply".to_string(),
        Outcome::Timeout => "no reply in time".to_string(),
        Outcome::NotHttp => "a reply that is not HTTP".to_string(),
        Outcome::Response(reply) => match &reply.trustip_reject {
            Some(reason) => format!("{} rejected by trustip ({reason})", reply.status),
            None if reply.status == 400 => "400 Bad Request".to_string(),
            None => reply.status.to_string(),
        },
    }
}

/// Who the probe connected as: trustip picks the rule by this address.
fn source(bind: Option<IpAddr>) -> String {
    match bind {
        Some(ip) => ip.to_string(),
        None => "this host's address (--bind not given)".to_string(),
    }
}

/// The fix (first line, `fix:` or `ok:`), then notes.
pub fn advice(
    obs: &Observations,
    cause: Cause,
    path: &str,
    carrier: Carrier,
    bind: Option<IpAddr>,
) -> Vec<String> {
    let header = version_name(carrier);
    let local = obs.local.as_ref();
    let plain = obs.plain.as_ref();
    let mut out = Vec::new();
    let rule_note = format!(
        "note: trustip applies the rule whose \"from\" holds the connecting address; this probe came from {}: probe from an address of the load balancer's rule (--bind ADDR) to see what its health check sees",
        source(bind)
    );
    match cause {
        Cause::Unreachable => {
            let why = match (&obs.connect, local) {
                (Err(why), _) | (_, Some(Outcome::ConnectFailed(why))) => why.clone(),
                _ => "no connection".to_string(),
            };
            out.push(format!(
                "fix: nothing accepts a TCP connection here ({why}): point the health check at the listener's port (the traffic port), and check the listener's address and any firewall or security group between the load balancer and the gateway"
            ));
        }
        Cause::NoHttpAnswer => out.push(format!(
            "fix: the connection is accepted but neither request ({header}, or none) got an HTTP answer: wrong port? (a TLS or non-HTTP port): point the HTTP health check at the gateway's plain-HTTP listener"
        )),
        Cause::ProxyNotExpected => {
            let how = local.map(got).unwrap_or_default();
            let plain_got = plain.map(got).unwrap_or_default();
            out.push(format!(
                "fix: the gateway does not expect PROXY: the health check behind {header} got {how} while the same GET without PROXY got {plain_got}: add the proxy_protocol listener filter to the gateway (envoy.filters.listener.proxy_protocol; `trustip render` wires it) if the load balancer sends PROXY, or turn PROXY off for the load balancer's health check"
            ));
        }
        Cause::ProxyLocalRefused => {
            let reason = local
                .and_then(trustip_rejection)
                .or_else(|| plain.and_then(trustip_rejection))
                .and_then(|r| r.trustip_reject.clone());
            match reason.as_deref() {
                Some("missing_proxy") | None => out.push(format!(
                    "fix: trustip refuses the health check ({how}: {header} brings no client information and the peer's rule requires PROXY, missing_proxy): add \"health_check_paths\": [\"{path}\"] to the load balancer's require rule (then `trustip render --health-check-path {path}` answers it in Envoy)",
                    how = match local.and_then(trustip_rejection) {
                        Some(reply) => format!("{} from trustip", reply.status),
                        None => "closed without a reply".to_string(),
                    }
                )),
                Some(other) => out.push(format!(
                    "fix: trustip refuses the health check ({other}): look at the rule that holds the load balancer's address: `trustip explain --config POLICY --peer LB_ADDR:PORT --path {path}`"
                )),
            }
            out.push(rule_note);
            if reason.is_none() {
                out.push(
                    "note: a listener without the proxy_protocol listener filter closes the same way when trustip requires PROXY (Envoy never parsed the header, so P = D): make sure the listener has it".to_string(),
                );
            }
        }
        Cause::Healthy => {
            let status = match local {
                Some(Outcome::Response(reply)) => reply.status,
                _ => 0,
            };
            out.push(format!(
                "ok: the health check ({header}, GET {path}) gets {status}"
            ));
            out.push(rule_note);
        }
        Cause::UnhealthyStatus => {
            let status = match local {
                Some(Outcome::Response(reply)) => reply.status,
                _ => 0,
            };
            let mut line = format!("fix: the health check reached the gateway and got {status}: ");
            let _ = match status {
                503 => write!(
                    line,
                    "Envoy's health_check filter answers 503 while Envoy drains or after POST /healthcheck/fail on its admin; an upstream without a healthy host answers 503 too: check the gateway's readiness"
                ),
                404 => write!(
                    line,
                    "no route, or the upstream does not serve {path}: let Envoy answer it (`trustip render --health-check-path {path}`) or point the health check at a path that exists"
                ),
                _ => write!(
                    line,
                    "a load balancer wants 2xx (or the codes its matcher lists): point the health check at a path that answers 2xx"
                ),
            };
            out.push(line);
            out.push(rule_note);
        }
    }
    out
}

/// Where and how the health check is probed, for the report.
pub struct Target<'a> {
    /// HOST:PORT as given.
    pub given: &'a str,
    pub path: &'a str,
    pub bind: Option<IpAddr>,
    pub carrier: Carrier,
}

/// Runs the three connections (the last two only when the first connects) and reports.
/// `settings`: `Err(why)` when the target did not resolve.
pub fn run(
    target: &Target,
    settings: Result<&Settings, &str>,
    json_out: bool,
) -> Result<u8, CliError> {
    let carrier = target.carrier;
    let connect = match settings {
        Ok(settings) => connect_only(settings)?,
        Err(why) => Err(why.to_string()),
    };
    let mut records: Vec<Record> = Vec::new();
    if let (Ok(settings), Ok(())) = (settings, &connect) {
        records.push(send(settings, carrier, false)?);
        records.push(send(settings, Carrier::Plain, false)?);
    }
    let obs = Observations {
        connect: connect.clone(),
        local: records.first().map(|r| r.outcome.clone()),
        plain: records.get(1).map(|r| r.outcome.clone()),
    };
    let cause = diagnose(&obs);
    let advice = advice(&obs, cause, target.path, carrier, target.bind);
    let connect_sent = "TCP connect, nothing sent";
    if json_out {
        let mut probes = vec![json!({
            "name": "connect",
            "proxy": null,
            "sent": connect_sent,
            "outcome": if connect.is_ok() { "connected" } else { "connect_failed" },
            "error": connect.as_ref().err(),
        })];
        probes.extend(records.iter().map(record_json));
        let status = match &obs.local {
            Some(Outcome::Response(reply)) => Some(reply.status),
            _ => None,
        };
        let out = json!({
            "target": target.given,
            "address": settings.ok().map(|s| s.target.to_string()),
            "path": target.path,
            "host": settings.ok().map(|s| s.host.clone()),
            "bind": target.bind.map(|ip| ip.to_string()),
            "health_check": version_name(carrier),
            "cause": cause.name(),
            "meaning": cause.meaning(),
            "status": status,
            "fix": advice.first(),
            "probes": probes,
            "advice": advice,
        });
        println!("{out}");
    } else {
        let host = settings
            .ok()
            .map(|s| format!(", Host: {}", s.host))
            .unwrap_or_default();
        println!(
            "trustip probe {} --health-check {} ({}, GET {}{host}, from {})",
            target.given,
            target.path,
            version_name(carrier),
            target.path,
            source(target.bind)
        );
        let mut rows = vec![(
            "connect",
            connect_sent.to_string(),
            match &connect {
                Ok(()) => "connected".to_string(),
                Err(err) => format!("connect failed: {err}"),
            },
        )];
        for record in &records {
            rows.push((record.name(), record.sent(), got(&record.outcome)));
        }
        let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        println!();
        println!("  {:<16} {:<width$}  got", "probe", "sent");
        for (name, sent, got) in &rows {
            println!("  {name:<16} {sent:<width$}  {got}");
        }
        println!();
        println!("  cause  {}  {}", cause.name(), cause.meaning());
        println!();
        println!("advice:");
        for line in &advice {
            println!("  {line}");
        }
    }
    Ok(cause.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16) -> Outcome {
        Outcome::Response(Reply {
            status,
            trustip_reject: None,
            echoes: false,
            seen: Vec::new(),
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

    fn obs(local: Outcome, plain: Outcome) -> Observations {
        Observations {
            connect: Ok(()),
            local: Some(local),
            plain: Some(plain),
        }
    }

    use Cause::*;

    #[test]
    fn causes() {
        let cases: Vec<(&str, Observations, Cause)> = vec![
            (
                "closed port",
                Observations {
                    connect: Err("Connection refused (os error 111)".into()),
                    local: None,
                    plain: None,
                },
                Unreachable,
            ),
            (
                "refused after the first connect",
                obs(Outcome::ConnectFailed("refused".into()), reply(200)),
                Unreachable,
            ),
            (
                "no proxy_protocol: Envoy's codec answers 400",
                obs(reply(400), reply(200)),
                ProxyNotExpected,
            ),
            (
                "no proxy_protocol, the path is not routed",
                obs(reply(400), reply(404)),
                ProxyNotExpected,
            ),
            (
                "a server that closes on the header",
                obs(Outcome::Closed, reply(200)),
                ProxyNotExpected,
            ),
            (
                "a server that hangs on the header",
                obs(Outcome::Timeout, reply(204)),
                ProxyNotExpected,
            ),
            (
                "trustip's HTTP role: missing_proxy",
                obs(trustip(403, "missing_proxy"), trustip(403, "missing_proxy")),
                ProxyLocalRefused,
            ),
            (
                "trustip's HTTP role with reject_status 400",
                obs(trustip(400, "missing_proxy"), trustip(400, "missing_proxy")),
                ProxyLocalRefused,
            ),
            (
                "trustip's network role or listener filter closes both",
                obs(Outcome::Closed, Outcome::Reset),
                ProxyLocalRefused,
            ),
            (
                "closed LOCAL, the plain request refused by the HTTP role",
                obs(Outcome::Reset, trustip(403, "missing_proxy")),
                ProxyLocalRefused,
            ),
            (
                "no proxy_protocol in front of trustip's HTTP role (the plain GET is refused)",
                obs(reply(400), trustip(403, "missing_proxy")),
                ProxyNotExpected,
            ),
            (
                "a redirect, as HAProxy's httpchk accepts",
                obs(reply(302), reply(302)),
                Healthy,
            ),
            ("healthy", obs(reply(200), reply(200)), Healthy),
            (
                "healthy, while the plain request would be refused",
                obs(reply(204), trustip(403, "missing_proxy")),
                Healthy,
            ),
            ("draining", obs(reply(503), reply(503)), UnhealthyStatus),
            ("no route", obs(reply(404), reply(404)), UnhealthyStatus),
            (
                "400 with and without PROXY: not about PROXY",
                obs(reply(400), reply(400)),
                UnhealthyStatus,
            ),
            (
                "a TLS port",
                obs(Outcome::NotHttp, Outcome::NotHttp),
                NoHttpAnswer,
            ),
            (
                "silent",
                obs(Outcome::Timeout, Outcome::Timeout),
                NoHttpAnswer,
            ),
            (
                "closed, the plain request not HTTP",
                obs(Outcome::Closed, Outcome::NotHttp),
                NoHttpAnswer,
            ),
        ];
        for (name, observations, expected) in cases {
            let cause = diagnose(&observations);
            assert_eq!(cause, expected, "{name}");
            let lines = advice(
                &observations,
                cause,
                "/healthz/ready",
                Carrier::V2Local,
                None,
            );
            let first = lines.first().expect("a fix");
            assert!(
                first.starts_with(if cause == Healthy { "ok: " } else { "fix: " }),
                "{name}: {lines:?}"
            );
            assert!(
                lines.iter().all(|l| !l.contains('\n')),
                "{name}: one line each"
            );
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Healthy.exit_code(), 0);
        assert_eq!(Unreachable.exit_code(), 4);
        assert_eq!(NoHttpAnswer.exit_code(), 4);
        for cause in [ProxyNotExpected, ProxyLocalRefused, UnhealthyStatus] {
            assert_eq!(cause.exit_code(), 3);
        }
    }

    #[test]
    fn fixes_name_what_to_change() {
        let text = |o: &Observations, carrier, bind| {
            advice(o, diagnose(o), "/healthz/ready", carrier, bind).join("\n")
        };
        let refused = obs(trustip(403, "missing_proxy"), trustip(403, "missing_proxy"));
        let lb: Option<IpAddr> = Some("10.0.0.5".parse().unwrap());
        let t = text(&refused, Carrier::V2Local, lb);
        assert!(
            t.contains(r#"add "health_check_paths": ["/healthz/ready"] to the load balancer's require rule"#),
            "{t}"
        );
        assert!(t.contains("came from 10.0.0.5"), "{t}");
        assert!(
            t.contains("(403 from trustip: PROXY v2 LOCAL brings no client information and the peer's rule requires PROXY, missing_proxy)"),
            "{t}"
        );
        let t = text(
            &obs(Outcome::Closed, Outcome::Closed),
            Carrier::V1Unknown,
            None,
        );
        assert!(
            t.contains("(closed without a reply: PROXY v1 UNKNOWN brings no client information"),
            "{t}"
        );
        assert!(t.contains("--bind ADDR"), "{t}");
        assert!(
            t.contains("without the proxy_protocol listener filter"),
            "{t}"
        );
        let t = text(
            &obs(trustip(403, "denied"), trustip(403, "denied")),
            Carrier::V2Local,
            lb,
        );
        assert!(
            t.contains("(denied)") && t.contains("trustip explain"),
            "{t}"
        );
        let t = text(&obs(reply(400), reply(200)), Carrier::V2Local, None);
        assert!(
            t.contains("got 400 Bad Request while the same GET without PROXY got 200")
                && t.contains("add the proxy_protocol listener filter")
                && t.contains("turn PROXY off for the load balancer's health check"),
            "{t}"
        );
        let t = text(&obs(reply(503), reply(503)), Carrier::V2Local, None);
        assert!(t.contains("got 503") && t.contains("drains"), "{t}");
        let t = text(&obs(reply(404), reply(404)), Carrier::V2Local, None);
        assert!(t.contains("got 404") && t.contains("no route"), "{t}");
        let unreachable = Observations {
            connect: Err("Connection refused (os error 111)".into()),
            local: None,
            plain: None,
        };
        let t = text(&unreachable, Carrier::V2Local, None);
        assert!(
            t.contains("(Connection refused (os error 111))") && t.contains("port"),
            "{t}"
        );
        let t = text(&obs(reply(200), reply(200)), Carrier::V2Local, lb);
        assert!(
            t.starts_with("ok: the health check (PROXY v2 LOCAL, GET /healthz/ready) gets 200"),
            "{t}"
        );
    }
}
