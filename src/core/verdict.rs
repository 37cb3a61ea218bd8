//! The one entry point: [`evaluate`] reads what the policy needs through a [`Host`] and returns
//! a [`Verdict`] that says everything the glue must do (outcome, header plan, values to publish,
//! counters, log line). The wasm glue, the command line's `explain` and the tests all call it,
//! so none of them chains the decision's steps on its own.

use std::net::IpAddr;

use crate::core::addr::{push_ip, Peer};
use crate::core::config::{quoted, Policy};
use crate::core::decision::{
    check_health_path, decide_connection, decide_request, split_peers, ConnectionDecision, Counter,
    HeaderUse, Observed, RejectReason, RequestDecision, Role, Via,
};
use crate::core::headers::{HeaderOp, HeaderView};
use crate::core::names;
use crate::core::tlv::TlvKey;
use crate::core::xff::WalkEnd;

/// What the core may read from Envoy. Every method is one host call in the wasm build; the core
/// calls each at most once per decision, and only for inputs the policy needs.
pub trait Host {
    /// The filter-state object named by `direct_peer.filter_state`: D, optionally followed by a
    /// space and P.
    fn direct_peer(&mut self, key: &str) -> Option<Vec<u8>>;
    /// `source.address`: P, the client after Envoy applied any PROXY header.
    fn source(&mut self) -> Option<Vec<u8>>;
    /// A request header's value (repeated lines joined with `,`), as bytes.
    fn header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// A PROXY TLV as Envoy stored it.
    fn tlv(&mut self, key: TlvKey) -> Option<Vec<u8>>;
}

/// The outcome, from which the published reason follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// C = P, from a PROXY header the rule allows.
    Proxy,
    /// C = D, the TCP peer.
    Direct,
    /// The X-Forwarded-For walk moved the client past C (HTTP role).
    Xff,
    /// C = D: the load balancer's own health check (no client information, from the peers of
    /// a `require` rule with `health_check_paths`).
    HealthCheck,
    /// R from a CDN's client header, sent by a proxy trusted for it (HTTP role).
    ClientHeader,
    /// Refused: the connection is closed or the request answered locally.
    Rejected(RejectReason),
    /// Would be refused in enforce mode; proceeds (shadow mode).
    Shadow(RejectReason),
}

impl Outcome {
    /// The reason published in filter state and in the reject header.
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Proxy => "proxy",
            Outcome::Direct => "direct",
            Outcome::Xff => "xff",
            Outcome::HealthCheck => "health_check",
            Outcome::ClientHeader => "client_header",
            Outcome::Rejected(reason) => reason.name(),
            Outcome::Shadow(reason) => reason.shadow_name(),
        }
    }
}

/// What the glue does with the connection or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through (after applying the header plan).
    Continue,
    /// Listener and network roles: close the connection before any byte goes further.
    Close,
    /// HTTP role: answer locally with this status, [`names::REJECT_HEADER`] carrying the reason.
    Respond { status: u16 },
}

/// The walk's part of a verdict (HTTP role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPart {
    /// The verified chain, R first, C last.
    pub chain: Vec<IpAddr>,
    pub walk_end: WalkEnd,
    /// What the CDN's client header gave.
    pub client_header: HeaderUse,
}

/// Everything the glue must do, and everything `explain` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'p> {
    pub role: Role,
    pub outcome: Outcome,
    pub action: Action,
    /// Request-header changes, in order (empty for the network role and for rejections).
    pub headers: Vec<HeaderOp<'p>>,
    /// The client to publish: R (HTTP) or C (network); `None` for an enforced rejection.
    pub client: Option<IpAddr>,
    /// Counters to increment, with the amount.
    pub counters: Vec<(Counter, u32)>,
    /// The info line for a rejection, enforced or shadow (the glue prefixes its context).
    pub log: Option<String>,
    /// A configuration hint for the operator (the direct peer is missing), worth one warning.
    pub hint: Option<String>,
    /// The connection-level details (rule, D, P, C, TLVs), for `explain`.
    pub connection: ConnectionDecision,
    /// The walk's details (HTTP role, when not rejected).
    pub request: Option<RequestPart>,
}

impl Verdict<'_> {
    pub fn reason(&self) -> &'static str {
        self.outcome.reason()
    }

    /// The client as published (`trustip.client_ip`) and written into headers.
    pub fn client_text(&self) -> Option<Vec<u8>> {
        self.client.map(|ip| {
            let mut text = Vec::with_capacity(40);
            push_ip(&mut text, ip);
            text
        })
    }

    /// The log line as the glue writes it, for a given context id.
    pub fn log_line(&self, context_id: u32) -> Option<String> {
        self.log
            .as_ref()
            .map(|line| format!("trustip[{} ctx {context_id}]: {line}", self.role.name()))
    }

    /// The full counter names (`trustip.<role>.<counter>`) with amounts.
    pub fn counter_names(&self) -> Vec<(String, u32)> {
        self.counters
            .iter()
            .map(|(counter, by)| (names::metric_name(self.role, *counter), *by))
            .collect()
    }
}

/// Decides: reads D and P, the TLVs and the request headers the policy needs from `host`, and
/// returns what to do.
pub fn evaluate<'p>(policy: &'p Policy, role: Role, host: &mut impl Host) -> Verdict<'p> {
    let stored = host.direct_peer(&policy.direct_peer_key);
    let (direct, source) = split_peers(stored.as_deref());
    let source = match source {
        Some(source) => Some(source),
        None => host.source().as_deref().and_then(Peer::parse),
    };
    let connection = decide_connection(policy, role, direct, source, &mut |key| host.tlv(key));
    carry_on(policy, role, host, connection)
}

