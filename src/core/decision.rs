//! The trust decision's two steps. [`decide_connection`] judges the direct peer D, the
//! PROXY-derived source P and the TLVs against the rules (both roles); [`decide_request`] then
//! walks X-Forwarded-For and plans the client-IP headers (HTTP role). Callers go through
//! [`crate::core::verdict::evaluate`], which runs both and says what the glue must do.

use std::net::IpAddr;

use crate::core::addr::Peer;
use crate::core::config::{quoted, IfMissing, Mode, Policy, ProxyProtocol, XffSource};
use crate::core::headers::{plan_headers, HeaderView};
use crate::core::tlv::{decode_stored, TlvEncoding, TlvKey};
use crate::core::verdict::Outcome;
use crate::core::xff::{
    count_hops, elements_rev, forwarded_for_rev, parse_element, walk_elements, Walk, WalkEnd,
};

/// Which filter is deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `envoy.filters.network.wasm` or the native network filter: once per connection, no
    /// headers.
    Network,
    /// `envoy.filters.http.wasm` or the native HTTP filter: per request, with headers.
    Http,
    /// The native listener filter: once per connection, before any network filter; hands its
    /// decision (with the TLVs the headers need) to the HTTP filter.
    Listener,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Network => "network",
            Role::Http => "http",
            Role::Listener => "listener",
        }
    }

    /// Per connection (closes a refused connection) rather than per request.
    pub fn per_connection(self) -> bool {
        self != Role::Http
    }
}

/// What the host told us about an address input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed<T> {
    Present(T),
    Absent,
    /// Present but not an address (kept apart from absent for the logs).
    Malformed,
}

impl Observed<Peer> {
    /// From the raw property bytes, `None` meaning the property does not exist.
    pub fn from_bytes(bytes: Option<&[u8]>) -> Observed<Peer> {
        match bytes {
            None => Observed::Absent,
            Some(bytes) => Peer::parse(bytes).map_or(Observed::Malformed, Observed::Present),
        }
    }

    pub fn peer(&self) -> Option<Peer> {
        match self {
            Observed::Present(peer) => Some(*peer),
            _ => None,
        }
    }
}

/// Splits the direct-peer filter-state value. It holds D (`%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`)
/// and may also hold P after a space (`%DOWNSTREAM_REMOTE_ADDRESS%`, captured when the
/// connection opened, after PROXY processing): then one host call gives both, and P cannot be
/// altered later by the HTTP connection manager. Returns D, and P when the value carried it.
pub fn split_peers(bytes: Option<&[u8]>) -> (Observed<Peer>, Option<Peer>) {
    let Some(bytes) = bytes else {
        return (Observed::Absent, None);
    };
    let bytes = bytes.trim_ascii();
    match bytes.iter().position(|b| *b == b' ') {
        None => (Observed::from_bytes(Some(bytes)), None),
        Some(space) => {
            let (direct, source) = bytes.split_at(space);
            let direct = Observed::from_bytes(Some(direct));
            match (direct, Peer::parse_any(source)) {
                // An unspecified PROXY source is no client information: P = D.
                (Observed::Present(d), Some(p)) if p.ip.is_unspecified() => {
                    (Observed::Present(d), Some(d))
                }
                (Observed::Present(d), Some(p)) => (Observed::Present(d), Some(p)),
                // Two words, but not two addresses: the value is not what trustip expects.
                _ => (Observed::Malformed, None),
            }
        }
    }
}

