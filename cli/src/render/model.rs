//! The wiring model: what a deployment of trustip consists of, independent of how it is
//! printed. `render --target envoy`, the compose stack, the Istio resources and the samples in
//! envoy/ are all built from it, and every shared name comes from `trustip::core::names`.
//!
//! A listener of the wasm build needs, in this order: the proxy_protocol listener filter (TLVs
//! in filter state), set_filter_state (the direct peer D and the PROXY-derived source P, before
//! anything can change them), trustip's network role, and the HCM with trustip's HTTP role (or
//! tcp_proxy). One of the native build: proxy_protocol, trustip's listener filter (D and P read
//! natively, the remote address set to the client), and the HCM with trustip's HTTP filter (or
//! without it, the HCM then writing X-Forwarded-For from the remote address) or tcp_proxy.

use trustip::core::config::Policy;
use trustip::core::names;
use trustip::core::tlv::{TlvEncoding, TlvKey};

use crate::render::envoy_api::{self as api, Address, Extension, TypedConfig};

/// Which filter of trustip.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Decides once per connection and closes a rejected one.
    Network,
    /// Decides per request and writes the client-IP headers.
    Http,
}

impl Role {
    pub fn root_id(self) -> &'static str {
        match self {
            Role::Network => names::NETWORK_ROOT_ID,
            Role::Http => names::HTTP_ROOT_ID,
        }
    }

    /// Both roles run in one VM (names::VM_ID): one compiled policy, one V8 instance per
    /// thread; a filter given the other role's root_id refuses its own traffic, not the VM's.
    pub fn vm_id(self) -> &'static str {
        names::VM_ID
    }
}

/// How trustip is built into Envoy: the same core and policy either way, different filters.
#[derive(Clone, Debug)]
pub enum Build {
    /// The proxy-wasm module, loaded by Envoy from this path: a network and an HTTP filter, both
    /// roles in one VM; set_filter_state hands them the direct peer D.
    Wasm { module: String },
    /// The native Envoy dynamic module (`libtrustip.so`), loaded from this path: a listener
    /// filter (the connection's decision, read natively, and the remote address set to the
    /// client), a network filter and an HTTP filter, chosen by `filter_name`.
    Native { module: String },
}

/// Where an access log line is written, which decides the filter state it reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LogScope {
    /// The listener's line, one per connection.
    Connection,
    /// The HCM's line, one per request; `http_role`: trustip's HTTP filter runs in the HCM.
    Request { http_role: bool },
}

impl Build {
    pub fn is_native(&self) -> bool {
        matches!(self, Build::Native { .. })
    }

    /// The network (`Role::Network`) or HTTP filter running trustip with `policy_json`.
    pub fn filter(&self, role: Role, policy_json: &str) -> Extension {
        match self {
            Build::Wasm { module } => {
                let wasm = api::Wasm {
                    config: api::PluginConfig {
                        name: role.root_id(),
                        root_id: role.root_id(),
                        // A VM failure (a trap) fails the connection instead of letting it
                        // through unverified.
                        failure_policy: "FAIL_CLOSED",
                        vm_config: api::VmConfig {
                            vm_id: role.vm_id(),
                            runtime: "envoy.wasm.runtime.v8",
                            code: api::Code {
                                local: api::Local {
                                    filename: module.clone(),
                                },
                            },
                        },
                        configuration: api::StringValue::new(policy_json),
                    },
                };
                match role {
                    Role::Network => Extension {
                        name: api::NETWORK_WASM,
                        typed_config: TypedConfig::NetworkWasm(wasm),
                    },
                    Role::Http => Extension {
                        name: api::HTTP_WASM,
                        typed_config: TypedConfig::HttpWasm(wasm),
                    },
                }
            }
            Build::Native { module } => match role {
                Role::Network => Extension {
                    name: api::NETWORK_DYNAMIC_MODULE,
                    typed_config: TypedConfig::NetworkDynamicModule(dynamic_module(
                        module,
                        names::NETWORK_FILTER_NAME,
                        policy_json,
                    )),
                },
                Role::Http => Extension {
                    name: api::HTTP_DYNAMIC_MODULE,
                    typed_config: TypedConfig::HttpDynamicModule(dynamic_module(
                        module,
                        names::HTTP_FILTER_NAME,
                        policy_json,
                    )),
                },
            },
        }
    }

    /// The listener filter running trustip with `policy_json`, after proxy_protocol: only the
    /// native build has one (`None` for wasm, which decides in its network filter).
    pub fn listener_filter(&self, policy_json: &str) -> Option<Extension> {
        match self {
            Build::Wasm { .. } => None,
            Build::Native { module } => Some(Extension {
                name: api::LISTENER_DYNAMIC_MODULE,
                typed_config: TypedConfig::ListenerDynamicModule(dynamic_module(
                    module,
                    names::LISTENER_FILTER_NAME,
                    policy_json,
                )),
            }),
        }
    }

