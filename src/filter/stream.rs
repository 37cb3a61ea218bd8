//! The network role: carries out the verdict once per connection, closing a rejected
//! connection before any byte reaches the HTTP layer.

use std::rc::Rc;

use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::Action;

use crate::core::verdict;
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

    fn close(&mut self) -> Action {
        self.rejected = true;
        host::close_downstream();
        Action::Pause
    }
}

impl Context for Connection {}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        let Some(shared) = self.shared.as_ref() else {
            return self.close();
        };
        match shared.decide(self.context_id).action {
            verdict::Action::Continue => Action::Continue,
            // The network role never answers with HTTP: a refusal closes the connection.
            verdict::Action::Close | verdict::Action::Respond { .. } => self.close(),
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