/// Why a connection or request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// A PROXY header from a peer not allowed to send one (a spoofing attempt).
    UntrustedProxy,
    /// A rule requires PROXY and there was none.
    MissingProxy,
    /// A TLV the rule checks was absent, malformed or not allowed.
    Tlv,
    /// The rule denies this peer outright.
    Denied,
    /// The direct peer was not in filter state (Envoy config lacks set_filter_state).
    NoDirectPeer,
    /// A PROXY header the rule does not use (`ignore`) while Envoy sends PROXY upstream
    /// (`upstream_proxy_protocol`): the upstream would receive its unverified source.
    ProxyNotForwardable,
    /// HTTP only: the CDN's client header was missing or malformed from a proxy trusted to send
    /// it, and `client_header.fail_closed` is set.
    ClientHeader,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::UntrustedProxy,
        RejectReason::MissingProxy,
        RejectReason::Tlv,
        RejectReason::Denied,
        RejectReason::NoDirectPeer,
        RejectReason::ProxyNotForwardable,
        RejectReason::ClientHeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RejectReason::UntrustedProxy => "untrusted_proxy",
            RejectReason::MissingProxy => "missing_proxy",
            RejectReason::Tlv => "tlv",
            RejectReason::Denied => "denied",
            RejectReason::NoDirectPeer => "no_direct_peer",
            RejectReason::ProxyNotForwardable => "proxy_not_forwardable",
            RejectReason::ClientHeader => "client_header",
        }
    }

    pub fn shadow_name(self) -> &'static str {
        match self {
            RejectReason::UntrustedProxy => "shadow_untrusted_proxy",
            RejectReason::MissingProxy => "shadow_missing_proxy",
            RejectReason::Tlv => "shadow_tlv",
            RejectReason::Denied => "shadow_denied",
            RejectReason::NoDirectPeer => "shadow_no_direct_peer",
            RejectReason::ProxyNotForwardable => "shadow_proxy_not_forwardable",
            RejectReason::ClientHeader => "shadow_client_header",
        }
    }

    pub fn reject_counter_name(self) -> &'static str {
        match self {
            RejectReason::UntrustedProxy => "reject_untrusted_proxy",
            RejectReason::MissingProxy => "reject_missing_proxy",
            RejectReason::Tlv => "reject_tlv",
            RejectReason::Denied => "reject_denied",
            RejectReason::NoDirectPeer => "reject_no_direct_peer",
            RejectReason::ProxyNotForwardable => "reject_proxy_not_forwardable",
            RejectReason::ClientHeader => "reject_client_header",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Every counter trustip keeps, per role: `trustip.<role>.<name>` (see [`crate::core::names`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    AcceptProxy,
    AcceptDirect,
    /// HTTP only: the X-Forwarded-For walk moved the client past C.
    AcceptXff,
    /// A load balancer's health check (no client information, from a rule's peers, on one of
    /// its `health_check_paths` in the HTTP role).
    AcceptHealthCheck,
    /// HTTP only: R from a CDN's client header.
    AcceptClientHeader,
    Reject(RejectReason),
    Shadow(RejectReason),
    ProxyIgnored,
    /// HTTP only: incoming client headers removed by the strip step.
    HeadersStripped,
    /// HTTP only.
    XffMalformed,
    /// HTTP only.
    XffTruncated,
    /// HTTP only: a trusted proxy's client header was missing or malformed and R was kept.
    ClientHeaderInvalid,
}

impl Counter {
    /// Number of distinct counters: the length of a table indexed by [`Counter::index`].
    pub const COUNT: usize = 10 + 2 * RejectReason::ALL.len();

    /// Every counter, in index order.
    pub fn all() -> impl Iterator<Item = Counter> {
        [
            Counter::AcceptProxy,
            Counter::AcceptDirect,
            Counter::AcceptXff,
            Counter::AcceptHealthCheck,
            Counter::AcceptClientHeader,
        ]
        .into_iter()
        .chain(RejectReason::ALL.map(Counter::Reject))
        .chain(RejectReason::ALL.map(Counter::Shadow))
        .chain([
            Counter::ProxyIgnored,
            Counter::HeadersStripped,
            Counter::XffMalformed,
            Counter::XffTruncated,
            Counter::ClientHeaderInvalid,
        ])
    }

    /// The counters a role defines (the network role has no headers to walk or strip).
    pub fn for_role(role: Role) -> impl Iterator<Item = Counter> {
        Counter::all().filter(move |c| role == Role::Http || !c.http_only())
    }

    pub fn http_only(self) -> bool {
        matches!(
            self,
            Counter::AcceptXff
                | Counter::AcceptClientHeader
                | Counter::HeadersStripped
                | Counter::XffMalformed
                | Counter::XffTruncated
                | Counter::ClientHeaderInvalid
                | Counter::Reject(RejectReason::ClientHeader)
                | Counter::Shadow(RejectReason::ClientHeader)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Counter::AcceptProxy => "accept_proxy",
            Counter::AcceptDirect => "accept_direct",
            Counter::AcceptXff => "accept_xff",
            Counter::AcceptHealthCheck => "accept_health_check",
            Counter::AcceptClientHeader => "accept_client_header",
            Counter::Reject(reason) => reason.reject_counter_name(),
            Counter::Shadow(reason) => reason.shadow_name(),
            Counter::ProxyIgnored => "proxy_ignored",
            Counter::HeadersStripped => "headers_stripped",
            Counter::XffMalformed => "xff_malformed",
            Counter::XffTruncated => "xff_truncated",
            Counter::ClientHeaderInvalid => "client_header_invalid",
        }
    }

    /// Position in [`Counter::all`].
    pub fn index(self) -> usize {
        let reasons = RejectReason::ALL.len();
        match self {
            Counter::AcceptProxy => 0,
            Counter::AcceptDirect => 1,
            Counter::AcceptXff => 2,
            Counter::AcceptHealthCheck => 3,
            Counter::AcceptClientHeader => 4,
            Counter::Reject(reason) => 5 + reason.index(),
            Counter::Shadow(reason) => 5 + reasons + reason.index(),
            Counter::ProxyIgnored => 5 + 2 * reasons,
            Counter::HeadersStripped => 6 + 2 * reasons,
            Counter::XffMalformed => 7 + 2 * reasons,
            Counter::XffTruncated => 8 + 2 * reasons,
            Counter::ClientHeaderInvalid => 9 + 2 * reasons,
        }
    }
}

/// A rejection with a human detail for the logs (`aws_vpce_id "vpce-1" not allowed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: Option<String>,
}

/// Where the connection client C came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// C = P, the PROXY header's source.
    Proxy,
    /// C = D, the TCP peer.
    Direct,
    /// C = D: a health check of the load balancer a `require` rule names, which brings no
    /// client information (see [`check_health_path`] for the HTTP role).
    HealthCheck,
}