    /// The access-log command operator printing a value trustip published (`property`:
    /// [`names::CLIENT_IP_PROPERTY`] or [`names::REASON_PROPERTY`]) in a line of `scope`.
    pub fn published(&self, property: &str, scope: LogScope) -> String {
        match self {
            // Both wasm roles publish under the same names, which Envoy prefixes with `wasm.`.
            Build::Wasm { .. } => format!(
                "%FILTER_STATE({}{property}:PLAIN)%",
                names::WASM_FILTER_STATE_PREFIX
            ),
            // The native HTTP filter publishes under the names themselves (request life span);
            // the listener filter under the connection's names, which a request's line also
            // reads when no trustip HTTP filter runs.
            Build::Native { .. } => {
                let key = match scope {
                    LogScope::Request { http_role: true } => property,
                    LogScope::Request { http_role: false } | LogScope::Connection => {
                        if property == names::CLIENT_IP_PROPERTY {
                            names::CONNECTION_CLIENT_IP_STATE
                        } else {
                            names::CONNECTION_REASON_STATE
                        }
                    }
                };
                format!("%FILTER_STATE({key}:PLAIN)%")
            }
        }
    }
}

/// A dynamic-module filter of trustip's native module: `filter_name` picks the filter.
fn dynamic_module(
    module: &str,
    filter_name: &'static str,
    policy_json: &str,
) -> api::DynamicModuleFilter {
    api::DynamicModuleFilter {
        dynamic_module_config: api::DynamicModuleConfig {
            module: api::Code {
                local: api::Local {
                    filename: module.to_string(),
                },
            },
            metrics_namespace: names::NATIVE_METRICS_NAMESPACE,
        },
        filter_name,
        // A bad policy: the module's config_new refuses it, and Envoy the configuration.
        filter_config: api::StringValue::new(policy_json),
    }
}

/// One part of an access-log line.
#[derive(Clone, Debug)]
pub enum LogPart {
    /// Literal text and Envoy command operators.
    Text(String),
    /// The client address trustip decided (`-` when rejected).
    Client,
    /// Why: proxy, direct, xff, or the rejection's reason.
    Reason,
}

/// An access-log format; the build decides how the published decision is read.
#[derive(Clone, Debug, Default)]
pub struct LogLine(pub Vec<LogPart>);

impl LogLine {
    pub fn text(mut self, text: &str) -> LogLine {
        self.0.push(LogPart::Text(text.to_string()));
        self
    }
    pub fn client(mut self) -> LogLine {
        self.0.push(LogPart::Client);
        self
    }
    pub fn reason(mut self) -> LogLine {
        self.0.push(LogPart::Reason);
        self
    }

    fn format(&self, build: &Build, scope: LogScope) -> String {
        self.0
            .iter()
            .map(|part| match part {
                LogPart::Text(text) => text.clone(),
                LogPart::Client => build.published(names::CLIENT_IP_PROPERTY, scope),
                LogPart::Reason => build.published(names::REASON_PROPERTY, scope),
            })
            .collect()
    }

    fn logger(&self, build: &Build, scope: LogScope) -> api::AccessLog {
        Extension {
            name: api::STDOUT_LOGGER,
            typed_config: TypedConfig::StdoutAccessLog(api::StdoutAccessLog {
                log_format: api::FormatString::text(self.format(build, scope)),
            }),
        }
    }
}

/// trustip as one deployment runs it: the build and the policy both roles share.
#[derive(Clone, Debug)]
pub struct Trustip {
    pub build: Build,
    /// Validated by the filter's own configuration step.
    pub policy: Policy,
    /// The JSON text both filters are configured with, embedded exactly.
    pub policy_json: String,
}

impl Trustip {
    pub fn filter(&self, role: Role) -> Extension {
        self.build.filter(role, &self.policy_json)
    }
}

