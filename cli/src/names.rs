//! `trustip names`: the names trustip shares with Envoy configurations, dashboards and tests
//! (root ids, filter-state keys, the set_filter_state format string, counter names, the
//! default header lists), printed from the core's one definition as JSON.

use serde_json::{json, Value};
use trustip::core::decision::{Counter, RejectReason, Role};
use trustip::core::names;

/// Print the names trustip shares with Envoy configurations (root ids, VM ids, filter-state
/// keys, counter names, default header lists) as one JSON object.
#[derive(clap::Args)]
pub struct NamesArgs {}

pub fn names_json() -> Value {
    let counters = |role: Role| -> Vec<String> {
        Counter::for_role(role)
            .map(|counter| names::metric_name(role, counter))
            .collect()
    };
    let native_counters = |role: Role| -> Vec<String> {
        Counter::for_role(role)
            .map(|counter| names::native_counter_name(role, counter))
            .collect()
    };
    json!({
        "network_root_id": names::NETWORK_ROOT_ID,
        "http_root_id": names::HTTP_ROOT_ID,
        "vm_id": names::VM_ID,
        "direct_peer_key": names::DEFAULT_DIRECT_PEER_KEY,
        "direct_peer_format": names::DIRECT_PEER_FORMAT,
        "tlv_filter_state": names::TLV_FILTER_STATE,
        "proxy_protocol_metadata": names::PROXY_PROTOCOL_METADATA,
        "client_ip_filter_state": format!("{}{}", names::WASM_FILTER_STATE_PREFIX, names::CLIENT_IP_PROPERTY),
        "reason_filter_state": format!("{}{}", names::WASM_FILTER_STATE_PREFIX, names::REASON_PROPERTY),
        "reject_header": names::REJECT_HEADER,
        "metric_prefix": names::METRIC_PREFIX,
        "wasm_stats_prefix": names::WASM_STATS_PREFIX,
        "counters": {"network": counters(Role::Network), "http": counters(Role::Http)},
        "native_module_file": names::NATIVE_MODULE_FILE,
        "native_abi_version": names::NATIVE_ABI_VERSION,
        "native_metrics_namespace": names::NATIVE_METRICS_NAMESPACE,
        "listener_filter_name": names::LISTENER_FILTER_NAME,
        "network_filter_name": names::NETWORK_FILTER_NAME,
        "http_filter_name": names::HTTP_FILTER_NAME,
        "native_client_ip_filter_state": names::CLIENT_IP_PROPERTY,
        "native_reason_filter_state": names::REASON_PROPERTY,
        "native_connection_client_ip_filter_state": names::CONNECTION_CLIENT_IP_STATE,
        "native_connection_reason_filter_state": names::CONNECTION_REASON_STATE,
        "decision_filter_state": names::DECISION_FILTER_STATE,
        "native_counters": {
            "listener": native_counters(Role::Listener),
            "network": native_counters(Role::Network),
            "http": native_counters(Role::Http),
        },
        "reject_reasons": RejectReason::ALL.iter().map(|r| r.name()).collect::<Vec<_>>(),
        "default_set": names::DEFAULT_SET,
        "default_strip": names::DEFAULT_STRIP,
    })
}

pub fn run(_args: &NamesArgs) -> u8 {
    println!("{:#}", names_json());
    0
}
