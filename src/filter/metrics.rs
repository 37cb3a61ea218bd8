//! Counter names (Envoy shows them as `wasmcustom.<name>` in `/stats`), defined once per VM.

use crate::core::decision::{ConnectionDecision, RejectReason, RequestDecision, Role, Via};
use crate::core::xff::WalkEnd;
use crate::filter::host;

/// Outcome counters, each `trustip.<role>.<outcome>`.
pub const ACCEPT_PROXY: &str = "accept_proxy";
pub const ACCEPT_DIRECT: &str = "accept_direct";
pub const ACCEPT_XFF: &str = "accept_xff";
pub const PROXY_IGNORED: &str = "proxy_ignored";
pub const HEADERS_STRIPPED: &str = "headers_stripped";
pub const XFF_MALFORMED: &str = "xff_malformed";
pub const XFF_TRUNCATED: &str = "xff_truncated";

type Id = Option<u32>;

pub struct Metrics {
    accept_proxy: Id,
    accept_direct: Id,
    accept_xff: Id,
    reject: [Id; 5],
    shadow: [Id; 5],
    proxy_ignored: Id,
    headers_stripped: Id,
    xff_malformed: Id,
    xff_truncated: Id,
}

impl Metrics {
    pub fn define(role: Role) -> Metrics {
        let counter =
            |outcome: &str| host::define_counter(&format!("trustip.{}.{outcome}", role.name()));
        let http_only = |outcome: &str| match role {
            Role::Http => counter(outcome),
            Role::Network => None,
        };
        Metrics {
            accept_proxy: counter(ACCEPT_PROXY),
            accept_direct: counter(ACCEPT_DIRECT),
            accept_xff: http_only(ACCEPT_XFF),
            reject: RejectReason::ALL.map(|r| counter(&format!("reject_{}", r.name()))),
            shadow: RejectReason::ALL.map(|r| counter(r.shadow_name())),
            proxy_ignored: counter(PROXY_IGNORED),
            headers_stripped: http_only(HEADERS_STRIPPED),
            xff_malformed: http_only(XFF_MALFORMED),
            xff_truncated: http_only(XFF_TRUNCATED),
        }
    }

    /// Counts a connection decision (network role, or the part every request shares).
    pub fn connection(&self, decision: &ConnectionDecision, moved_by_xff: bool) {
        if decision.proxy_ignored {
            host::increment(self.proxy_ignored, 1);
        }
        if let Some(rejection) = &decision.rejection {
            let ids = if decision.rejected() {
                &self.reject
            } else {
                &self.shadow
            };
            host::increment(ids.get(rejection.reason.index()).copied().flatten(), 1);
            if decision.rejected() {
                return;
            }
        }
        let id = match (moved_by_xff, decision.via) {
            (true, _) => self.accept_xff,
            (false, Via::Proxy) => self.accept_proxy,
            (false, Via::Direct) => self.accept_direct,
        };
        host::increment(id, 1);
    }

    pub fn request(&self, decision: &RequestDecision) {
        let moved = decision.client.is_some() && decision.client != decision.connection.client;
        self.connection(&decision.connection, moved);
        if decision.stripped > 0 {
            host::increment(self.headers_stripped, i64::from(decision.stripped));
        }
        match decision.walk_end {
            WalkEnd::Malformed => host::increment(self.xff_malformed, 1),
            WalkEnd::Limit => host::increment(self.xff_truncated, 1),
            _ => {}
        }
    }
}
