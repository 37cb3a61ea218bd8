//! Every name that code, rendered configurations, samples and tests share, defined once.
//!
//! The Rust code uses these constants; the Python tests read them from `trustip names`
//! (one JSON object), so a renamed root id, filter-state key or counter cannot drift apart.

use crate::core::decision::{Counter, Role};

/// The wasm network filter's root_id (`envoy.filters.network.wasm`).
pub const NETWORK_ROOT_ID: &str = "trustip-network";
/// The wasm HTTP filter's root_id (`envoy.filters.http.wasm`).
pub const HTTP_ROOT_ID: &str = "trustip-http";
/// The wasm VM id of rendered configurations: both roles in one VM per thread, sharing one
/// compiled policy. A filter whose root_id names the other role cannot take the VM down: the
/// root answers the context kind Envoy is creating and that filter refuses its own traffic
/// (src/filter/refused.rs).
pub const VM_ID: &str = "trustip";

/// The native build's `filter_name`s (Envoy dynamic module), one per filter type.
pub const LISTENER_FILTER_NAME: &str = "trustip-listener";
pub const NETWORK_FILTER_NAME: &str = "trustip-network";
pub const HTTP_FILTER_NAME: &str = "trustip-http";
/// The native module's file name as `cargo build --release` writes it, and the name Envoy's
/// `dynamic_module_config.module.name` finds on `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
pub const NATIVE_MODULE_FILE: &str = "libtrustip.so";
/// The `metrics_namespace` rendered configs give the native module: its counters then read
/// `trustip.<role>.<outcome>` in `/stats`, the wasm build's names without `wasmcustom.`.
pub const NATIVE_METRICS_NAMESPACE: &str = "trustip";
/// The dynamic-module ABI version the native build reports (Envoy 1.40).
pub const NATIVE_ABI_VERSION: &str = "v0.2.0";
/// Filter state where the native listener filter leaves its connection decision for the
/// native HTTP filter ([`crate::core::handoff`]).
pub const DECISION_FILTER_STATE: &str = "trustip.decision";

/// The filter-state object holding the direct peer D (and P after a space), written by
/// `envoy.filters.network.set_filter_state` on new connections.
pub const DEFAULT_DIRECT_PEER_KEY: &str = "trustip.direct_peer";
/// The set_filter_state format string for [`DEFAULT_DIRECT_PEER_KEY`]: D and P in one host call, P
/// captured before the HTTP connection manager could derive an address from X-Forwarded-For.
pub const DIRECT_PEER_FORMAT: &str =
    "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%";

/// Where Envoy's proxy_protocol listener filter stores TLVs with `tlv_location: FILTER_STATE`.
pub const TLV_FILTER_STATE: &str = "envoy.network.proxy_protocol.tlv";
/// The proxy_protocol listener filter's dynamic-metadata namespace (default `tlv_location`).
pub const PROXY_PROTOCOL_METADATA: &str = "envoy.filters.listener.proxy_protocol";

/// The decision, published in filter state: by the wasm build with `set_property` (Envoy then
/// prefixes [`WASM_FILTER_STATE_PREFIX`]), by the native build under these very names.
pub const CLIENT_IP_PROPERTY: &str = "trustip.client_ip";
pub const REASON_PROPERTY: &str = "trustip.reason";
/// The native build's per-connection filters (listener, network) publish their decision under
/// these (connection life span); its HTTP filter uses the two names above (request life span):
/// Envoy refuses one name with two life spans.
pub const CONNECTION_CLIENT_IP_STATE: &str = "trustip.connection.client_ip";
pub const CONNECTION_REASON_STATE: &str = "trustip.connection.reason";
/// Envoy prefixes wasm-set properties with `wasm.`: the keys an access log reads.
pub const WASM_FILTER_STATE_PREFIX: &str = "wasm.";

/// The reason published (and sent in [`REJECT_HEADER`]) when a filter's root_id names the other
/// role: its traffic is refused.
pub const MISCONFIGURED_REASON: &str = "misconfigured";

/// The header of a local reply that rejects a request: its value is the reason.
pub const REJECT_HEADER: &str = "x-trustip-reject";
/// The request path, read (only) on a connection admitted as a load balancer's health check.
pub const PATH_HEADER: &str = ":path";

/// Counter names: `trustip.<role>.<outcome>`. Envoy shows wasm counters as
/// `wasmcustom.<name>` in `/stats`.
pub const METRIC_PREFIX: &str = "trustip";
pub const WASM_STATS_PREFIX: &str = "wasmcustom.";

/// Headers written with R by default (`headers.set`).
pub const DEFAULT_SET: &[&str] = &["x-envoy-external-address"];
/// Client headers only a trusted proxy may send (`headers.strip`): the ones the common
/// frameworks and proxies read as the client address.
pub const DEFAULT_STRIP: &[&str] = &[
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "forwarded",
    "x-original-forwarded-for",
    "client-ip",
    "x-originating-ip",
    "forwarded-for",
    "x-forwarded",
];

/// `trustip.<role>.<counter>`.
pub fn metric_name(role: Role, counter: Counter) -> String {
    format!("{METRIC_PREFIX}.{}.{}", role.name(), counter.name())
}

/// The name the native build defines under [`NATIVE_METRICS_NAMESPACE`]: `<role>.<counter>`.
pub fn native_counter_name(role: Role, counter: Counter) -> String {
    format!("{}.{}", role.name(), counter.name())
}
