//! The child context of a filter whose root_id names the other role (the network filter given
//! `trustip-http` or an empty root_id, the HTTP filter given `trustip-network`). It refuses all
//! its traffic, never runs as the other role, and the first one of its root to see traffic logs
//! why, once.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, StreamContext};
use proxy_wasm::types::Action;

use crate::core::config::quoted;
use crate::core::decision::Role;
use crate::core::names::{HTTP_ROOT_ID, MISCONFIGURED_REASON, NETWORK_ROOT_ID};
use crate::core::verdict::local_reply_body;
use crate::filter::host;

pub struct Refused {
    /// The kind of filter Envoy created this context for.
    pub kind: Role,
    /// The role the root_id chose.
    pub role: Role,
    /// Shared by the root's children: the error is logged once per root (per worker).
    pub warned: Rc<Cell<bool>>,
}

impl Refused {
    /// Logs from the hooks, not at creation: Envoy also creates an HTTP filter's context only to
    /// log a request that never reached the filter, and then calls none of these.
    fn refuse(&self) {
        if !self.warned.replace(true) {
            let (filter, wanted, outcome) = match self.kind {
                // (The wasm build has no listener filter.)
                Role::Network | Role::Listener => (
                    "envoy.filters.network.wasm",
                    NETWORK_ROOT_ID,
                    "every connection through this filter is closed",
                ),
                Role::Http => (
                    "envoy.filters.http.wasm",
                    HTTP_ROOT_ID,
                    "every request through this filter gets a 500 (x-trustip-reject: misconfigured)",
                ),
            };
            log::error!(
                "trustip: invalid configuration: {filter} has root_id {} (the {} role), it must be \"{wanted}\": {outcome}",
                quoted(&String::from_utf8_lossy(&host::plugin_root_id())),
                self.role.name(),
            );
        }
        host::publish_decision(MISCONFIGURED_REASON, None);
    }
}

impl Context for Refused {}

impl HttpContext for Refused {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.refuse();
        host::send_reject(
            500,
            MISCONFIGURED_REASON,
            &local_reply_body(MISCONFIGURED_REASON),
        );
        Action::Pause
    }
}

impl StreamContext for Refused {
    fn on_new_connection(&mut self) -> Action {
        self.refuse();
        host::close_downstream();
        Action::Pause
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Pause
    }
}