/// The proxy_protocol listener filter's configuration: TLVs in filter state, only those the
/// policy reads, with the value encoding the policy expects (base64 keeps binary ids intact).
/// `allow_without_proxy`: `None` leaves the setting to whoever owns the listener (Istio).
/// `pass_through`: the TLVs kept for an upstream PROXY v2 header (`--upstream-tlvs`).
pub fn proxy_protocol(
    policy: &Policy,
    allow_without_proxy: Option<bool>,
    pass_through: &[TlvKey],
) -> api::ProxyProtocol {
    let encoding = match policy.tlv_encoding {
        TlvEncoding::Raw => None,
        TlvEncoding::Base64 => Some("BASE64"),
    };
    api::ProxyProtocol {
        allow_requests_without_proxy_protocol: allow_without_proxy,
        tlv_location: "FILTER_STATE",
        rules: policy
            .tlv_keys_used
            .iter()
            .map(|key| api::TlvRule {
                tlv_type: key.tlv_type(),
                on_tlv_present: api::TlvKeyValue {
                    key: key.name(),
                    value_string_encoding: encoding,
                },
            })
            .collect(),
        pass_through_tlvs: pass_through_tlvs(pass_through),
    }
}

/// Envoy's list of TLV types to pass through; `None` when there are none (Envoy then passes none).
fn pass_through_tlvs(keys: &[TlvKey]) -> Option<api::PassThroughTlvs> {
    if keys.is_empty() {
        None
    } else {
        Some(api::PassThroughTlvs::include(
            keys.iter().map(|key| key.tlv_type()).collect(),
        ))
    }
}

/// set_filter_state, first of the network filters: remembers the TCP peer D (which no wasm
/// attribute exposes once proxy_protocol ran) and P as the connection opened, in one value.
pub fn set_filter_state(policy: &Policy) -> Extension {
    Extension {
        name: api::SET_FILTER_STATE,
        typed_config: TypedConfig::SetFilterState(api::SetFilterState {
            on_new_connection: vec![api::FilterStateValue {
                object_key: policy.direct_peer_key.clone(),
                factory_key: "envoy.string",
                format_string: api::FormatString::text(names::DIRECT_PEER_FORMAT),
            }],
        }),
    }
}

/// The HCM's client-address settings every trustip deployment uses.
pub fn hcm_client_address() -> api::HcmClientAddress {
    hcm_client_address_with(true)
}

/// The HCM's client-address settings; `trustip_owns_xff`: trustip's HTTP filter writes
/// X-Forwarded-For. Without it (the native listener filter alone) the HCM writes
/// X-Forwarded-For and x-envoy-external-address itself, from the remote address the listener
/// filter set to the verified client.
pub fn hcm_client_address_with(trustip_owns_xff: bool) -> api::HcmClientAddress {
    api::HcmClientAddress {
        // The HCM's view of the client is the PROXY-derived address (the native listener
        // filter's verified client), not the load balancer...
        use_remote_address: true,
        // ...and when trustip owns X-Forwarded-For, the HCM must not append an unverified hop.
        skip_xff_append: trustip_owns_xff,
        common_http_protocol_options: api::HttpProtocolOptions {
            // Envoy accepts header names with underscores by default, and many frameworks
            // read `x_forwarded_for` or `x_real_ip` as X-Forwarded-For and X-Real-IP (CGI
            // turns both spellings into HTTP_X_FORWARDED_FOR). DROP_HEADER removes every such
            // header before any filter or the upstream sees it (counted in
            // http1.dropped_headers_with_underscores); REJECT_REQUEST would answer 400 to
            // clients that merely send an odd header, which is not trustip's to refuse.
            headers_with_underscores_action: "DROP_HEADER",
        },
    }
}

/// A host name or IP address and a port.
#[derive(Clone, Debug)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn new(host: impl Into<String>, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    fn address(&self) -> Address {
        Address::new(self.host.clone(), self.port)
    }
}

/// What a listener serves after trustip's connection decision.
#[derive(Clone, Debug)]
pub enum App {
    /// The HCM, routing every request to `cluster`, with trustip's HTTP role or without it.
    Http {
        stat_prefix: String,
        http_role: bool,
        cluster: String,
        request_log: Option<LogLine>,
        /// Paths Envoy's health_check filter answers itself (after trustip's HTTP role, which
        /// admits them on a load balancer's connection without client information when the
        /// policy's rule lists them in `health_check_paths`).
        health_check_paths: Vec<String>,
    },
    /// Plain TCP: tcp_proxy to `cluster`. There are no headers to write.
    Tcp {
        stat_prefix: String,
        cluster: String,
    },
    /// TLS passed through untouched: tls_inspector reads the SNI (after proxy_protocol and the
    /// connection's decision) and one filter chain per route hands the bytes to its cluster.
    /// A server name no route lists matches no filter chain: Envoy closes the connection.
    TlsPassthrough {
        stat_prefix: String,
        routes: Vec<SniRoute>,
    },
}

/// One SNI route of a TLS passthrough listener.
#[derive(Clone, Debug)]
pub struct SniRoute {
    /// `api.example.com` or `*.example.com`.
    pub server_name: String,
    pub cluster: String,
}

