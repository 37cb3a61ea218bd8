//! Reading Envoy configurations: a bootstrap's static resources, file-based xDS
//! (`resources:` lists of Listener and Cluster), a bare Listener or a list of them. The filter
//! readers here also read the filters an Istio EnvoyFilter patch inserts.

use serde_json::Value;

use super::model::{
    array, child, compile, contains_trustip, string, type_url, typed_config, Build, Chain,
    Deployment, FilterStateEntry, Hcm, Kind, Listener, Location, NetworkFilter, Platform,
    ProxyProtocol, TlvRule, Trustip, Upstream,
};

const PROXY_PROTOCOL: (&str, &str) = (
    "envoy.filters.listener.proxy_protocol",
    ".filters.listener.proxy_protocol.v3.ProxyProtocol",
);
const SET_FILTER_STATE: (&str, &str) = (
    "envoy.filters.network.set_filter_state",
    ".filters.network.set_filter_state.v3.Config",
);
const NETWORK_WASM: (&str, &str) = (
    "envoy.filters.network.wasm",
    ".filters.network.wasm.v3.Wasm",
);
const HTTP_WASM: (&str, &str) = ("envoy.filters.http.wasm", ".filters.http.wasm.v3.Wasm");
const LISTENER_MODULE: (&str, &str) = (
    "envoy.filters.listener.dynamic_modules",
    ".dynamic_modules.v3.DynamicModuleListenerFilter",
);
const NETWORK_MODULE: (&str, &str) = (
    "envoy.filters.network.dynamic_modules",
    ".dynamic_modules.v3.DynamicModuleNetworkFilter",
);
const HTTP_MODULE: (&str, &str) = (
    "envoy.filters.http.dynamic_modules",
    ".filters.http.dynamic_modules.v3.DynamicModuleFilter",
);
const HCM: (&str, &str) = (
    "envoy.filters.network.http_connection_manager",
    ".http_connection_manager.v3.HttpConnectionManager",
);
const TCP_PROXY: (&str, &str) = ("envoy.filters.network.tcp_proxy", ".tcp_proxy.v3.TcpProxy");
const HEALTH_CHECK: (&str, &str) = (
    "envoy.filters.http.health_check",
    ".health_check.v3.HealthCheck",
);
const UPSTREAM_PROXY: (&str, &str) = (
    "envoy.transport_sockets.upstream_proxy_protocol",
    ".proxy_protocol.v3.ProxyProtocolUpstreamTransport",
);

/// The extension is `(name, type-url suffix)`: matched by its typed_config's `@type`, or by its
/// name when it has no typed_config.
pub fn is(filter: &Value, (name, suffix): (&str, &str)) -> bool {
    let url = type_url(filter);
    if url.is_empty() {
        string(filter, "name") == Some(name)
    } else {
        url.ends_with(suffix)
    }
}

pub fn is_proxy_protocol(filter: &Value) -> bool {
    is(filter, PROXY_PROTOCOL)
}

pub fn is_set_filter_state(filter: &Value) -> bool {
    is(filter, SET_FILTER_STATE)
}

pub fn is_hcm(filter: &Value) -> bool {
    is(filter, HCM)
}

/// Reads one document; false when it is no Envoy configuration.
pub fn read(doc: &Value, file: &str, out: &mut Deployment) -> bool {
    let mut found = false;
    if let Some(resources) = doc.get("static_resources") {
        for (listener, path) in array(resources, "listeners", "static_resources") {
            out.listeners.push(read_listener(listener, file, &path));
        }
        for (cluster, path) in array(resources, "clusters", "static_resources") {
            out.upstreams.push(read_cluster(cluster, file, &path));
        }
        // A bootstrap with no listener is still Envoy's.
        found = true;
    } else if doc.get("resources").is_some_and(Value::is_array) {
        for (resource, path) in array(doc, "resources", "") {
            let url = string(resource, "@type").unwrap_or("");
            if url.ends_with("listener.v3.Listener") || looks_like_listener(resource) {
                out.listeners.push(read_listener(resource, file, &path));
                found = true;
            } else if url.ends_with("cluster.v3.Cluster") {
                out.upstreams.push(read_cluster(resource, file, &path));
                found = true;
            }
        }
    } else if looks_like_listener(doc) {
        out.listeners.push(read_listener(doc, file, ""));
        found = true;
    } else if let Some(items) = doc.as_array() {
        for (index, listener) in items.iter().enumerate() {
            if looks_like_listener(listener) {
                out.listeners
                    .push(read_listener(listener, file, &format!("[{index}]")));
                found = true;
            }
        }
    } else if doc.get("listeners").is_some_and(Value::is_array) {
        for (listener, path) in array(doc, "listeners", "") {
            out.listeners.push(read_listener(listener, file, &path));
            found = true;
        }
    }
    found
}