/// The verdict on a connection's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionDecision {
    pub mode: Mode,
    /// D as observed (before `if_missing` applied).
    pub direct_peer: Observed<Peer>,
    /// P, `source.address`.
    pub source: Option<Peer>,
    /// The rule that applied: its index, or `None` for the implicit last rule (or when D was
    /// unknown).
    pub rule: Option<usize>,
    /// The PROXY header was used by Envoy (P != D).
    pub proxy_present: bool,
    /// Set when the rules refuse these inputs, in enforce and in shadow mode alike.
    pub rejection: Option<Rejection>,
    /// C, the connection client; `None` only when the rejection is enforced.
    pub client: Option<IpAddr>,
    pub via: Via,
    /// PROXY information was present but dropped by an `ignore` rule.
    pub proxy_ignored: bool,
    /// Decoded TLV values of PROXY information that was used, by [`TlvKey::index`].
    pub tlvs: [Option<String>; 5],
}

impl ConnectionDecision {
    /// The rejection is enforced: refuse the connection or request.
    pub fn rejected(&self) -> bool {
        self.client.is_none()
    }

    /// The rejection only counted (shadow mode).
    pub fn shadow_rejection(&self) -> Option<RejectReason> {
        match (&self.rejection, self.client) {
            (Some(rejection), Some(_)) => Some(rejection.reason),
            _ => None,
        }
    }

    /// The outcome of the connection alone (see [`RequestDecision::outcome`] for a request).
    pub fn outcome(&self) -> Outcome {
        match (&self.rejection, self.client) {
            (Some(rejection), None) => Outcome::Rejected(rejection.reason),
            (Some(rejection), Some(_)) => Outcome::Shadow(rejection.reason),
            (None, _) => match self.via {
                Via::Proxy => Outcome::Proxy,
                Via::Direct => Outcome::Direct,
                Via::HealthCheck => Outcome::HealthCheck,
            },
        }
    }