/// Which PROXY version Envoy writes towards the upstream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProxyVersion {
    V1,
    V2,
}

impl ProxyVersion {
    pub fn envoy_name(self) -> &'static str {
        match self {
            ProxyVersion::V1 => "V1",
            ProxyVersion::V2 => "V2",
        }
    }
}

/// Envoy sends a PROXY header to every upstream: the client trustip decided, from the PROXY
/// header the listener parsed when one was used (Envoy's `envoy.network.proxy_protocol.options`
/// filter state), else the downstream peer; with v2, the listed TLVs the load balancer sent.
#[derive(Clone, Debug)]
pub struct UpstreamProxy {
    pub version: ProxyVersion,
    /// Only with v2: kept by the listener's proxy_protocol filter and forwarded by the socket.
    pub tlvs: Vec<TlvKey>,
}

impl UpstreamProxy {
    fn transport_socket(&self) -> Extension {
        Extension {
            name: api::UPSTREAM_PROXY_PROTOCOL,
            typed_config: TypedConfig::UpstreamProxyProtocol(Box::new(
                api::ProxyProtocolUpstreamTransport {
                    config: api::ProxyProtocolConfig {
                        version: self.version.envoy_name(),
                        pass_through_tlvs: pass_through_tlvs(&self.tlvs),
                    },
                    transport_socket: Extension {
                        name: api::RAW_BUFFER,
                        typed_config: TypedConfig::RawBuffer,
                    },
                },
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ListenerPlan {
    pub name: String,
    pub address: HostPort,
    /// Refuse connections without a PROXY header at the listener; otherwise trustip's rules
    /// decide who may omit it.
    pub strict_proxy: bool,
    /// trustip decides once per connection and closes a refused one before any byte is
    /// forwarded: the wasm build's network filter (after set_filter_state), the native build's
    /// listener filter (after proxy_protocol, also setting the remote address to the client).
    pub connection_role: bool,
    pub app: App,
    /// One line per connection, also for one trustip closed: it shows the reason.
    pub connection_log: Option<LogLine>,
}

#[derive(Clone, Copy, Debug)]
pub enum Discovery {
    /// The address is an IP.
    Static,
    /// The address is a name, resolved by DNS.
    StrictDns,
}

#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub name: String,
    pub discovery: Discovery,
    pub endpoint: HostPort,
}

/// A complete Envoy: admin, listeners, clusters.
#[derive(Clone, Debug)]
pub struct Wiring {
    pub trustip: Trustip,
    pub admin: HostPort,
    pub listeners: Vec<ListenerPlan>,
    pub clusters: Vec<ClusterPlan>,
    /// Every cluster sends a PROXY header upstream (the policy then says
    /// `upstream_proxy_protocol: true`).
    pub upstream_proxy: Option<UpstreamProxy>,
}

impl Wiring {
    pub fn bootstrap(&self) -> api::Bootstrap {
        api::Bootstrap {
            admin: api::Admin {
                address: self.admin.address(),
            },
            static_resources: api::StaticResources {
                listeners: self.listeners.iter().map(|l| self.listener(l)).collect(),
                clusters: self
                    .clusters
                    .iter()
                    .map(|c| cluster(c, self.upstream_proxy.as_ref()))
                    .collect(),
            },
        }
    }

    fn listener(&self, plan: &ListenerPlan) -> api::Listener {
        let trustip = &self.trustip;
        let build = &trustip.build;
        let pass_through = self
            .upstream_proxy
            .as_ref()
            .map(|u| u.tlvs.as_slice())
            .unwrap_or_default();
        let mut listener_filters = vec![Extension {
            name: api::PROXY_PROTOCOL,
            typed_config: TypedConfig::ProxyProtocol(proxy_protocol(
                &trustip.policy,
                Some(!plan.strict_proxy),
                pass_through,
            )),
        }];
        // The native filters read D and P themselves, at the listener.
        if build.is_native() && plan.connection_role {
            listener_filters.extend(build.listener_filter(&trustip.policy_json));
        }
        // The filters every chain starts with: the wasm filters cannot see D once
        // proxy_protocol ran, so set_filter_state keeps it.
        let head = || {
            let mut filters = Vec::new();
            if !build.is_native() {
                filters.push(set_filter_state(&trustip.policy));
                if plan.connection_role {
                    filters.push(trustip.filter(Role::Network));
                }
            }
            filters
        };
        let one_chain = |last: Extension| {
            let mut filters = head();
            filters.push(last);
            vec![api::FilterChain {
                filter_chain_match: None,
                filters,
            }]
        };
        let filter_chains = match &plan.app {
            App::Http {
                stat_prefix,
                http_role,
                cluster,
                request_log,
                health_check_paths,
            } => {
                let mut http_filters = Vec::new();
                if *http_role {
                    http_filters.push(trustip.filter(Role::Http));
                }
                // After trustip: a health check is answered only once trustip admitted it.
                http_filters.extend(health_check_paths.iter().map(|path| Extension {
                    name: api::HEALTH_CHECK,
                    typed_config: TypedConfig::HealthCheck(api::HealthCheck {
                        pass_through_mode: false,
                        headers: vec![api::HeaderMatcher {
                            name: ":path",
                            string_match: api::StringMatcher {
                                safe_regex: api::RegexMatcher {
                                    regex: path_regex(path),
                                },
                            },
                        }],
                    }),
                }));
                http_filters.push(Extension {
                    name: api::ROUTER,
                    typed_config: TypedConfig::Router,
                });
                one_chain(Extension {
                    name: api::HTTP_CONNECTION_MANAGER,
                    typed_config: TypedConfig::HttpConnectionManager(Box::new(
                        api::HttpConnectionManager {
                            stat_prefix: stat_prefix.clone(),
                            client_address: hcm_client_address_with(
                                *http_role || !build.is_native(),
                            ),
                            http_filters,
                            route_config: api::RouteConfig {
                                virtual_hosts: vec![api::VirtualHost {
                                    name: cluster.clone(),
                                    domains: vec!["*"],
                                    routes: vec![api::Route {
                                        match_: api::RouteMatch { prefix: "/" },
                                        route: api::RouteAction {
                                            cluster: cluster.clone(),
                                        },
                                    }],
                                }],
                            },
                            access_log: request_log
                                .iter()
                                .map(|l| {
                                    l.logger(
                                        build,
                                        LogScope::Request {
                                            http_role: *http_role,
                                        },
                                    )
                                })
                                .collect(),
                        },
                    )),
                })
            }
            App::Tcp {
                stat_prefix,
                cluster,
            } => one_chain(tcp_proxy(stat_prefix, cluster)),
            App::TlsPassthrough {
                stat_prefix,
                routes,
            } => {
                // After proxy_protocol and trustip's listener filter: a refused connection is
                // closed before its ClientHello is read.
                listener_filters.push(Extension {
                    name: api::TLS_INSPECTOR,
                    typed_config: TypedConfig::TlsInspector,
                });
                routes
                    .iter()
                    .map(|route| {
                        let mut filters = head();
                        filters.push(tcp_proxy(stat_prefix, &route.cluster));
                        api::FilterChain {
                            filter_chain_match: Some(api::FilterChainMatch {
                                server_names: vec![route.server_name.clone()],
                            }),
                            filters,
                        }
                    })
                    .collect()
            }
        };
        api::Listener {
            name: plan.name.clone(),
            address: plan.address.address(),
            access_log: plan
                .connection_log
                .iter()
                .map(|l| l.logger(build, LogScope::Connection))
                .collect(),
            listener_filters,
            filter_chains,
        }
    }
}

fn tcp_proxy(stat_prefix: &str, cluster: &str) -> Extension {
    Extension {
        name: api::TCP_PROXY,
        typed_config: TypedConfig::TcpProxy(api::TcpProxy {
            stat_prefix: stat_prefix.to_string(),
            cluster: cluster.to_string(),
        }),
    }
}

fn cluster(plan: &ClusterPlan, upstream_proxy: Option<&UpstreamProxy>) -> api::Cluster {
    api::Cluster {
        name: plan.name.clone(),
        discovery: match plan.discovery {
            Discovery::Static => "STATIC",
            Discovery::StrictDns => "STRICT_DNS",
        },
        connect_timeout: "2s",
        transport_socket: upstream_proxy.map(UpstreamProxy::transport_socket),
        load_assignment: api::LoadAssignment {
            cluster_name: plan.name.clone(),
            endpoints: vec![api::LocalityEndpoints {
                lb_endpoints: vec![api::LbEndpoint {
                    endpoint: api::Endpoint {
                        address: plan.endpoint.address(),
                    },
                }],
            }],
        },
    }
}

/// The path with any query, as trustip compares it (`health_check_paths` ignore the query):
/// `/healthz/ready?full=1` is answered by Envoy too, not routed to the application.
pub fn path_regex(path: &str) -> String {
    let mut regex = String::with_capacity(path.len() + 8);
    for ch in path.chars() {
        if "\\.+*?()[]{}|^$".contains(ch) {
            regex.push('\\');
        }
        regex.push(ch);
    }
    regex.push_str("(\\?.*)?");
    regex
}