fn looks_like_listener(value: &Value) -> bool {
    value.get("filter_chains").is_some()
        || value.get("listener_filters").is_some()
        || value.get("default_filter_chain").is_some()
}

fn read_listener(value: &Value, file: &str, path: &str) -> Listener {
    let name = string(value, "name").unwrap_or("(unnamed listener)");
    let location = Location::new(file, name, path);
    let mut listener = Listener {
        platform: Platform::Envoy,
        scope: file.to_string(),
        location: location.clone(),
        proxy_protocol: None,
        native: Vec::new(),
        chains: Vec::new(),
    };
    for (index, (filter, filter_path)) in array(value, "listener_filters", path)
        .into_iter()
        .enumerate()
    {
        let at = location.at(&filter_path);
        if is_proxy_protocol(filter) {
            if listener.proxy_protocol.is_none() {
                listener.proxy_protocol = Some((index, read_proxy_protocol(filter, &at)));
            }
        } else if is(filter, LISTENER_MODULE) {
            if let Some(t) = read_native(filter, &at, Kind::Listener) {
                listener.native.push((index, t));
            }
        }
    }
    for (chain, chain_path) in array(value, "filter_chains", path) {
        listener
            .chains
            .push(read_chain(chain, &location.at(&chain_path)));
    }
    if let Some(chain) = value.get("default_filter_chain") {
        let chain_path = child(path, "default_filter_chain");
        listener
            .chains
            .push(read_chain(chain, &location.at(&chain_path)));
    }
    listener
}

pub fn read_chain(chain: &Value, location: &Location) -> Chain {
    let filters = array(chain, "filters", &location.path)
        .into_iter()
        .map(|(filter, path)| read_network_filter(filter, &location.at(&path)))
        .collect();
    let discovered = |filter: &Value| filter.get("config_discovery").is_some();
    let opaque = array(chain, "filters", "").into_iter().any(|(filter, _)| {
        discovered(filter)
            || array(typed_config(filter, "").0, "http_filters", "")
                .into_iter()
                .any(|(http, _)| discovered(http))
    });
    Chain {
        location: location.clone(),
        filters,
        opaque,
    }
}

/// The typed_config of a filter (a TypedStruct unwrapped) and its place.
pub fn typed<'a>(filter: &'a Value, at: &Location) -> (&'a Value, Location) {
    let (config, path) = typed_config(filter, &at.path);
    (config, at.at(&path))
}

pub fn read_proxy_protocol(filter: &Value, at: &Location) -> ProxyProtocol {
    let (config, _) = typed(filter, at);
    ProxyProtocol {
        location: at.clone(),
        strict: Some(
            !config
                .get("allow_requests_without_proxy_protocol")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ),
        tlv_filter_state: string(config, "tlv_location") == Some("FILTER_STATE"),
        tlv_rules: tlv_rules(config),
    }
}

pub fn tlv_rules(config: &Value) -> Vec<TlvRule> {
    array(config, "rules", "")
        .into_iter()
        .filter_map(|(rule, _)| {
            let present = rule.get("on_tlv_present")?;
            Some(TlvRule {
                tlv_type: rule.get("tlv_type").and_then(Value::as_u64)?,
                key: string(present, "key").unwrap_or("").to_string(),
                base64: string(present, "value_string_encoding") == Some("BASE64"),
            })
        })
        .collect()
}

