//! The root context: reads the role from the plugin's root_id, compiles the configuration once,
//! and hands every child context the same immutable [`Shared`] state.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;

use crate::core::config::{quoted, ConfigError, Mode, Policy};
use crate::core::decision::Role;
use crate::core::names::{HTTP_ROOT_ID, NETWORK_ROOT_ID};
use crate::core::verdict::{evaluate, Verdict};
use crate::filter::metrics::Metrics;
use crate::filter::refused::Refused;
use crate::filter::{host, http, stream};

/// Everything a child context needs, built once per VM by `on_configure`.
pub struct Shared {
    pub policy: Rc<Policy>,
    pub role: Role,
    pub metrics: Metrics,
    warned_no_direct_peer: Cell<bool>,
}

impl Shared {
    /// Runs the core's decision and carries out what every role does with it: the log line
    /// (with a one-time configuration hint), the counters, the published values. The caller
    /// then carries out the verdict's action.
    pub fn decide(&self, context_id: u32) -> Verdict<'_> {
        let verdict = evaluate(&self.policy, self.role, &mut host::Envoy::default());
        if let Some(line) = verdict.log_line(context_id) {
            log::info!("{line}");
        }
        if let Some(hint) = &verdict.hint {
            if !self.warned_no_direct_peer.replace(true) {
                log::warn!("{hint}");
            }
        }
        self.metrics.increment(&verdict.counters);
        host::publish_decision(verdict.reason(), verdict.client_text().as_deref());
        verdict
    }
}

thread_local! {
    /// The last policy compiled in this VM, with its configuration text: the network and the
    /// HTTP role share a VM and a configuration in rendered configs, and then share one compiled
    /// policy (with 10,000 CIDRs, that halves the memory the policy takes in each VM). Compared
    /// byte for byte: no hasher in the module.
    static COMPILED: RefCell<Option<(Vec<u8>, Rc<Policy>)>> = const { RefCell::new(None) };
}

fn compile_shared(config: Vec<u8>) -> Result<Rc<Policy>, ConfigError> {
    let cached = COMPILED.with(|cache| {
        cache
            .borrow()
            .as_ref()
            .filter(|(text, _)| *text == config)
            .map(|(_, policy)| Rc::clone(policy))
    });
    if let Some(policy) = cached {
        return Ok(policy);
    }
    let policy = Rc::new(Policy::from_json(&config)?);
    COMPILED.with(|cache| *cache.borrow_mut() = Some((config, Rc::clone(&policy))));
    Ok(policy)
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
    /// Whether a refused child already logged the root_id mismatch: once per root (per worker).
    warned_mismatch: Rc<Cell<bool>>,
}

impl Root {
    /// A refusing child when the kind Envoy is creating contradicts the role the root_id chose.
    fn refuse(&self, kind: Role) -> Option<Refused> {
        let role = self.shared.as_ref()?.role;
        (role != kind).then(|| Refused {
            kind,
            role,
            warned: Rc::clone(&self.warned_mismatch),
        })
    }
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
        let policy = match compile_shared(host::plugin_configuration()) {
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

    /// The SDK creates the child of the kind this answers, and Envoy then calls only the hooks
    /// of the kind it is really creating: a wrong answer traps the VM ("invalid context_id").
    /// So answer what Envoy is creating, not what the root_id says; a mismatch is refused in
    /// `create_*_context`.
    fn get_type(&self) -> Option<ContextType> {
        Some(if host::creating_http_stream() {
            ContextType::HttpContext
        } else {
            ContextType::StreamContext
        })
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if let Some(refused) = self.refuse(Role::Http) {
            return Some(Box::new(refused));
        }
        Some(Box::new(http::Request::new(
            context_id,
            self.shared.clone(),
        )))
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        if let Some(refused) = self.refuse(Role::Network) {
            return Some(Box::new(refused));
        }
        Some(Box::new(stream::Connection::new(
            context_id,
            self.shared.clone(),
        )))
    }
}
