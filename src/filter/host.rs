//! Every hostcall trustip makes, wrapped: host status codes become `None`/logged errors, and
//! properties and headers are read as bytes (never as strings that could trap the VM).

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};

use crate::core::headers::HeaderOp;
use crate::core::names;
use crate::core::tlv::TlvKey;
use crate::core::verdict::Host;

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

/// Whether the child context Envoy is creating is an HTTP stream (else a network connection).
/// Only meaningful inside `proxy_on_context_create` (the SDK's `get_type`), where hostcalls act
/// on the new context: an HTTP stream's info has `request.protocol` (the HTTP connection manager
/// sets it before any HTTP filter runs); a connection's info has none when the network filters'
/// contexts are created (`onNewConnection`, before any byte is read).
pub fn creating_http_stream() -> bool {
    matches!(
        hostcalls::get_property(vec!["request", "protocol"]),
        Ok(Some(_))
    )
}

pub fn plugin_configuration() -> Vec<u8> {
    match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(value) => value.unwrap_or_default(),
        Err(status) => {
            log::warn!("trustip: cannot read the plugin configuration: {status:?}");
            Vec::new()
        }
    }
}

/// What the core reads from Envoy, one hostcall per method, except headers (see
/// [`Host::header`] below).
#[derive(Default)]
pub struct Envoy {
    /// The request's header map, fetched once when a header Envoy does not coalesce is read.
    headers: Option<Vec<(String, Vec<u8>)>>,
}

impl Host for Envoy {
    /// The string filter-state object set by `set_filter_state`.
    fn direct_peer(&mut self, key: &str) -> Option<Vec<u8>> {
        property(vec!["filter_state", key])
    }

    fn source(&mut self) -> Option<Vec<u8>> {
        property(vec!["source", "address"])
    }

    /// Every line of the header, joined with `,` as Envoy joins X-Forwarded-For's. Envoy's
    /// `get_header_map_value` gives only the first line of a repeated header, which for
    /// `Forwarded` or a client header would be the client's own line in front of the one a
    /// trusted proxy added; so those are read from the whole map (one hostcall per request).
    /// X-Forwarded-For (coalesced by Envoy) and pseudo-headers have one line.
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        if name == crate::core::decision::X_FORWARDED_FOR || name.starts_with(':') {
            return hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten();
        }
        let headers = self.headers.get_or_insert_with(|| {
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
        });
        let mut joined: Option<Vec<u8>> = None;
        for (key, value) in headers.iter() {
            if key.eq_ignore_ascii_case(name) {
                match &mut joined {
                    Some(all) => {
                        all.push(b',');
                        all.extend_from_slice(value);
                    }
                    None => joined = Some(value.clone()),
                }
            }
        }
        joined
    }

    fn tlv(&mut self, key: TlvKey) -> Option<Vec<u8>> {
        property(vec!["filter_state", names::TLV_FILTER_STATE, key.name()])
    }
}

/// Publishes a value as filter state `wasm.<name>` for access logs.
fn publish(name: &str, value: &[u8]) {
    if let Err(status) = hostcalls::set_property(vec![name], Some(value)) {
        log::debug!("trustip: set_property {name} failed: {status:?}");
    }
}

/// Publishes a decision: the reason always, the client when there is one.
pub fn publish_decision(reason: &str, client: Option<&[u8]>) {
    publish(names::REASON_PROPERTY, reason.as_bytes());
    if let Some(client) = client {
        publish(names::CLIENT_IP_PROPERTY, client);
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

/// Carries out a header plan on the request headers.
pub fn apply_headers(ops: &[HeaderOp]) {
    for op in ops {
        let (name, value) = match op {
            HeaderOp::Set(name, value) => (*name, Some(value.as_slice())),
            HeaderOp::Remove(name) => (*name, None),
        };
        if let Err(status) =
            hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value)
        {
            log::warn!("trustip: cannot change header {name}: {status:?}");
        }
    }
}

/// Local reply for a rejected request.
pub fn send_reject(status: u16, reason: &str, body: &str) {
    let result = hostcalls::send_http_response(
        u32::from(status),
        vec![
            ("content-type", "text/plain"),
            (names::REJECT_HEADER, reason),
        ],
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