pub fn read_network_filter(filter: &Value, at: &Location) -> NetworkFilter {
    if is(filter, SET_FILTER_STATE) {
        let (config, config_at) = typed(filter, at);
        return NetworkFilter::SetFilterState(filter_state_entries(config, &config_at));
    }
    if is(filter, NETWORK_WASM) {
        return read_wasm(filter, at, Kind::Network).map_or(NetworkFilter::Other, |t| {
            NetworkFilter::Trustip(Box::new(t))
        });
    }
    if is(filter, NETWORK_MODULE) {
        return read_native(filter, at, Kind::Network).map_or(NetworkFilter::Other, |t| {
            NetworkFilter::Trustip(Box::new(t))
        });
    }
    if is(filter, HCM) {
        return NetworkFilter::Hcm(Box::new(read_hcm(filter, at)));
    }
    if is(filter, TCP_PROXY) {
        let (config, _) = typed(filter, at);
        return NetworkFilter::TcpProxy {
            clusters: cluster_names(config),
        };
    }
    NetworkFilter::Other
}

pub fn filter_state_entries(config: &Value, at: &Location) -> Vec<FilterStateEntry> {
    array(config, "on_new_connection", &at.path)
        .into_iter()
        .map(|(entry, path)| {
            let format = entry.get("format_string");
            let text = format
                .and_then(|f| f.get("text_format_source"))
                .and_then(|s| string(s, "inline_string"))
                .or_else(|| format.and_then(|f| string(f, "text_format")))
                .unwrap_or("");
            FilterStateEntry {
                location: at.at(&path),
                object_key: string(entry, "object_key").unwrap_or("").to_string(),
                format: text.to_string(),
            }
        })
        .collect()
}

/// `cluster` and `weighted_clusters.clusters[].name` of a route action or tcp_proxy.
fn cluster_names(action: &Value) -> Vec<String> {
    let mut names: Vec<String> = string(action, "cluster")
        .map(str::to_string)
        .into_iter()
        .collect();
    if let Some(weighted) = action.get("weighted_clusters") {
        names.extend(
            array(weighted, "clusters", "")
                .into_iter()
                .filter_map(|(c, _)| string(c, "name").map(str::to_string)),
        );
    }
    names
}

fn read_hcm(filter: &Value, at: &Location) -> Hcm {
    let (config, config_at) = typed(filter, at);
    let options_path = child(&config_at.path, "common_http_protocol_options");
    let mut hcm = Hcm {
        use_remote_address: config
            .get("use_remote_address")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        use_remote_address_at: config_at.at(&child(&config_at.path, "use_remote_address")),
        xff_num_trusted_hops: config
            .get("xff_num_trusted_hops")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        xff_num_trusted_hops_at: config_at.at(&child(&config_at.path, "xff_num_trusted_hops")),
        skip_xff_append: config
            .get("skip_xff_append")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        skip_xff_append_at: config_at.at(&child(&config_at.path, "skip_xff_append")),
        underscores: config
            .get("common_http_protocol_options")
            .and_then(|o| string(o, "headers_with_underscores_action"))
            .unwrap_or("ALLOW")
            .to_string(),
        underscores_at: config_at.at(&child(&options_path, "headers_with_underscores_action")),
        http: Vec::new(),
        health_checks: Vec::new(),
        clusters: Vec::new(),
        routes_unknown: config.get("route_config").is_none(),
    };
    for (http, path) in array(config, "http_filters", &config_at.path) {
        let http_at = config_at.at(&path);
        let read = if is(http, HTTP_WASM) {
            read_wasm(http, &http_at, Kind::Http)
        } else if is(http, HTTP_MODULE) {
            read_native(http, &http_at, Kind::Http)
        } else {
            None
        };
        if let Some(mut t) = read {
            route_disabled(&mut t, string(http, "name"), config, &config_at);
            hcm.http.push(t);
        } else if is(http, HEALTH_CHECK) {
            let (hc, _) = typed(http, &http_at);
            for (header, _) in array(hc, "headers", "") {
                if string(header, "name") == Some(":path") {
                    let exact = header
                        .get("string_match")
                        .and_then(|m| string(m, "exact"))
                        .or_else(|| string(header, "exact_match"));
                    if let Some(exact) = exact {
                        hcm.health_checks.push((exact.to_string(), http_at.clone()));
                    }
                }
            }
        }
    }
    if let Some(routes) = config.get("route_config") {
        for (host, _) in array(routes, "virtual_hosts", "") {
            for (route, _) in array(host, "routes", "") {
                if let Some(action) = route.get("route") {
                    hcm.clusters.extend(cluster_names(action));
                }
            }
        }
    }
    hcm
}

