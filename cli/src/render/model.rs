//! The wiring model: what a deployment of trustip consists of, independent of how it is
//! printed. `render --target envoy`, the compose stack, the Istio resources and the samples in
//! envoy/ are all built from it, and every shared name comes from `trustip::core::names`.
//!
//! A listener needs, in this order: the proxy_protocol listener filter (TLVs in filter state),
//! set_filter_state (the direct peer D and the PROXY-derived source P, before anything can
//! change them), trustip's network role, and the HCM with trustip's HTTP role (or tcp_proxy).

use trustip::core::config::Policy;
use trustip::core::names;
use trustip::core::tlv::TlvEncoding;

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

    /// Each role runs in its own VM: a filter of one role configured with the other role's
    /// root_id traps its VM on the first connection, and must not take the other role down.
    pub fn vm_id(self) -> &'static str {
        match self {
            Role::Network => names::NETWORK_VM_ID,
            Role::Http => names::HTTP_VM_ID,
        }
    }
}

/// How trustip is built into Envoy. Only the proxy-wasm module exists today; a native Envoy
/// dynamic module (`render --build native`) will be a second variant with its own filter
/// configurations, and everything else in the model stays as it is.
#[derive(Clone, Debug)]
pub enum Build {
    /// The proxy-wasm module, loaded by Envoy from this path.
    Wasm { module: String },
}

impl Build {
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
        }
    }

    /// The access-log command operator printing a value trustip published.
    pub fn published(&self, property: &str) -> String {
        match self {
            Build::Wasm { .. } => format!(
                "%FILTER_STATE({}{property}:PLAIN)%",
                names::WASM_FILTER_STATE_PREFIX
            ),
        }
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

    fn format(&self, build: &Build) -> String {
        self.0
            .iter()
            .map(|part| match part {
                LogPart::Text(text) => text.clone(),
                LogPart::Client => build.published(names::CLIENT_IP_PROPERTY),
                LogPart::Reason => build.published(names::REASON_PROPERTY),
            })
            .collect()
    }

    fn logger(&self, build: &Build) -> api::AccessLog {
        Extension {
            name: api::STDOUT_LOGGER,
            typed_config: TypedConfig::StdoutAccessLog(api::StdoutAccessLog {
                log_format: api::FormatString::text(self.format(build)),
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
pub fn proxy_protocol(policy: &Policy, allow_without_proxy: Option<bool>) -> api::ProxyProtocol {
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
    api::HcmClientAddress {
        // The HCM's view of the client is the PROXY-derived address, not the load balancer...
        use_remote_address: true,
        // ...but trustip owns X-Forwarded-For: the HCM must not append an unverified hop.
        skip_xff_append: true,
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

/// What a listener serves after trustip's network role.
#[derive(Clone, Debug)]
pub enum App {
    /// The HCM, routing every request to `cluster`, with trustip's HTTP role or without it.
    Http {
        stat_prefix: String,
        http_role: bool,
        cluster: String,
        request_log: Option<LogLine>,
    },
    /// Plain TCP: tcp_proxy to `cluster`. There are no headers to write.
    Tcp {
        stat_prefix: String,
        cluster: String,
    },
}

#[derive(Clone, Debug)]
pub struct ListenerPlan {
    pub name: String,
    pub address: HostPort,
    /// Refuse connections without a PROXY header at the listener; otherwise trustip's rules
    /// decide who may omit it.
    pub strict_proxy: bool,
    pub network_role: bool,
    pub app: App,
    /// One line per connection, also for one the network role closed: it shows the reason.
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
}

impl Wiring {
    pub fn bootstrap(&self) -> api::Bootstrap {
        api::Bootstrap {
            admin: api::Admin {
                address: self.admin.address(),
            },
            static_resources: api::StaticResources {
                listeners: self.listeners.iter().map(|l| self.listener(l)).collect(),
                clusters: self.clusters.iter().map(cluster).collect(),
            },
        }
    }

    fn listener(&self, plan: &ListenerPlan) -> api::Listener {
        let trustip = &self.trustip;
        let build = &trustip.build;
        let mut filters = vec![set_filter_state(&trustip.policy)];
        if plan.network_role {
            filters.push(trustip.filter(Role::Network));
        }
        filters.push(match &plan.app {
            App::Http {
                stat_prefix,
                http_role,
                cluster,
                request_log,
            } => {
                let mut http_filters = Vec::new();
                if *http_role {
                    http_filters.push(trustip.filter(Role::Http));
                }
                http_filters.push(Extension {
                    name: api::ROUTER,
                    typed_config: TypedConfig::Router,
                });
                Extension {
                    name: api::HTTP_CONNECTION_MANAGER,
                    typed_config: TypedConfig::HttpConnectionManager(Box::new(
                        api::HttpConnectionManager {
                            stat_prefix: stat_prefix.clone(),
                            client_address: hcm_client_address(),
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
                            access_log: request_log.iter().map(|l| l.logger(build)).collect(),
                        },
                    )),
                }
            }
            App::Tcp {
                stat_prefix,
                cluster,
            } => Extension {
                name: api::TCP_PROXY,
                typed_config: TypedConfig::TcpProxy(api::TcpProxy {
                    stat_prefix: stat_prefix.clone(),
                    cluster: cluster.clone(),
                }),
            },
        });
        api::Listener {
            name: plan.name.clone(),
            address: plan.address.address(),
            access_log: plan
                .connection_log
                .iter()
                .map(|l| l.logger(build))
                .collect(),
            listener_filters: vec![Extension {
                name: api::PROXY_PROTOCOL,
                typed_config: TypedConfig::ProxyProtocol(proxy_protocol(
                    &trustip.policy,
                    Some(!plan.strict_proxy),
                )),
            }],
            filter_chains: vec![api::FilterChain { filters }],
        }
    }
}

fn cluster(plan: &ClusterPlan) -> api::Cluster {
    api::Cluster {
        name: plan.name.clone(),
        discovery: match plan.discovery {
            Discovery::Static => "STATIC",
            Discovery::StrictDns => "STRICT_DNS",
        },
        connect_timeout: "2s",
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
