//! The part of Envoy's v3 API that trustip's configurations use, as serde types. Field order is
//! the printed order. A `typed_config` is an enum tagged with its `@type`, so a filter and its
//! configuration type cannot be mixed up.

use serde::Serialize;

#[derive(Serialize)]
pub struct Bootstrap {
    pub admin: Admin,
    pub static_resources: StaticResources,
}

#[derive(Serialize)]
pub struct Admin {
    pub address: Address,
}

#[derive(Serialize, Clone)]
pub struct Address {
    pub socket_address: SocketAddress,
}

#[derive(Serialize, Clone)]
pub struct SocketAddress {
    pub address: String,
    pub port_value: u16,
}

impl Address {
    pub fn new(address: impl Into<String>, port_value: u16) -> Address {
        Address {
            socket_address: SocketAddress {
                address: address.into(),
                port_value,
            },
        }
    }
}

#[derive(Serialize)]
pub struct StaticResources {
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

#[derive(Serialize)]
pub struct Listener {
    pub name: String,
    pub address: Address,
    /// Listener access logs: one line per connection, also for one a network filter closed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<AccessLog>,
    pub listener_filters: Vec<Extension>,
    pub filter_chains: Vec<FilterChain>,
}

#[derive(Serialize)]
pub struct FilterChain {
    /// Which connections the chain takes (by SNI); `None`: all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_chain_match: Option<FilterChainMatch>,
    pub filters: Vec<Extension>,
}

#[derive(Serialize)]
pub struct FilterChainMatch {
    /// The TLS server names (SNI) the tls_inspector listener filter read.
    pub server_names: Vec<String>,
}

/// A filter (or logger): its extension name and typed configuration.
#[derive(Serialize)]
pub struct Extension {
    pub name: &'static str,
    pub typed_config: TypedConfig,
}

#[derive(Serialize)]
#[serde(tag = "@type")]
pub enum TypedConfig {
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"
    )]
    ProxyProtocol(ProxyProtocol),
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config"
    )]
    SetFilterState(SetFilterState),
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm")]
    NetworkWasm(Wasm),
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")]
    HttpWasm(Wasm),
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.listener.dynamic_modules.v3.DynamicModuleListenerFilter"
    )]
    ListenerDynamicModule(DynamicModuleFilter),
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter"
    )]
    NetworkDynamicModule(DynamicModuleFilter),
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
    )]
    HttpDynamicModule(DynamicModuleFilter),
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    )]
    HttpConnectionManager(Box<HttpConnectionManager>),
    /// Only the client-address settings: what an Istio patch merges into the gateway's HCM.
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    )]
    HcmClientAddress(HcmClientAddress),
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy")]
    TcpProxy(TcpProxy),
    #[serde(rename = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router")]
    Router,
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"
    )]
    HealthCheck(HealthCheck),
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
    )]
    TlsInspector,
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport"
    )]
    UpstreamProxyProtocol(Box<ProxyProtocolUpstreamTransport>),
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
    )]
    RawBuffer,
    #[serde(
        rename = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
    )]
    StdoutAccessLog(StdoutAccessLog),
}

pub const PROXY_PROTOCOL: &str = "envoy.filters.listener.proxy_protocol";
pub const SET_FILTER_STATE: &str = "envoy.filters.network.set_filter_state";
pub const NETWORK_WASM: &str = "envoy.filters.network.wasm";
pub const HTTP_WASM: &str = "envoy.filters.http.wasm";
pub const LISTENER_DYNAMIC_MODULE: &str = "envoy.filters.listener.dynamic_modules";
pub const NETWORK_DYNAMIC_MODULE: &str = "envoy.filters.network.dynamic_modules";
pub const HTTP_DYNAMIC_MODULE: &str = "envoy.filters.http.dynamic_modules";
pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const HEALTH_CHECK: &str = "envoy.filters.http.health_check";
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
pub const UPSTREAM_PROXY_PROTOCOL: &str = "envoy.transport_sockets.upstream_proxy_protocol";
pub const RAW_BUFFER: &str = "envoy.transport_sockets.raw_buffer";
pub const STDOUT_LOGGER: &str = "envoy.access_loggers.stdout";

#[derive(Serialize)]
pub struct ProxyProtocol {
    /// `None` leaves Envoy's (or a patched resource's) setting alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_requests_without_proxy_protocol: Option<bool>,
    pub tlv_location: &'static str,
    pub rules: Vec<TlvRule>,
    /// The TLVs kept in the `envoy.network.proxy_protocol.options` filter state, which an
    /// upstream proxy_protocol transport socket forwards (none when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_through_tlvs: Option<PassThroughTlvs>,
}

/// `config.core.v3.ProxyProtocolPassThroughTLVs`, always with an explicit list.
#[derive(Serialize)]
pub struct PassThroughTlvs {
    pub match_type: &'static str,
    pub tlv_type: Vec<u8>,
}

impl PassThroughTlvs {
    pub fn include(tlv_type: Vec<u8>) -> PassThroughTlvs {
        PassThroughTlvs {
            match_type: "INCLUDE",
            tlv_type,
        }
    }
}

/// The upstream transport socket that writes a PROXY header before the bytes of each upstream
/// connection, from the downstream connection's addresses (or the PROXY header the listener
/// parsed: the `envoy.network.proxy_protocol.options` filter state).
#[derive(Serialize)]
pub struct ProxyProtocolUpstreamTransport {
    pub config: ProxyProtocolConfig,
    pub transport_socket: Extension,
}

