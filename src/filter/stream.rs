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
        host::publish("trustip.reason", decision.reason().as_bytes());
        match decision.client {
            Some(client) => {
                host::publish("trustip.client_ip", client.to_string().as_bytes());
                Action::Continue
            }
            None => {
                self.rejected = true;
                host::close_downstream();
                Action::Pause
            }
        }
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