    /// The reason published in filter state and printed by `explain`.
    pub fn reason(&self) -> &'static str {
        self.outcome().reason()
    }

    pub fn tlv(&self, key: TlvKey) -> Option<&str> {
        self.tlvs.get(key.index()).and_then(|v| v.as_deref())
    }
}

/// Gives raw TLV values (as Envoy stores them in filter state) on demand, so that only the
/// TLVs a decision needs are read from the host.
pub trait TlvSource {
    fn tlv(&mut self, key: TlvKey) -> Option<Vec<u8>>;
}

impl<F: FnMut(TlvKey) -> Option<Vec<u8>>> TlvSource for F {
    fn tlv(&mut self, key: TlvKey) -> Option<Vec<u8>> {
        self(key)
    }
}

/// Fetches each TLV at most once and decodes it.
struct TlvCache<'a, S: TlvSource> {
    source: &'a mut S,
    encoding: TlvEncoding,
    seen: [Option<Result<String, String>>; 5],
}

impl<S: TlvSource> TlvCache<'_, S> {
    /// `Ok(Some(text))`, `Ok(None)` when absent, `Err(why)` when malformed.
    fn get(&mut self, key: TlvKey) -> Result<Option<String>, String> {
        let Some(slot) = self.seen.get_mut(key.index()) else {
            return Ok(None);
        };
        if slot.is_none() {
            *slot = Some(match self.source.tlv(key) {
                None => Err(String::new()),
                Some(stored) => {
                    decode_stored(key, &stored, self.encoding).map_err(|err| err.to_string())
                }
            });
        }
        match slot {
            Some(Ok(text)) => Ok(Some(text.clone())),
            Some(Err(why)) if why.is_empty() => Ok(None),
            Some(Err(why)) => Err(why.clone()),
            None => Ok(None),
        }
    }
}

fn reject(reason: RejectReason, detail: Option<String>) -> Option<Rejection> {
    Some(Rejection { reason, detail })
}

/// Judges a connection: D (`direct_peer`), P (`source`) and, on demand, the TLVs.
pub fn decide_connection(
    policy: &Policy,
    role: Role,
    direct_peer: Observed<Peer>,
    source: Option<Peer>,
    tlvs: &mut impl TlvSource,
) -> ConnectionDecision {
    let mut decision = ConnectionDecision {
        mode: policy.mode,
        direct_peer,
        source,
        rule: None,
        proxy_present: false,
        rejection: None,
        client: None,
        via: Via::Direct,
        proxy_ignored: false,
        tlvs: Default::default(),
    };

    let direct = match (direct_peer.peer(), policy.if_missing) {
        (Some(peer), _) => Some(peer),
        (None, IfMissing::TrustSource) => source,
        (None, IfMissing::Reject) => None,
    };
    let Some(direct) = direct else {
        let detail = match direct_peer {
            Observed::Malformed => "direct peer in filter state is not an address",
            _ => "direct peer absent from filter state",
        };
        decision.rejection = reject(RejectReason::NoDirectPeer, Some(detail.to_string()));
        if policy.mode == Mode::Shadow {
            decision.client = source.map(|p| p.ip);
        }
        return decision;
    };
    let source = source.unwrap_or(direct);
    decision.proxy_present = source != direct;
    decision.rule = policy.rule_for(direct.ip);
    let rule = decision.rule.and_then(|i| policy.rules.get(i));
    let words = rule.map_or(ProxyProtocol::Reject, |r| r.proxy_protocol);

    let mut use_proxy = false;
    let mut health_check = false;
    match words {
        ProxyProtocol::Deny => decision.rejection = reject(RejectReason::Denied, None),
        // Envoy leaves the addresses as they were for a PROXY v2 LOCAL header or a v1 UNKNOWN
        // line (a load balancer's health check), so filters see them as no header at all.
        // Only with D observed: with `if_missing: trust_source` D may be P, which the client
        // can choose.
        ProxyProtocol::Require
            if !decision.proxy_present
                && direct_peer.peer().is_some()
                && rule.is_some_and(|r| !r.health_check_paths.is_empty()) =>
        {
            health_check = true
        }
        ProxyProtocol::Require if !decision.proxy_present => {
            decision.rejection = reject(RejectReason::MissingProxy, None)
        }
        ProxyProtocol::Require | ProxyProtocol::Use => use_proxy = decision.proxy_present,
        ProxyProtocol::Ignore if decision.proxy_present && policy.upstream_proxy_protocol => {
            decision.rejection = reject(
                RejectReason::ProxyNotForwardable,
                Some("an ignore rule's PROXY header would be sent upstream".to_string()),
            )
        }
        ProxyProtocol::Ignore => decision.proxy_ignored = decision.proxy_present,
        ProxyProtocol::Reject if decision.proxy_present => {
            decision.rejection = reject(RejectReason::UntrustedProxy, None)
        }
        ProxyProtocol::Reject => {}
    }

    if use_proxy {
        let mut cache = TlvCache {
            source: tlvs,
            encoding: policy.tlv_encoding,
            seen: Default::default(),
        };
        for (key, allowed) in rule.map(|r| r.tlvs.as_slice()).unwrap_or_default() {
            let detail = match cache.get(*key) {
                Ok(Some(value)) if allowed.contains(&value) => None,
                Ok(Some(value)) => Some(format!("{} {} not allowed", key.name(), quoted(&value))),
                Ok(None) => Some(format!("{} absent", key.name())),
                Err(why) => Some(format!("malformed {why}")),
            };
            if detail.is_some() {
                decision.rejection = reject(RejectReason::Tlv, detail);
                break;
            }
        }
        if decision.rejection.is_none() {
            decision.client = Some(source.ip);
            decision.via = Via::Proxy;
            // The TLV values the header mapping writes: read now by the roles that write
            // headers or hand the decision to the one that does.
            if role != Role::Network {
                for (key, _) in &policy.headers.tlv {
                    if let (Ok(value), Some(slot)) =
                        (cache.get(*key), decision.tlvs.get_mut(key.index()))
                    {
                        *slot = value;
                    }
                }
            }
            return decision;
        }
    }

    if decision.rejection.is_none() || policy.mode == Mode::Shadow {
        decision.client = Some(direct.ip);
        decision.via = if health_check {
            Via::HealthCheck
        } else {
            Via::Direct
        };
    }
    decision
}