/// `disabled: true` on an HCM's http_filters entry: Envoy leaves the filter out of every
/// request's chain unless the route enables it (`route_disabled`).
fn filter_disabled(filter: &Value, at: &Location, kind: Kind) -> Vec<(Location, String)> {
    if kind != Kind::Http || filter.get("disabled").and_then(Value::as_bool) != Some(true) {
        return Vec::new();
    }
    vec![(
        at.at(&child(&at.path, "disabled")),
        "disabled: true on the HCM's http_filters entry: Envoy leaves the trustip HTTP filter out of every request whose route does not enable it".to_string(),
    )]
}

/// A `typed_per_filter_config` entry for the filter `name` at `path` of `value` (a route, a
/// virtual host or the route configuration): `Some(true)` when it is a
/// `envoy.config.route.v3.FilterConfig` with `disabled: true` (Envoy skips the filter there),
/// `Some(false)` for any other entry (Envoy runs the filter there, a filter disabled by default
/// included), with the entry's path.
fn per_filter(value: &Value, path: &str, name: &str) -> Option<(bool, String)> {
    let entry = value.get("typed_per_filter_config")?.get(name)?;
    let (url, config) = match string(entry, "@type") {
        Some(url)
            if url.ends_with("/xds.type.v3.TypedStruct")
                || url.ends_with("/udpa.type.v1.TypedStruct") =>
        {
            (
                string(entry, "type_url").unwrap_or(""),
                entry.get("value").unwrap_or(&Value::Null),
            )
        }
        url => (url.unwrap_or(""), entry),
    };
    let disables = url.ends_with("envoy.config.route.v3.FilterConfig")
        && config.get("disabled").and_then(Value::as_bool) == Some(true);
    Some((
        disables,
        child(&child(path, "typed_per_filter_config"), name),
    ))
}

/// Where the inline route configuration decides whether a trustip HTTP filter runs: for each
/// route the most specific `typed_per_filter_config` entry for the filter's name (route, then
/// virtual host, then route configuration) decides, else the filter's own `disabled`. A
/// disabling entry that decides for a route is kept in `t.disabled`; the filter's own
/// `disabled: true` is dropped when every route enables the filter (with routes from RDS it
/// stays: lint cannot see them).
fn route_disabled(t: &mut Trustip, name: Option<&str>, config: &Value, config_at: &Location) {
    let Some(name) = name else {
        return;
    };
    let Some(routes) = config.get("route_config") else {
        return;
    };
    let routes_path = child(&config_at.path, "route_config");
    let mut default_used = false;
    let mut disabling: Vec<(Location, String)> = Vec::new();
    let top = per_filter(routes, &routes_path, name);
    for (host, host_path) in array(routes, "virtual_hosts", &routes_path) {
        let in_host = per_filter(host, &host_path, name);
        for (route, route_path) in array(host, "routes", &host_path) {
            let decided = per_filter(route, &route_path, name)
                .map(|(d, p)| (d, p, "route", "that route's requests"))
                .or_else(|| {
                    in_host.clone().map(|(d, p)| {
                        (d, p, "virtual host", "the requests of its routes that have no entry of their own")
                    })
                })
                .or_else(|| {
                    top.clone().map(|(d, p)| {
                        (d, p, "route configuration", "the requests of every route without an entry of its own or of its virtual host")
                    })
                });
            match decided {
                None => default_used = true,
                Some((true, path, level, scope)) => {
                    let what = format!("the {level}'s typed_per_filter_config {name} is a FilterConfig with disabled: true: Envoy leaves the trustip HTTP filter out of {scope}");
                    let entry = (config_at.at(&path), what);
                    if !disabling.contains(&entry) {
                        disabling.push(entry);
                    }
                }
                Some((false, ..)) => {}
            }
        }
    }
    if !default_used {
        t.disabled.clear();
    }
    t.disabled.extend(disabling);
}

/// The policy text of a `google.protobuf.StringValue` (Envoy passes `value` to the filter);
/// an absent configuration is the empty policy (every default).
fn string_value(config: Option<&Value>) -> String {
    match config {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => match other.get("value") {
            Some(Value::String(text)) => text.clone(),
            Some(value) => value.to_string(),
            None => String::new(),
        },
    }
}

