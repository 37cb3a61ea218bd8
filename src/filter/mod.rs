//! The thin proxy-wasm glue: entry point, root context (configuration, role), the HTTP and the
//! network (stream) contexts, and the one module that touches hostcalls.

mod host;
mod http;
mod metrics;
mod refused;
mod root;
mod stream;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::default())
    });
}}
