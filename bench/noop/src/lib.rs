//! The no-op proxy-wasm filter of the benchmark: the floor any wasm filter costs.
//!
//! One module, two roles like trustip, chosen by the plugin's root_id: `noop-network` gives a
//! stream (network) context, `noop-http` or an empty root_id an HTTP context. Every callback
//! returns Continue and makes no host call, so what the benchmark measures for this module is
//! Envoy's wasm path alone (context creation, the callbacks, context deletion). The only host
//! call is the root_id read, once per VM in `on_configure`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    role: Option<ContextType>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let root_id = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .unwrap_or_default();
        self.role = match root_id.as_slice() {
            b"" | b"noop-http" => Some(ContextType::HttpContext),
            b"noop-network" => Some(ContextType::StreamContext),
            _ => None,
        };
        self.role.is_some()
    }

    fn get_type(&self) -> Option<ContextType> {
        // The SDK panics on None; an unconfigured root never gets children anyway.
        Some(self.role.unwrap_or(ContextType::HttpContext))
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Connection))
    }
}

struct Request;

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

struct Connection;

impl Context for Connection {}

impl StreamContext for Connection {
    fn on_new_connection(&mut self) -> Action {
        Action::Continue
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_upstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {}

    fn on_upstream_close(&mut self, _peer_type: PeerType) {}
}
