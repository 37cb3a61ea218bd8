//! Target `native`: the native module's safe glue (listener, network and HTTP filters and
//! their configuration) over in-memory implementations of the [`super::ops`] traits, fed what
//! Envoy hands the ABI hooks: configuration bytes, address texts (not UTF-8 becomes absent, as
//! in `abi.rs`), ports, dynamic-metadata strings, proxy_protocol's TLV filter state, filter
//! state written by set_filter_state or a listener, and header values that need not be UTF-8.
//!
//! Input fields (split at `\n`): 0 control bytes (0 the policy, modulo 8: one of the decision
//! target's fixed policies, or 7 the configuration in field 1; 1 the flow: listener then HTTP,
//! HTTP alone, network, listener alone, HTTP after an unreadable hand-off; 2 presence bits: the
//! peer, the remote address, the TLV filter state, the HTTP filter's peer and source, a wrong
//! `filter_name`, Envoy refusing to set the remote address; 3 which TLVs are in the dynamic
//! metadata; 4-7 and 8-11 the peer's and the remote's ports), 1 the configuration, 2 and 3 the
//! peer's and the remote's IP text, 4-8 the five TLVs' metadata strings, 9 the TLV filter
//! state, 10 and 11 the HTTP filter's `ip:port` of the peer and `source.address`, 12 filter
//! state (the direct-peer value for the HTTP filter alone, the hand-off otherwise), then one
//! request header per field, `name: value`.
//!
//! Checked: nothing panics; a refused configuration is one line; a connection is closed
//! exactly when the filter says stop, publishes no client then, and otherwise publishes C,
//! which is the peer, or the remote address only when the peer's rule trusts PROXY (or the
//! peer is unknown and the policy lets P stand in); the remote address is set to C and only to
//! C; the hand-off decodes with the same policy; the HTTP filter answers locally exactly when
//! it stops, with the reason in `x-trustip-reject`, leaving the headers as they came; the
//! client it publishes is an address of its inputs and every `set` header carries it; counters
//! only with the ids defined; every log line is one line.

use std::net::IpAddr;

use super::config::NativeConfig;
use super::ops::{Address, ConnectionOps, HttpOps, ListenerOps};
use super::{http, listener, network};
use crate::core::decision::{Counter, Role};
use crate::core::headers::HeaderList;
use crate::core::names;
use crate::core::tlv::TlvKey;
use crate::core::verdict::local_reply_body;
use crate::fuzz_checks::decision::{peers, std_peer, text, Reference, FIXED};
use crate::fuzz_checks::reference;
use crate::fuzz_checks::{byte, ensure, fields, shown};

#[derive(Default)]
struct FakeConnection {
    direct: Option<Address>,
    remote: Option<Address>,
    metadata: Vec<(String, Vec<u8>)>,
    tlv_state: Option<Vec<u8>>,
    refuse_set_remote: bool,
    state: Vec<(String, Vec<u8>)>,
    closed: Option<String>,
    set_remote: Vec<(IpAddr, u32)>,
    counters: Vec<(usize, u64)>,
}

