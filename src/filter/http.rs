//! The HTTP role: decides per request, rewrites the client-IP headers, or answers a rejection
//! with a local reply.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::decision::{decide_connection, decide_request, Role};
use crate::filter::host;
use crate::filter::root::Shared;

pub struct Request {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl Request {
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        Request { context_id, shared }
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.as_ref() else {
            // Not configured: fail closed.
            host::send_reject(500, "not_configured");
            return Action::Pause;
        };
        let policy = &shared.policy;
        let (direct, source) = shared.observe();
        let connection = decide_connection(policy, Role::Http, direct, source, &mut host::tlv);
        shared.log_rejection(self.context_id, &connection);
        let decision = decide_request(policy, connection, &mut host::RequestHeaders);
        shared.metrics.request(&decision);
        host::publish_decision(decision.reason(), decision.client);
        if decision.rejected() {
            host::send_reject(policy.reject_status, decision.reason());
            return Action::Pause;
        }
        Action::Continue
    }
}