/// HTTP role: a connection admitted as a health check carries only requests for the rule's
/// `health_check_paths`; any other request is refused as `missing_proxy`, as it would have
/// been without the field (in shadow mode it goes on with C = D). `path` is the `:path`.
pub fn check_health_path(
    policy: &Policy,
    connection: &mut ConnectionDecision,
    path: Option<&[u8]>,
) {
    if connection.via != Via::HealthCheck || connection.rejection.is_some() {
        return;
    }
    let rule = connection.rule.and_then(|i| policy.rules.get(i));
    let path = path.unwrap_or_default();
    if rule.is_some_and(|r| r.is_health_check_path(path)) {
        return;
    }
    let shown = String::from_utf8_lossy(path.get(..path.len().min(64)).unwrap_or_default());
    connection.rejection = reject(
        RejectReason::MissingProxy,
        Some(format!("{} is not a health-check path", quoted(&shown))),
    );
    connection.via = Via::Direct;
    if policy.mode == Mode::Enforce {
        connection.client = None;
    }
}

/// The verdict on a request (HTTP role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDecision {
    pub connection: ConnectionDecision,
    /// R, the client; `None` when rejected.
    pub client: Option<IpAddr>,
    /// The verified chain, R first, C last.
    pub chain: Vec<IpAddr>,
    pub walk_end: WalkEnd,
    /// Incoming headers the strip step removed.
    pub stripped: u32,
    /// What the CDN's client header gave (`client_header`).
    pub client_header: HeaderUse,
}

/// The CDN's client header on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderUse {
    /// Not configured, or R is not a proxy trusted to send it (it is removed).
    NotTrusted,
    /// R came from it.
    Used,
    /// From a trusted proxy but missing or malformed: R kept (or refused, `fail_closed`).
    Invalid,
}

impl RequestDecision {
    pub fn rejected(&self) -> bool {
        self.connection.rejected()
    }

    /// The walk moved the client past C.
    pub fn moved(&self) -> bool {
        self.client.is_some() && self.client != self.connection.client
    }