#[derive(Serialize)]
pub struct ProxyProtocolConfig {
    /// `V1` or `V2`.
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass_through_tlvs: Option<PassThroughTlvs>,
}

/// Envoy's health_check HTTP filter: answers the matching requests itself.
#[derive(Serialize)]
pub struct HealthCheck {
    /// false: Envoy answers (200, or 503 while draining or failed), the upstream is not asked.
    pub pass_through_mode: bool,
    pub headers: Vec<HeaderMatcher>,
}

#[derive(Serialize)]
pub struct HeaderMatcher {
    pub name: &'static str,
    pub string_match: StringMatcher,
}

#[derive(Serialize)]
pub struct StringMatcher {
    pub safe_regex: RegexMatcher,
}

/// RE2, anchored by Envoy (`full match`).
#[derive(Serialize)]
pub struct RegexMatcher {
    pub regex: String,
}

#[derive(Serialize)]
pub struct TlvRule {
    pub tlv_type: u8,
    pub on_tlv_present: TlvKeyValue,
}

#[derive(Serialize)]
pub struct TlvKeyValue {
    pub key: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_string_encoding: Option<&'static str>,
}

#[derive(Serialize)]
pub struct SetFilterState {
    pub on_new_connection: Vec<FilterStateValue>,
}

#[derive(Serialize)]
pub struct FilterStateValue {
    pub object_key: String,
    pub factory_key: &'static str,
    pub format_string: FormatString,
}

#[derive(Serialize)]
pub struct FormatString {
    pub text_format_source: InlineString,
}

#[derive(Serialize)]
pub struct InlineString {
    pub inline_string: String,
}

impl FormatString {
    pub fn text(text: impl Into<String>) -> FormatString {
        FormatString {
            text_format_source: InlineString {
                inline_string: text.into(),
            },
        }
    }
}

#[derive(Serialize)]
pub struct Wasm {
    pub config: PluginConfig,
}

#[derive(Serialize)]
pub struct PluginConfig {
    pub name: &'static str,
    pub root_id: &'static str,
    pub failure_policy: &'static str,
    pub vm_config: VmConfig,
    pub configuration: StringValue,
}

#[derive(Serialize)]
pub struct VmConfig {
    pub vm_id: &'static str,
    pub runtime: &'static str,
    pub code: Code,
}

#[derive(Serialize)]
pub struct Code {
    pub local: Local,
}

#[derive(Serialize)]
pub struct Local {
    pub filename: String,
}

/// A filter of an Envoy dynamic module (listener, network and HTTP filters share the shape):
/// the module, the filter it runs (`filter_name`) and that filter's configuration.
#[derive(Serialize)]
pub struct DynamicModuleFilter {
    pub dynamic_module_config: DynamicModuleConfig,
    pub filter_name: &'static str,
    pub filter_config: StringValue,
}

#[derive(Serialize)]
pub struct DynamicModuleConfig {
    pub module: Code,
    /// The prefix of the counters the module defines in `/stats`.
    pub metrics_namespace: &'static str,
}

/// `google.protobuf.StringValue` in an `Any`.
#[derive(Serialize)]
pub struct StringValue {
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    pub value: String,
}

impl StringValue {
    pub fn new(value: impl Into<String>) -> StringValue {
        StringValue {
            type_url: "type.googleapis.com/google.protobuf.StringValue",
            value: value.into(),
        }
    }
}

#[derive(Serialize)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    #[serde(flatten)]
    pub client_address: HcmClientAddress,
    pub http_filters: Vec<Extension>,
    pub route_config: RouteConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<AccessLog>,
}

/// How the HCM treats client addresses: trustip's deployments always set all of these.
#[derive(Serialize)]
pub struct HcmClientAddress {
    pub use_remote_address: bool,
    pub skip_xff_append: bool,
    pub common_http_protocol_options: HttpProtocolOptions,
}

#[derive(Serialize)]
pub struct HttpProtocolOptions {
    pub headers_with_underscores_action: &'static str,
}

#[derive(Serialize)]
pub struct RouteConfig {
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Serialize)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<&'static str>,
    pub routes: Vec<Route>,
}

#[derive(Serialize)]
pub struct Route {
    #[serde(rename = "match")]
    pub match_: RouteMatch,
    pub route: RouteAction,
}

#[derive(Serialize)]
pub struct RouteMatch {
    pub prefix: &'static str,
}

#[derive(Serialize)]
pub struct RouteAction {
    pub cluster: String,
}

#[derive(Serialize)]
pub struct TcpProxy {
    pub stat_prefix: String,
    pub cluster: String,
}

pub type AccessLog = Extension;

#[derive(Serialize)]
pub struct StdoutAccessLog {
    pub log_format: FormatString,
}

#[derive(Serialize)]
pub struct Cluster {
    pub name: String,
    #[serde(rename = "type")]
    pub discovery: &'static str,
    pub connect_timeout: &'static str,
    /// A PROXY header towards the upstream; `None`: plain TCP (raw_buffer, Envoy's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_socket: Option<Extension>,
    pub load_assignment: LoadAssignment,
}

#[derive(Serialize)]
pub struct LoadAssignment {
    pub cluster_name: String,
    pub endpoints: Vec<LocalityEndpoints>,
}

#[derive(Serialize)]
pub struct LocalityEndpoints {
    pub lb_endpoints: Vec<LbEndpoint>,
}

#[derive(Serialize)]
pub struct LbEndpoint {
    pub endpoint: Endpoint,
}

#[derive(Serialize)]
pub struct Endpoint {
    pub address: Address,
}