impl FakeConnection {
    fn state(&self, key: &str) -> Option<&[u8]> {
        self.state
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

impl ConnectionOps for FakeConnection {
    fn direct_remote(&mut self) -> Option<Address> {
        self.direct.clone()
    }
    fn remote(&mut self) -> Option<Address> {
        self.remote.clone()
    }
    fn metadata_string(&mut self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        if namespace != names::PROXY_PROTOCOL_METADATA {
            return None;
        }
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn filter_state_typed(&mut self, key: &str) -> Option<Vec<u8>> {
        (key == names::TLV_FILTER_STATE)
            .then(|| self.tlv_state.clone())
            .flatten()
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        self.state.push((key.to_string(), value.to_vec()));
    }
    fn close(&mut self, details: &str) {
        self.closed = Some(details.to_string());
    }
    fn increment(&mut self, counter_id: usize, by: u64) {
        self.counters.push((counter_id, by));
    }
}

impl ListenerOps for FakeConnection {
    fn set_remote(&mut self, ip: IpAddr, port: u32) -> bool {
        self.set_remote.push((ip, port));
        !self.refuse_set_remote
    }
}

/// A local reply: status, headers, body.
pub(crate) type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// The HTTP filter's host, in memory (also the HTTP filter's unit tests' fake).
#[derive(Default)]
pub(crate) struct FakeStream {
    pub(crate) direct: Option<Vec<u8>>,
    pub(crate) source: Option<Vec<u8>>,
    pub(crate) headers: HeaderList,
    pub(crate) state: Vec<(String, Vec<u8>)>,
    pub(crate) tlv_state: Option<Vec<u8>>,
    pub(crate) response: Option<Response>,
    pub(crate) counters: Vec<(usize, u64)>,
    /// A `set_header` with an empty value (Envoy would remove the header instead).
    pub(crate) empty_set: bool,
}

impl HttpOps for FakeStream {
    fn direct_remote(&mut self) -> Option<Vec<u8>> {
        self.direct.clone()
    }
    fn source_address(&mut self) -> Option<Vec<u8>> {
        self.source.clone()
    }
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.headers.get(name)
    }
    fn set_header(&mut self, name: &str, value: &[u8]) {
        self.empty_set |= value.is_empty();
        self.headers.set(name, value);
    }
    fn remove_header(&mut self, name: &str) {
        self.headers.remove(name);
    }
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.response = Some((status, headers, body.to_vec()));
    }
    fn filter_state_bytes(&mut self, key: &str) -> Option<Vec<u8>> {
        self.state
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn filter_state_typed(&mut self, key: &str) -> Option<Vec<u8>> {
        (key == names::TLV_FILTER_STATE)
            .then(|| self.tlv_state.clone())
            .flatten()
    }
    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        self.state.push((key.to_string(), value.to_vec()));
    }
    fn increment(&mut self, counter_id: usize, by: u64) {
        self.counters.push((counter_id, by));
    }
}

/// A filter configuration as `config_new` builds it; `Ok(None)` for a refused one (after
/// checking the refusal is one line).
fn configure(role: Role, name: &[u8], config: &[u8]) -> Result<Option<NativeConfig>, String> {
    let mut defined = 0usize;
    match NativeConfig::new(role, name, config, |_| {
        defined += 1;
        Some(defined - 1)
    }) {
        Ok(config) => {
            ensure(defined == Counter::for_role(role).count(), || {
                format!("{defined} counters defined for the {} filter", role.name())
            })?;
            Ok(Some(config))
        }
        Err(line) => {
            ensure(
                line.starts_with("trustip: invalid configuration: ")
                    && !line.chars().any(char::is_control),
                || format!("refusal {line:?}"),
            )?;
            Ok(None)
        }
    }
}

fn counters_valid(role: Role, counters: &[(usize, u64)]) -> Result<(), String> {
    let defined = Counter::for_role(role).count();
    ensure(
        counters.iter().all(|(id, by)| *id < defined && *by >= 1),
        || format!("counters {counters:?} (ids below {defined})"),
    )
}

fn clean_lines(lines: &[String]) -> Result<(), String> {
    ensure(
        lines.iter().all(|l| !l.chars().any(char::is_control)),
        || format!("log lines {lines:?}"),
    )
}

/// An address as Envoy's ABI hands it: the IP text (not UTF-8: absent) and a port.
fn address(ip: Option<&[u8]>, port: u32) -> Option<Address> {
    let ip = String::from_utf8(ip?.to_vec()).ok()?;
    Some(Address { ip, port })
}

fn port(control: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([
        byte(control, at),
        byte(control, at + 1),
        byte(control, at + 2),
        byte(control, at + 3),
    ])
}

/// C published by a per-connection filter is the peer, or P only as the rules allow.
fn connection_client(
    reference: &Reference,
    config: &NativeConfig,
    connection: &FakeConnection,
) -> Result<Option<IpAddr>, String> {
    let direct = connection.direct.as_ref().map(Address::to_peer_text);
    let remote = connection.remote.as_ref().map(Address::to_peer_text);
    let value = direct.as_ref().map(|d| match &remote {
        Some(r) => format!("{d} {r}"),
        None => d.clone(),
    });
    let (d_peer, p_peer) = peers(
        value.as_deref().map(str::as_bytes),
        remote.as_deref().map(str::as_bytes),
    );
    let (d, p) = (d_peer.map(|x| x.0), p_peer.map(|x| x.0));
    let published = connection.state(names::CONNECTION_CLIENT_IP_STATE);
    let Some(published) = published else {
        return Ok(None);
    };
    let c = std_peer(published).ok_or_else(|| format!("published client {}", shown(published)))?;
    if Some(c) != d {
        let policy = &config.policy;
        let standin = d.is_none()
            && (policy.if_missing == crate::core::config::IfMissing::TrustSource
                || policy.mode == crate::core::config::Mode::Shadow);
        let word = d
            .and_then(|d| reference.rule(d))
            .map_or("reject", |(_, w)| w);
        let trusted = d.is_some() && p_peer != d_peer && matches!(word, "require" | "use");
        ensure(Some(c) == p && (standin || trusted), || {
            format!("C {c}: peer {d:?}, remote {p:?}, rule {word}")
        })?;
    }
    Ok(Some(c))
}

fn per_connection(
    reference: &Reference,
    config: &NativeConfig,
    role: Role,
    connection: &mut FakeConnection,
) -> Result<(bool, Vec<String>), String> {
    let mut lines = Vec::new();
    let go_on = match role {
        Role::Listener => {
            listener::on_accept(config, connection, &mut |l: &str| lines.push(l.to_string()))
        }
        _ => {
            network::on_new_connection(config, connection, &mut |l: &str| lines.push(l.to_string()))
        }
    };
    clean_lines(&lines)?;
    counters_valid(role, &connection.counters)?;
    ensure(go_on == connection.closed.is_none(), || {
        format!("went on {go_on}, closed {:?}", connection.closed)
    })?;
    let c = connection_client(reference, config, connection)?;
    if !go_on {
        ensure(
            connection.state(names::DECISION_FILTER_STATE).is_none() && c.is_none(),
            || "a closed connection handed a decision or a client on".to_string(),
        )?;
        return Ok((go_on, lines));
    }
    let c = c.ok_or("an open connection without a published client")?;
    // The remote address becomes C, and nothing else.
    ensure(connection.set_remote.iter().all(|(ip, _)| *ip == c), || {
        format!("remote set to {:?}, C is {c}", connection.set_remote)
    })?;
    if role == Role::Listener {
        let remote_ip = connection
            .remote
            .as_ref()
            .and_then(|r| std_peer(r.to_peer_text().as_bytes()))
            .filter(|ip| !ip.is_unspecified());
        ensure(
            connection.set_remote.is_empty() == (remote_ip == Some(c)),
            || {
                format!(
                    "remote {remote_ip:?}, C {c}, set {:?}",
                    connection.set_remote
                )
            },
        )?;
        let handed = connection
            .state(names::DECISION_FILTER_STATE)
            .ok_or("no hand-off from an open listener")?;
        let decoded = crate::core::handoff::decode(&config.policy, config.fingerprint, handed);
        ensure(decoded.is_ok(), || {
            format!("hand-off {} refused: {decoded:?}", shown(handed))
        })?;
    }
    Ok((go_on, lines))
}

/// Every address the HTTP filter could have been handed, as std and the reference readers
/// read them: the peers, and each comma-separated element and `for=` value of every header
/// line and of every header's lines joined (as the core reads them). `for=` values are the
/// reference reader's where it is defined, else every candidate of
/// [`reference::forwarded_candidates`].
fn input_addresses(stream: &FakeStream, extra: &[Option<IpAddr>]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = extra.iter().flatten().copied().collect();
    for value in [&stream.direct, &stream.source].into_iter().flatten() {
        out.extend(std_peer(value));
    }
    for (_, value) in &stream.state {
        out.extend(value.split(|b| *b == b' ').filter_map(std_peer));
    }
    let entries = stream.headers.entries();
    let mut values: Vec<Vec<u8>> = entries.iter().map(|(_, value)| value.clone()).collect();
    for (name, _) in entries {
        let lines: Vec<&[u8]> = entries
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect();
        values.push(lines.join(&b","[..]));
    }
    for value in &values {
        out.extend(value.split(|b| *b == b',').filter_map(reference::element));
        let forwarded = reference::forwarded_walked(value)
            .unwrap_or_else(|| reference::forwarded_candidates(value));
        out.extend(forwarded.iter().filter_map(|v| reference::element(v)));
    }
    out.into_iter().map(reference::canonical).collect()
}

fn http_filter(
    config: &NativeConfig,
    stream: &mut FakeStream,
    connection_c: Option<IpAddr>,
    reference: &Reference,
) -> Result<(), String> {
    let before = stream.headers.clone();
    let candidates = input_addresses(stream, &[connection_c]);
    let mut lines = Vec::new();
    let go_on = http::on_request_headers(config, stream, &mut |l: &str| lines.push(l.to_string()));
    clean_lines(&lines)?;
    counters_valid(Role::Http, &stream.counters)?;
    ensure(!stream.empty_set, || {
        "a header set to an empty value".to_string()
    })?;
    let reason = stream
        .filter_state_bytes(names::REASON_PROPERTY)
        .ok_or("no reason published")?;
    let client = stream.filter_state_bytes(names::CLIENT_IP_PROPERTY);
    match (&stream.response, go_on) {
        (Some((status, headers, body)), false) => {
            let reason = String::from_utf8_lossy(&reason).into_owned();
            ensure(
                *status == config.policy.reject_status
                    && headers.contains(&(names::REJECT_HEADER.to_string(), reason.clone()))
                    && *body == local_reply_body(&reason).into_bytes()
                    && stream.headers == before
                    && client.is_none(),
                || format!("refusal {status} {headers:?} with reason {reason}"),
            )
        }
        (None, true) => {
            let client = client.ok_or("a request let through without a client")?;
            let r = std_peer(&client).ok_or_else(|| format!("client {}", shown(&client)))?;
            ensure(candidates.contains(&r), || {
                format!("R {r} is none of the inputs' addresses {candidates:?}")
            })?;
            for name in &config.policy.headers.set {
                let value = stream.headers.get(name);
                ensure(value.as_deref() == Some(&text(r)[..]), || {
                    format!("{name}: {:?}, R {r}", value.as_deref().map(shown))
                })?;
            }
            // From the listener's C: R moves only from a C trusted for X-Forwarded-For or,
            // through its client header, one trusted for that.
            if let Some(c) = connection_c {
                let moved_ok =
                    crate::fuzz_checks::reference::any_contains(&reference.xff_trusted, c)
                        || config.policy.client_header.is_some();
                ensure(r == c || moved_ok, || format!("R {r} from untrusted C {c}"))?;
            }
            Ok(())
        }
        (response, go_on) => Err(format!("went on {go_on} with response {response:?}")),
    }
}

fn header_fields<'a>(parts: &[&'a [u8]]) -> Vec<(String, &'a [u8])> {
    parts
        .iter()
        .filter_map(|header| {
            let at = header.windows(2).position(|w| w == b": ")?;
            let name = header.get(..at)?;
            let value = header.get(at + 2..)?;
            (!name.is_empty()).then(|| (String::from_utf8_lossy(name).into_owned(), value))
        })
        .collect()
}

