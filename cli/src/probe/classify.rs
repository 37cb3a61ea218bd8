//! The verdict: what the probes' outcomes say about the listener, and the advice that follows.
//! A pure function of the observed outcomes ([`classify`]), unit-tested without a network.

use super::wire::Carrier;

/// A value the probe planted, to look for in what the upstream echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// The source address claimed in the PROXY header.
    ProxySource,
    XForwardedFor,
    XRealIp,
}

impl Planted {
    pub(super) fn name(self) -> &'static str {
        match self {
            Planted::ProxySource => "proxy_source",
            Planted::XForwardedFor => "x-forwarded-for",
            Planted::XRealIp => "x-real-ip",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Planted::ProxySource => "claimed address",
            Planted::XForwardedFor => "forged X-Forwarded-For",
            Planted::XRealIp => "forged X-Real-IP",
        }
    }
}

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
    pub(super) fn word(&self) -> &'static str {
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

    pub(super) fn meaning(self) -> &'static str {
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
}
