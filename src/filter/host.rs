//! Every hostcall trustip makes, wrapped: host status codes become `None`/logged errors, and
//! properties and headers are read as bytes (never as strings that could trap the VM).

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType};

use crate::core::headers::HeaderAccess;
use crate::core::tlv::TlvKey;

/// Filter-state prefix under which Envoy's proxy_protocol filter stores TLVs
/// (`tlv_location: FILTER_STATE`).
const TLV_FILTER_STATE: &str = "envoy.network.proxy_protocol.tlv";

fn property(path: Vec<&str>) -> Option<Vec<u8>> {
    match hostcalls::get_property(path) {
        Ok(value) => value,
        Err(status) => {
            log::debug!("trustip: get_property failed: {status:?}");
            None
        }
    }
}

pub fn plugin_root_id() -> Vec<u8> {
    property(vec!["plugin_root_id"]).unwrap_or_default()
}

pub fn plugin_configuration() -> Vec<u8> {
    use proxy_wasm::types::BufferType;
    match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(value) => value.unwrap_or_default(),
        Err(status) => {
            log::warn!("trustip: cannot read the plugin configuration: {status:?}");
            Vec::new()
        }
    }
}

/// The direct peer, from the string filter-state object set by `set_filter_state`.
pub fn direct_peer(key: &str) -> Option<Vec<u8>> {
    property(vec!["filter_state", key])
}

/// `source.address`: the client after Envoy applied any PROXY header.
pub fn source_address() -> Option<Vec<u8>> {
    property(vec!["source", "address"])
}

pub fn tlv(key: TlvKey) -> Option<Vec<u8>> {
    property(vec!["filter_state", TLV_FILTER_STATE, key.name()])
}

/// Publishes a value as filter state `wasm.<name>` for access logs.
fn publish(name: &str, value: &[u8]) {
    if let Err(status) = hostcalls::set_property(vec![name], Some(value)) {
        log::debug!("trustip: set_property {name} failed: {status:?}");
    }
}

/// Publishes a decision for access logs: `wasm.trustip.reason` always, `wasm.trustip.client_ip`
/// when there is a client (not for an enforced rejection).
pub fn publish_decision(reason: &str, client: Option<std::net::IpAddr>) {
    publish("trustip.reason", reason.as_bytes());
    if let Some(client) = client {
        let mut text = Vec::with_capacity(40);
        crate::core::addr::push_ip(&mut text, client);
        publish("trustip.client_ip", &text);
    }
}

pub fn define_counter(name: &str) -> Option<u32> {
    match hostcalls::define_metric(MetricType::Counter, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("trustip: cannot define metric {name}: {status:?}");
            None
        }
    }
}

pub fn increment(metric: Option<u32>, by: i64) {
    if let Some(id) = metric {
        let _ = hostcalls::increment_metric(id, by);
    }
}

/// Local reply for a rejected request.
pub fn send_reject(status: u16, reason: &str) {
    let body = format!("trustip: rejected ({reason})\n");
    let result = hostcalls::send_http_response(
        u32::from(status),
        vec![("content-type", "text/plain"), ("x-trustip-reject", reason)],
        Some(body.as_bytes()),
    );
    if let Err(status) = result {
        log::warn!("trustip: send_http_response failed: {status:?}");
    }
}

pub fn close_downstream() {
    if let Err(status) = hostcalls::close_downstream() {
        log::warn!("trustip: close_downstream failed: {status:?}");
    }
}

/// The request headers of the current HTTP context.
pub struct RequestHeaders;

impl HeaderAccess for RequestHeaders {
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn set(&mut self, name: &str, value: &[u8]) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn remove(&mut self, name: &str) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
    }
}