    /// `Xff` when the walk moved the client past C (and nothing was shadow-rejected); otherwise
    /// the connection's outcome.
    pub fn outcome(&self) -> Outcome {
        match self.connection.outcome() {
            Outcome::Proxy | Outcome::Direct if self.client_header == HeaderUse::Used => {
                Outcome::ClientHeader
            }
            Outcome::Proxy | Outcome::Direct if self.moved() => Outcome::Xff,
            other => other,
        }
    }

    pub fn reason(&self) -> &'static str {
        self.outcome().reason()
    }
}

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Walks X-Forwarded-For (or `Forwarded`) from the connection client, applies a CDN's client
/// header, and plans the request-header changes into `view`. Reads each header only when the
/// walk, the client header or the append mode needs it.
pub fn decide_request<'p, R: FnMut(&str) -> Option<Vec<u8>>>(
    policy: &'p Policy,
    mut connection: ConnectionDecision,
    view: &mut HeaderView<'p, R>,
) -> RequestDecision {
    let refused = |connection| RequestDecision {
        connection,
        client: None,
        chain: Vec::new(),
        walk_end: WalkEnd::NotTrusted,
        stripped: 0,
        client_header: HeaderUse::NotTrusted,
    };
    let Some(c) = connection.client else {
        return refused(connection);
    };
    // A health check brings no client information: its X-Forwarded-For is never walked (R = C),
    // and the client headers it carries are stripped as from an untrusted client.
    let trusted = connection.via != Via::HealthCheck && policy.xff_trusts(c);
    let value = if trusted {
        view.incoming(policy.xff_source.header())
            .map(<[u8]>::to_vec)
    } else {
        None
    };
    let hops = policy.xff_hops;
    let mut outcome = match &value {
        _ if !trusted => Walk::none(c, WalkEnd::NotTrusted),
        None if hops > 0 => Walk::none(c, WalkEnd::Short),
        None => Walk::none(c, WalkEnd::AllTrusted),
        Some(value) => {
            let lines = std::slice::from_ref(value);
            let (mut xff, mut forwarded);
            let elements: &mut dyn Iterator<Item = &[u8]> = match policy.xff_source {
                XffSource::XForwardedFor => {
                    xff = elements_rev(lines);
                    &mut xff
                }
                XffSource::Forwarded => {
                    forwarded = forwarded_for_rev(lines);
                    &mut forwarded
                }
            };
            match hops {
                0 => walk_elements(c, elements, policy.xff_table(), policy.xff_max_entries),
                n => count_hops(c, elements, n),
            }
        }
    };

    // A CDN's client header: R moves to its address when R is a proxy trusted to send it.
    let mut client_header = HeaderUse::NotTrusted;
    if let Some(header) = &policy.client_header {
        // A health check brings no client information, in any header.
        if connection.via != Via::HealthCheck && header.trusted.contains(outcome.client) {
            // One address: a list (`a, b`) is not one, and parse_element refuses it.
            let given = view.incoming(&header.name).and_then(parse_element);
            match given {
                Some(ip) => {
                    client_header = HeaderUse::Used;
                    if outcome.chain.first() != Some(&ip) {
                        outcome.chain.insert(0, ip);
                        outcome.texts.insert(0, None);
                    }
                    outcome.client = ip;
                }
                None => {
                    client_header = HeaderUse::Invalid;
                    // In shadow mode an earlier would-be rejection is the one reported.
                    if header.fail_closed && connection.rejection.is_none() {
                        connection.rejection = Some(Rejection {
                            reason: RejectReason::ClientHeader,
                            detail: Some(format!(
                                "{} missing or not one address from {}",
                                header.name, outcome.client
                            )),
                        });
                        if policy.mode == Mode::Enforce {
                            connection.client = None;
                            return refused(connection);
                        }
                    }
                }
            }
        }
    }
    let stripped = plan_headers(policy, &connection, trusted, &outcome, client_header, view);
    RequestDecision {
        connection,
        client: Some(outcome.client),
        chain: outcome.chain,
        walk_end: outcome.end,
        stripped,
        client_header,
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "sources_tests.rs"]
mod sources_tests;
