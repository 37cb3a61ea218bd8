//! The HTTP role: carries out the verdict per request: rewrites the client-IP headers, or
//! answers a rejection with a local reply.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::verdict;
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
            host::send_reject(
                500,
                "not_configured",
                &verdict::local_reply_body("not_configured"),
            );
            return Action::Pause;
        };
        let verdict = shared.decide(self.context_id);
        host::apply_headers(&verdict.headers);
        match verdict.action {
            verdict::Action::Continue => Action::Continue,
            verdict::Action::Respond { status } => {
                let reason = verdict.reason();
                host::send_reject(status, reason, &verdict::local_reply_body(reason));
                Action::Pause
            }
            verdict::Action::Close => {
                host::close_downstream();
                Action::Pause
            }
        }
    }
}
