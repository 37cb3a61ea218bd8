//! What each native filter asks of Envoy, as safe traits. [`super::abi`] implements them over
//! the ABI's callbacks; the unit tests implement them in memory.

use std::net::IpAddr;

/// An address as Envoy's listener and network callbacks give it: the IP text and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ip: String,
    pub port: u32,
}

impl Address {
    /// `ip:port`, IPv6 in brackets: what the core's peer parser reads.
    pub fn to_peer_text(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// What both per-connection filters (listener and network) read and do.
pub trait ConnectionOps {
    /// The TCP peer D.
    fn direct_remote(&mut self) -> Option<Address>;
    /// The remote address after PROXY processing: P.
    fn remote(&mut self) -> Option<Address>;
    /// A string in the connection's dynamic metadata (where proxy_protocol puts TLVs by default).
    fn metadata_string(&mut self, namespace: &str, key: &str) -> Option<Vec<u8>>;
    /// A filter-state object serialised as a string (proxy_protocol's TLVs with FILTER_STATE).
    fn filter_state_typed(&mut self, key: &str) -> Option<Vec<u8>>;
    /// Publishes a string in the connection's filter state.
    fn set_filter_state(&mut self, key: &str, value: &[u8]);
    /// Refuses the connection.
    fn close(&mut self, details: &str);
    fn increment(&mut self, counter_id: usize, by: u64);
}

/// The listener filter's one extra power.
pub trait ListenerOps: ConnectionOps {
    /// Makes `ip:port` the remote address the rest of Envoy sees.
    fn set_remote(&mut self, ip: IpAddr, port: u32) -> bool;
}

/// What the HTTP filter reads and does.
pub trait HttpOps {
    /// `ip:port` of the TCP peer D.
    fn direct_remote(&mut self) -> Option<Vec<u8>>;
    /// `source.address`: the remote address as the connection has it now.
    fn source_address(&mut self) -> Option<Vec<u8>>;
    /// A request header's values joined with `,`.
    fn header(&mut self, name: &str) -> Option<Vec<u8>>;
    fn set_header(&mut self, name: &str, value: &[u8]);
    fn remove_header(&mut self, name: &str);
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]);
    fn filter_state_bytes(&mut self, key: &str) -> Option<Vec<u8>>;
    fn filter_state_typed(&mut self, key: &str) -> Option<Vec<u8>>;
    fn set_filter_state(&mut self, key: &str, value: &[u8]);
    fn increment(&mut self, counter_id: usize, by: u64);
}

/// proxy_protocol's TLVs in filter state (`tlv_location: FILTER_STATE`): one JSON object,
/// read from Envoy and parsed at most once per decision.
#[derive(Default)]
pub struct TlvState(Option<Option<serde_json::Value>>);

impl TlvState {
    /// The TLV `key` as Envoy stored it; `read` fetches the object the first time.
    pub fn tlv(
        &mut self,
        key: crate::core::tlv::TlvKey,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        self.0
            .get_or_insert_with(|| read().and_then(|json| serde_json::from_slice(&json).ok()))
            .as_ref()
            .and_then(|object| tlv_value(object, key.name()))
    }
}

/// One TLV out of the JSON object Envoy serialises proxy_protocol's TLV filter state as.
fn tlv_value(object: &serde_json::Value, key: &str) -> Option<Vec<u8>> {
    object
        .get(key)
        .and_then(serde_json::Value::as_str)
        .map(|text| text.as_bytes().to_vec())
}
