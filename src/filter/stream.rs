//! The network role: decides once per connection and closes a rejected connection before any
//! byte reaches the HTTP layer.

use std::rc::Rc;

use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::Action;

use crate::core::decision::{decide_connection, Role};
use crate::filter::host;
use crate::filter::root::Shared;

pub struct Connection {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    rejected: bool,
}

impl Connection {
    pub fn new(context_id: u32, shared: Option<Rc<Shared>>) -> Self {
        Connection {
            context_id,
            shared,
            rejected: false,
        }
    }
}

impl Context for Connection {}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        let Some(shared) = self.shared.as_ref() else {
            self.rejected = true;
            host::close_downstream();
            return Action::Pause;
        };
        let (direct, source) = shared.observe();
        let decision = decide_connection(
            &shared.policy,
            Role::Network,
            direct,
            source,
            &mut host::tlv,
        );
        shared.log_rejection(self.context_id, &decision);
        shared.metrics.connection(&decision, false);
        host::publish_decision(decision.reason(), decision.client);
        if decision.rejected() {
            self.rejected = true;
            host::close_downstream();
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        // Nothing of a rejected connection goes further, even if bytes arrived before the close.
        if self.rejected {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}