pub fn check(data: &[u8]) -> Result<(), String> {
    let parts = fields(data);
    let field = |i: usize| parts.get(i).copied();
    let control = field(0).unwrap_or_default();
    let flags = byte(control, 2);
    let config_text: &[u8] = match FIXED.get(usize::from(byte(control, 0) % 8)) {
        Some(text) => text.as_bytes(),
        None => field(1).unwrap_or_default(),
    };
    let flow = byte(control, 1) % 5;
    let wrong_name = flags & 32 != 0;
    let name = |role: Role| {
        if wrong_name {
            b"trustip-other".to_vec()
        } else {
            super::config::filter_name(role).as_bytes().to_vec()
        }
    };
    let reference = std::str::from_utf8(config_text)
        .ok()
        .and_then(Reference::from_json)
        .unwrap_or(Reference {
            rules: Vec::new(),
            xff_trusted: Vec::new(),
            header_trusted: Vec::new(),
        });

    let mut connection = FakeConnection {
        direct: (flags & 1 != 0)
            .then(|| address(field(2), port(control, 4)))
            .flatten(),
        remote: (flags & 2 != 0)
            .then(|| address(field(3), port(control, 8)))
            .flatten(),
        tlv_state: (flags & 4 != 0).then(|| field(9).unwrap_or_default().to_vec()),
        refuse_set_remote: flags & 64 != 0,
        ..FakeConnection::default()
    };
    for key in TlvKey::ALL {
        if byte(control, 3) & (1 << key.index()) != 0 {
            let value = field(4 + key.index()).unwrap_or_default().to_vec();
            connection.metadata.push((key.name().to_string(), value));
        }
    }
    let mut stream = FakeStream {
        direct: (flags & 8 != 0).then(|| field(10).unwrap_or_default().to_vec()),
        source: (flags & 16 != 0).then(|| field(11).unwrap_or_default().to_vec()),
        tlv_state: connection.tlv_state.clone(),
        ..FakeStream::default()
    };
    for (name, value) in header_fields(parts.get(13..).unwrap_or_default()) {
        stream.headers.append(&name, value);
    }
    let state = field(12).unwrap_or_default().to_vec();

    let per_connection_role = match flow {
        0 | 3 => Some(Role::Listener),
        2 => Some(Role::Network),
        _ => None,
    };
    let mut connection_c = None;
    if let Some(role) = per_connection_role {
        let Some(config) = configure(role, &name(role), config_text)? else {
            return Ok(());
        };
        let (go_on, _) = per_connection(&reference, &config, role, &mut connection)?;
        if !go_on || flow != 0 {
            return Ok(());
        }
        connection_c = connection
            .state(names::CONNECTION_CLIENT_IP_STATE)
            .and_then(std_peer);
        // The HTTP filter sees the connection the listener left: the same state, and the
        // remote address it set.
        stream.state = connection.state.clone();
    } else if flow == 1 {
        let key = direct_peer_key(config_text);
        stream.state.push((key, state));
    } else {
        stream
            .state
            .push((names::DECISION_FILTER_STATE.to_string(), state));
    }
    let Some(config) = configure(Role::Http, &name(Role::Http), config_text)? else {
        return Ok(());
    };
    http_filter(&config, &mut stream, connection_c, &reference)
}

/// The policy's `direct_peer.filter_state` key (the default when it names none).
fn direct_peer_key(config: &[u8]) -> String {
    crate::core::config::Policy::from_json(config)
        .map(|p| p.direct_peer_key)
        .unwrap_or_else(|_| names::DEFAULT_DIRECT_PEER_KEY.to_string())
}
