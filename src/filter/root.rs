//! The root context: reads the role from the plugin's root_id, compiles the configuration once,
//! and hands every child context the same immutable [`Shared`] state.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

use crate::core::addr::Peer;
use crate::core::config::{quoted, ConfigError, Mode, Policy};
use crate::core::decision::{split_peers, ConnectionDecision, Observed, Role};
use crate::filter::metrics::Metrics;
use crate::filter::{host, http, stream};

pub const NETWORK_ROOT_ID: &str = "trustip-network";
pub const HTTP_ROOT_ID: &str = "trustip-http";

/// Everything a child context needs, built once per VM by `on_configure`.
pub struct Shared {
    pub policy: Rc<Policy>,
    pub role: Role,
    pub metrics: Metrics,
    warned_no_direct_peer: Cell<bool>,
}

impl Shared {
    /// The info line for a rejection (enforced or shadow), plus a one-time hint when the direct
    /// peer is missing because the Envoy config lacks set_filter_state.
    pub fn log_rejection(&self, context_id: u32, decision: &ConnectionDecision) {
        let Some(rejection) = &decision.rejection else {
            return;
        };
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
        log::info!(
            "trustip[{} ctx {context_id}]: {what} {}{detail}: direct_peer={direct} source={source} rule={rule}",
            self.role.name(),
            rejection.reason.name(),
        );
        if decision.direct_peer.peer().is_none() && !self.warned_no_direct_peer.replace(true) {
            log::warn!(
                "trustip: no direct peer in filter state {key}: add the envoy.filters.network.set_filter_state network filter (object_key {key}, factory_key envoy.string, format_string \"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%\", on_new_connection) before trustip, or set direct_peer.if_missing to trust_source if only the load balancer can reach this listener",
                key = quoted(&self.policy.direct_peer_key),
            );
        }
    }

    /// Direct peer and source: one host call when the filter-state value carries both (as
    /// `trustip render` configures it), else a second one for `source.address`.
    pub fn observe(&self) -> (Observed<Peer>, Option<Peer>) {
        let (direct, source) =
            split_peers(host::direct_peer(&self.policy.direct_peer_key).as_deref());
        let source = source.or_else(|| host::source_address().as_deref().and_then(Peer::parse));
        (direct, source)
    }
}

thread_local! {
    /// The last policy compiled in this VM, by a hash of its configuration bytes: the network
    /// and the HTTP role usually share a VM and a configuration, and then share one compiled
    /// policy (with 10,000 CIDRs, that halves the memory the policy takes in each VM).
    static COMPILED: RefCell<Option<(u64, usize, Rc<Policy>)>> = const { RefCell::new(None) };
}

fn compile_shared(config: &[u8]) -> Result<Rc<Policy>, ConfigError> {
    let mut hasher = DefaultHasher::new();
    config.hash(&mut hasher);
    let key = (hasher.finish(), config.len());
    if let Some(policy) = COMPILED.with(|cache| {
        cache
            .borrow()
            .as_ref()
            .filter(|(hash, len, _)| (*hash, *len) == key)
            .map(|(_, _, policy)| Rc::clone(policy))
    }) {
        return Ok(policy);
    }
    let policy = Rc::new(Policy::from_json(config)?);
    COMPILED.with(|cache| *cache.borrow_mut() = Some((key.0, key.1, Rc::clone(&policy))));
    Ok(policy)
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let root_id = host::plugin_root_id();
        let role = match root_id.as_slice() {
            b"" => Role::Http,
            id if id == HTTP_ROOT_ID.as_bytes() => Role::Http,
            id if id == NETWORK_ROOT_ID.as_bytes() => Role::Network,
            other => {
                log::error!(
                    "trustip: invalid configuration: root_id: {}: must be \"{NETWORK_ROOT_ID}\" (envoy.filters.network.wasm) or \"{HTTP_ROOT_ID}\" (envoy.filters.http.wasm)",
                    quoted(&String::from_utf8_lossy(other))
                );
                return false;
            }
        };
        let policy = match compile_shared(&host::plugin_configuration()) {
            Ok(policy) => policy,
            Err(err) => {
                log::error!("trustip: invalid configuration: {err}");
                return false;
            }
        };
        log::info!(
            "trustip: configured {} role: {} rules, {} trusted XFF blocks, mode {}",
            role.name(),
            policy.rules.len(),
            policy.xff_trusted_count,
            match policy.mode {
                Mode::Enforce => "enforce",
                Mode::Shadow => "shadow",
            }
        );
        self.shared = Some(Rc::new(Shared {
            policy,
            role,
            metrics: Metrics::define(role),
            warned_no_direct_peer: Cell::new(false),
        }));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        match self.shared.as_ref().map(|s| s.role) {
            Some(Role::Network) => Some(ContextType::StreamContext),
            _ => Some(ContextType::HttpContext),
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(http::Request::new(
            context_id,
            self.shared.clone(),
        )))
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(stream::Connection::new(
            context_id,
            self.shared.clone(),
        )))
    }
}
