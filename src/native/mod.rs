//! The native glue: trustip as an Envoy 1.40 dynamic module (`libtrustip.so`), three filters
//! chosen by `filter_name`, all carrying out the core's verdict:
//! - `trustip-listener` (after `envoy.filters.listener.proxy_protocol`): decides once per
//!   connection, closes a refused socket before any network filter sees a byte, sets Envoy's
//!   remote address to the verified client C and hands the decision to the HTTP filter;
//! - `trustip-network`: the same decision as a network filter, for chains without it;
//! - `trustip-http`: the request part (X-Forwarded-For walk, header plan, local reply), from the
//!   listener's decision when it ran, deciding the connection itself when it runs alone.
//!
//! [`abi`] holds every `unsafe` line (the ABI's imports and exports); the filters below it are
//! safe Rust over small traits, unit-tested without Envoy.

#[cfg(not(test))]
mod abi;
mod config;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_checks;
mod http;
mod listener;
mod network;
mod ops;