/// The HTTP role's verdict on a request of a connection already decided by the listener
/// filter (native build): the connection part is taken as is, the request part is decided.
pub fn evaluate_request<'p>(
    policy: &'p Policy,
    connection: ConnectionDecision,
    host: &mut impl Host,
) -> Verdict<'p> {
    carry_on(policy, Role::Http, host, connection)
}

/// From a connection decision to the role's verdict.
fn carry_on<'p>(
    policy: &'p Policy,
    role: Role,
    host: &mut impl Host,
    mut connection: ConnectionDecision,
) -> Verdict<'p> {
    if role == Role::Http && connection.via == Via::HealthCheck {
        let path = host.header(names::PATH_HEADER);
        check_health_path(policy, &mut connection, path.as_deref());
    }
    // The request step (HTTP role), which can refuse too (`client_header.fail_closed`).
    let mut request = None;
    if role == Role::Http && !connection.rejected() {
        let mut view = HeaderView::new(|name: &str| host.header(name));
        let decision = decide_request(policy, connection, &mut view);
        let (outcome, moved) = (decision.outcome(), decision.moved());
        let RequestDecision {
            connection: decided,
            client,
            chain,
            walk_end,
            stripped,
            client_header,
        } = decision;
        connection = decided;
        request = Some((
            outcome,
            moved,
            client,
            chain,
            walk_end,
            stripped,
            client_header,
            view.ops,
        ));
    }

    let log = rejection_log(&connection);
    let hint = match (&connection.rejection, connection.direct_peer) {
        (Some(_), Observed::Absent | Observed::Malformed) => {
            Some(no_direct_peer_hint(&policy.direct_peer_key))
        }
        _ => None,
    };
    let mut counters = Vec::with_capacity(4);
    if connection.proxy_ignored {
        counters.push((Counter::ProxyIgnored, 1));
    }
    let via = connection.via;
    match connection.outcome() {
        Outcome::Rejected(reason) => {
            counters.push((Counter::Reject(reason), 1));
            return Verdict {
                role,
                outcome: Outcome::Rejected(reason),
                action: if role.per_connection() {
                    Action::Close
                } else {
                    Action::Respond {
                        status: policy.reject_status,
                    }
                },
                headers: Vec::new(),
                client: None,
                counters,
                log,
                hint,
                connection,
                request: None,
            };
        }
        Outcome::Shadow(reason) => counters.push((Counter::Shadow(reason), 1)),
        _ => {}
    }

    let Some((outcome, moved, client, chain, walk_end, stripped, client_header, headers)) = request
    else {
        // A per-connection role.
        counters.push((accept_counter(via, false, HeaderUse::NotTrusted), 1));
        return Verdict {
            role,
            outcome: connection.outcome(),
            action: Action::Continue,
            headers: Vec::new(),
            client: connection.client,
            counters,
            log,
            hint,
            connection,
            request: None,
        };
    };
    if stripped > 0 {
        counters.push((Counter::HeadersStripped, stripped));
    }
    match walk_end {
        WalkEnd::Malformed => counters.push((Counter::XffMalformed, 1)),
        WalkEnd::Limit => counters.push((Counter::XffTruncated, 1)),
        _ => {}
    }
    let refused_header =
        matches!(&connection.rejection, Some(r) if r.reason == RejectReason::ClientHeader);
    if client_header == HeaderUse::Invalid && !refused_header {
        counters.push((Counter::ClientHeaderInvalid, 1));
    }
    counters.push((accept_counter(via, moved, client_header), 1));
    Verdict {
        role,
        outcome,
        action: Action::Continue,
        headers,
        client,
        counters,
        log,
        hint,
        connection,
        request: Some(RequestPart {
            chain,
            walk_end,
            client_header,
        }),
    }
}

/// The one accept counter of an accepted decision.
fn accept_counter(via: Via, moved: bool, client_header: HeaderUse) -> Counter {
    match (client_header, moved, via) {
        (HeaderUse::Used, _, _) => Counter::AcceptClientHeader,
        (_, true, _) => Counter::AcceptXff,
        (_, false, Via::Proxy) => Counter::AcceptProxy,
        (_, false, Via::Direct) => Counter::AcceptDirect,
        (_, false, Via::HealthCheck) => Counter::AcceptHealthCheck,
    }
}

/// The body of the local reply that refuses a request.
pub fn local_reply_body(reason: &str) -> String {
    format!("trustip: rejected ({reason})\n")
}

/// `reject untrusted_proxy (detail): direct_peer=... source=... rule=...`, or the shadow form.
fn rejection_log(decision: &ConnectionDecision) -> Option<String> {
    let rejection = decision.rejection.as_ref()?;
    let direct = match decision.direct_peer {
        Observed::Present(peer) => peer.to_string(),
        Observed::Absent => "absent".to_string(),
        Observed::Malformed => "malformed".to_string(),
    };
    let source = decision
        .source
        .map_or_else(|| "absent".to_string(), |p| p.to_string());
    let rule = decision
        .rule
        .map_or_else(|| "implicit".to_string(), |i| i.to_string());
    let what = if decision.rejected() {
        "reject"
    } else {
        "shadow reject (not enforced)"
    };
    let detail = rejection
        .detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    Some(format!(
        "{what} {}{detail}: direct_peer={direct} source={source} rule={rule}",
        rejection.reason.name(),
    ))
}

/// What to change when the direct peer is not in filter state.
pub fn no_direct_peer_hint(key: &str) -> String {
    format!(
        "trustip: no direct peer in filter state {key}: add the envoy.filters.network.set_filter_state network filter (object_key {key}, factory_key envoy.string, format_string \"{format}\", on_new_connection) before trustip, or set direct_peer.if_missing to trust_source if only the load balancer can reach this listener",
        key = quoted(key),
        format = names::DIRECT_PEER_FORMAT,
    )
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
