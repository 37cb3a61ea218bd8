//! The text report and the `--json` object.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use super::classify::{Outcome, Verdict};
use super::wire::{Carrier, Record, Settings, SPOOFED_REAL_IP, SPOOFED_XFF};
use super::ProbeArgs;

impl Record {
    pub(super) fn name(&self) -> &'static str {
        if self.forged {
            "spoofed-xff"
        } else {
            self.carrier.name()
        }
    }

    pub(super) fn sent(&self) -> String {
        let mut text = match (self.carrier, self.claim) {
            (Carrier::V2Local, _) => "PROXY v2 LOCAL (no addresses)".to_string(),
            (Carrier::V1Unknown, _) => "PROXY v1 UNKNOWN (no addresses)".to_string(),
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

pub(super) fn record_json(record: &Record) -> Value {
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
        "proxy": record.carrier.version(),
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

/// The text report.
pub(super) fn print_text(
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

/// The `--json` object, on one line.
pub(super) fn print_json(
    args: &ProbeArgs,
    settings: Option<&Settings>,
    records: &[Record],
    verdict: &Verdict,
    advice: &[String],
) {
    let out = json!({
        "target": args.target,
        "address": settings.map(|s| s.target.to_string()),
        "path": args.path,
        "host": settings.map(|s| s.host.clone()),
        "listener": verdict.listener.name(),
        "proxy_spoofable": verdict.proxy_spoofable,
        "xff_spoofable": verdict.xff_spoofable,
        "probes": records.iter().map(record_json).collect::<Vec<_>>(),
        "advice": advice,
    });
    println!("{out}");
}