/// A wasm filter, when it is trustip's: its root_id, VM id, code, file name or filter name
/// says so.
pub fn read_wasm(filter: &Value, at: &Location, kind: Kind) -> Option<Trustip> {
    let (typed, typed_at) = typed(filter, at);
    let config = typed.get("config").unwrap_or(&Value::Null);
    let config_path = child(&typed_at.path, "config");
    let vm = config.get("vm_config").unwrap_or(&Value::Null);
    let code = vm.get("code").unwrap_or(&Value::Null);
    let code_text = code
        .get("local")
        .and_then(|l| string(l, "filename"))
        .or_else(|| {
            code.get("remote")
                .and_then(|r| r.get("http_uri"))
                .and_then(|u| string(u, "uri"))
        })
        .unwrap_or("");
    let root_id = string(config, "root_id");
    let ours = root_id.is_some_and(|r| r.starts_with("trustip"))
        || contains_trustip(string(vm, "vm_id"))
        || contains_trustip(Some(code_text))
        || contains_trustip(string(config, "name"))
        || contains_trustip(string(filter, "name"));
    if !ours {
        return None;
    }
    let fail_open = if string(config, "failure_policy") == Some("FAIL_OPEN") {
        Some((
            at.at(&child(&config_path, "failure_policy")),
            "failure_policy: FAIL_OPEN".to_string(),
        ))
    } else if string(config, "failure_policy").is_none()
        && config.get("fail_open").and_then(Value::as_bool) == Some(true)
    {
        Some((
            at.at(&child(&config_path, "fail_open")),
            "fail_open: true".to_string(),
        ))
    } else {
        None
    };
    let text = string_value(config.get("configuration"));
    Some(Trustip {
        build: Build::Wasm,
        kind,
        location: at.clone(),
        selector: root_id.map(str::to_string),
        fail_open,
        vm: Some((
            string(vm, "vm_id").unwrap_or("").to_string(),
            code_text.to_string(),
        )),
        disabled: filter_disabled(filter, at, kind),
        policy_location: at.at(&child(&config_path, "configuration")),
        policy: compile(&text),
        policy_text: text,
    })
}

/// A dynamic-module filter, when it is trustip's: its filter_name or module says so.
pub fn read_native(filter: &Value, at: &Location, kind: Kind) -> Option<Trustip> {
    let (typed, typed_at) = typed(filter, at);
    let module = typed.get("dynamic_module_config").unwrap_or(&Value::Null);
    let module_text = module
        .get("module")
        .and_then(|m| m.get("local"))
        .and_then(|l| string(l, "filename"))
        .or_else(|| string(module, "name"))
        .unwrap_or("");
    let filter_name = string(typed, "filter_name");
    let ours = filter_name.is_some_and(|f| f.starts_with("trustip"))
        || contains_trustip(Some(module_text));
    if !ours {
        return None;
    }
    let text = string_value(typed.get("filter_config"));
    Some(Trustip {
        build: Build::Native,
        kind,
        location: at.clone(),
        selector: filter_name.map(str::to_string),
        fail_open: None,
        vm: None,
        disabled: filter_disabled(filter, at, kind),
        policy_location: at.at(&child(&typed_at.path, "filter_config")),
        policy: compile(&text),
        policy_text: text,
    })
}

fn read_cluster(value: &Value, file: &str, path: &str) -> Upstream {
    let name = string(value, "name").unwrap_or("(unnamed cluster)");
    let mut sockets: Vec<(&Value, String)> = value
        .get("transport_socket")
        .map(|s| (s, child(path, "transport_socket")))
        .into_iter()
        .collect();
    for (matcher, matcher_path) in array(value, "transport_socket_matches", path) {
        if let Some(socket) = matcher.get("transport_socket") {
            sockets.push((socket, child(&matcher_path, "transport_socket")));
        }
    }
    let found = sockets
        .iter()
        .find(|(socket, _)| is(socket, UPSTREAM_PROXY));
    Upstream {
        platform: Platform::Envoy,
        scope: file.to_string(),
        name: name.to_string(),
        location: Location::new(file, name, found.map_or(path, |(_, p)| p.as_str())),
        proxy_protocol: found.is_some(),
    }
}
