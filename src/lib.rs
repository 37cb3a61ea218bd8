//! trustip: decides who the client is when Envoy sits behind an L4 load balancer that sends
//! PROXY protocol, rejects spoofing, and writes one consistent set of client-IP headers.
//!
//! [`core`] holds every decision and compiles natively; [`filter`] is the thin proxy-wasm glue,
//! built only for `wasm32`.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod filter;
