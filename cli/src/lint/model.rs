//! What `lint` knows about a deployment, read from Envoy configurations ([`envoy`]) and from
//! Istio and Envoy Gateway resources ([`kube`]): listeners with their PROXY filter, filter
//! chains, the trustip filters of either build with their policies, HCM settings and upstream
//! PROXY sockets. Every part carries the file, resource and JSON path findings name.
//!
//! [`envoy`]: super::envoy
//! [`kube`]: super::kube

use serde_json::Value;
use trustip::core::config::Policy;

/// Where a configuration comes from: the fixes name that platform's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Envoy,
    Istio,
    EnvoyGateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    Wasm,
    Native,
}

/// The filter type that loads a trustip filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listener,
    Network,
    Http,
}

/// A place in the inputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: String,
    pub resource: String,
    pub path: String,
}

impl Location {
    pub fn new(file: &str, resource: &str, path: &str) -> Location {
        Location {
            file: file.to_string(),
            resource: resource.to_string(),
            path: path.to_string(),
        }
    }

    /// The same file and resource, another path.
    pub fn at(&self, path: &str) -> Location {
        Location::new(&self.file, &self.resource, path)
    }
}

/// `path.key` (or `key` at the top).
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[index]`.
pub fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A trustip filter of either build.
pub struct Trustip {
    pub build: Build,
    pub kind: Kind,
    pub location: Location,
    /// wasm: the root_id (Istio pluginName, Envoy Gateway rootID); native: the filter_name.
    /// `None` when unset.
    pub selector: Option<String>,
    /// Set when the filter fails open: the field and value that say so.
    pub fail_open: Option<(Location, String)>,
    /// wasm: the VM id (Envoy) and the code (file or url).
    pub vm: Option<(String, String)>,
    /// HTTP filters: where Envoy is told to skip the filter (`disabled: true` on its
    /// http_filters entry, unless every route enables it; a route's, virtual host's or route
    /// configuration's `typed_per_filter_config` FilterConfig `disabled: true`), each with
    /// what it is.
    pub disabled: Vec<(Location, String)>,
    pub policy_location: Location,
    /// The policy text the filter receives.
    pub policy_text: String,
    /// The core's verdict on it: the filter's own configuration step.
    pub policy: Result<Policy, String>,
}

impl Trustip {
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref().ok()
    }
}

/// `policy_text` validated by the filter's own step, its error as the filter logs it.
pub fn compile(text: &str) -> Result<Policy, String> {
    Policy::from_json(text.as_bytes())
        .map_err(|err| format!("trustip: invalid configuration: {err}"))
}

/// The proxy_protocol listener filter.
pub struct ProxyProtocol {
    pub location: Location,
    /// `allow_requests_without_proxy_protocol` false (or unset): a connection without PROXY is
    /// closed. `None`: not known from the inputs (Istio without the field in a patch).
    pub strict: Option<bool>,
    /// `tlv_location: FILTER_STATE` (else dynamic metadata, Envoy's default).
    pub tlv_filter_state: bool,
    pub tlv_rules: Vec<TlvRule>,
}

pub struct TlvRule {
    pub tlv_type: u64,
    pub key: String,
    pub base64: bool,
}

/// One `on_new_connection` entry of `envoy.filters.network.set_filter_state`.
pub struct FilterStateEntry {
    pub location: Location,
    pub object_key: String,
    pub format: String,
}

/// The HTTP connection manager's client-address settings and its HTTP filters.
pub struct Hcm {
    /// Effective values (platform defaults applied): `use_remote_address`.
    pub use_remote_address: bool,
    /// Where use_remote_address comes from, for the finding's path.
    pub use_remote_address_at: Location,
    /// `xff_num_trusted_hops` (Envoy): above 0 the HCM takes the downstream address from
    /// X-Forwarded-For even with use_remote_address.
    pub xff_num_trusted_hops: u64,
    pub xff_num_trusted_hops_at: Location,
    pub skip_xff_append: bool,
    pub skip_xff_append_at: Location,
    /// `headers_with_underscores_action` as Envoy spells it (ALLOW when unset in Envoy).
    pub underscores: String,
    pub underscores_at: Location,
    pub http: Vec<Trustip>,
    /// Request paths an Envoy `health_check` filter (or Envoy Gateway's healthCheck) answers.
    pub health_checks: Vec<(String, Location)>,
    /// Clusters the route configuration names; `routes_unknown` when it is not inline (RDS).
    pub clusters: Vec<String>,
    pub routes_unknown: bool,
}

/// One filter chain: its filters in order.
pub struct Chain {
    pub location: Location,
    pub filters: Vec<NetworkFilter>,
    /// A filter of the chain (or of its HCM) comes from ECDS (`config_discovery`): lint cannot
    /// see what it is, so it does not say that nothing decides the chain.
    pub opaque: bool,
}

pub enum NetworkFilter {
    SetFilterState(Vec<FilterStateEntry>),
    Trustip(Box<Trustip>),
    Hcm(Box<Hcm>),
    TcpProxy { clusters: Vec<String> },
    Other,
}

impl Chain {
    /// The trustip filters of the chain with their position (an HTTP filter at its HCM's).
    pub fn trustip(&self) -> impl Iterator<Item = (usize, &Trustip)> {
        self.filters
            .iter()
            .enumerate()
            .flat_map(|(index, filter)| -> Vec<(usize, &Trustip)> {
                match filter {
                    NetworkFilter::Trustip(t) => vec![(index, &**t)],
                    NetworkFilter::Hcm(hcm) => hcm.http.iter().map(|t| (index, t)).collect(),
                    _ => Vec::new(),
                }
            })
    }

    pub fn hcms(&self) -> impl Iterator<Item = &Hcm> {
        self.filters.iter().filter_map(|filter| match filter {
            NetworkFilter::Hcm(hcm) => Some(&**hcm),
            _ => None,
        })
    }

    /// The set_filter_state entries written before position `before`.
    pub fn filter_state_before(&self, before: usize) -> impl Iterator<Item = &FilterStateEntry> {
        self.filters
            .iter()
            .take(before)
            .flat_map(|filter| match filter {
                NetworkFilter::SetFilterState(entries) => entries.iter().collect::<Vec<_>>(),
                _ => Vec::new(),
            })
    }

    pub fn clusters(&self) -> (Vec<String>, bool) {
        let mut clusters = Vec::new();
        let mut unknown = false;
        for filter in &self.filters {
            match filter {
                NetworkFilter::Hcm(hcm) => {
                    clusters.extend(hcm.clusters.iter().cloned());
                    unknown |= hcm.routes_unknown;
                }
                NetworkFilter::TcpProxy { clusters: names } => {
                    clusters.extend(names.iter().cloned())
                }
                _ => {}
            }
        }
        (clusters, unknown)
    }
}

/// A listener (for Istio and Envoy Gateway: the gateway their resources configure).
pub struct Listener {
    pub platform: Platform,
    /// The clusters it can reach are those of the same scope: its file (Envoy), or all the
    /// Envoy Gateway resources given.
    pub scope: String,
    pub location: Location,
    /// Listener filters in order; the proxy_protocol one and trustip's native listener filter
    /// are kept apart with their positions.
    pub proxy_protocol: Option<(usize, ProxyProtocol)>,
    pub native: Vec<(usize, Trustip)>,
    pub chains: Vec<Chain>,
}

impl Listener {
    /// Every trustip filter of the listener, native listener filter included.
    pub fn trustip(&self) -> impl Iterator<Item = &Trustip> {
        self.native
            .iter()
            .map(|(_, t)| t)
            .chain(self.chains.iter().flat_map(|c| c.trustip().map(|(_, t)| t)))
    }
}

/// A cluster, or what else sends PROXY to a backend (an Envoy Gateway BackendTrafficPolicy).
pub struct Upstream {
    pub platform: Platform,
    pub scope: String,
    pub name: String,
    pub location: Location,
    pub proxy_protocol: bool,
}

/// Everything read from one call's inputs.
#[derive(Default)]
pub struct Deployment {
    pub listeners: Vec<Listener>,
    /// Clusters per file (a listener reaches the clusters of its own file).
    pub upstreams: Vec<Upstream>,
    /// Bare policy files (`policy.json`): validated, and the policy-only checks.
    pub policies: Vec<Trustip>,
}

/// A name, file or url that says trustip (any case).
pub fn contains_trustip(text: Option<&str>) -> bool {
    text.is_some_and(|t| t.to_ascii_lowercase().contains("trustip"))
}

/// `value` at `key` as a string.
pub fn string<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A `TypedStruct` (`xds.type.v3` or `udpa.type.v1`, as Istio patches often write): the
/// configuration is its `value`, of the type its `type_url` names.
fn is_typed_struct(typed: &Value) -> bool {
    string(typed, "@type").is_some_and(|t| {
        t.ends_with("/xds.type.v3.TypedStruct") || t.ends_with("/udpa.type.v1.TypedStruct")
    })
}

/// The type URL of a filter's typed_config (empty when there is none).
pub fn type_url(value: &Value) -> &str {
    let Some(typed) = value.get("typed_config") else {
        return "";
    };
    let key = if is_typed_struct(typed) {
        "type_url"
    } else {
        "@type"
    };
    string(typed, key).unwrap_or("")
}

/// A filter's typed_config (Null when there is none) and its path, a TypedStruct unwrapped.
pub fn typed_config<'a>(filter: &'a Value, path: &str) -> (&'a Value, String) {
    let path = child(path, "typed_config");
    match filter.get("typed_config") {
        Some(typed) if is_typed_struct(typed) => (
            typed.get("value").unwrap_or(&Value::Null),
            child(&path, "value"),
        ),
        Some(typed) => (typed, path),
        None => (&Value::Null, path),
    }
}

/// `items` of an array field, each with its path.
pub fn array<'a>(value: &'a Value, key: &str, path: &str) -> Vec<(&'a Value, String)> {
    let base = child(path, key);
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (v, item(&base, i)))
                .collect()
        })
        .unwrap_or_default()
}
