//! trustip: decides who the client is when Envoy sits behind an L4 load balancer that sends
//! PROXY protocol, rejects spoofing, and writes one consistent set of client-IP headers.
//!
//! [`core`] holds every decision and compiles natively; [`filter`] is the thin proxy-wasm glue,
//! built only for `wasm32`.

pub mod core;

// The glue needs the host's imports; the wasm test binaries run under a plain WASI runtime.
#[cfg(all(target_arch = "wasm32", not(test)))]
mod filter;

#[cfg(not(target_arch = "wasm32"))]
mod native;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz_checks;
