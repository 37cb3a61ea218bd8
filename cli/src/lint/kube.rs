//! Reading Kubernetes manifests: Istio (WasmPlugin, EnvoyFilter, the gateway Deployment's
//! `proxy.istio.io/config` annotation) and Envoy Gateway (EnvoyExtensionPolicy,
//! ClientTrafficPolicy, BackendTrafficPolicy). The resources of each platform given in one
//! call are taken as one gateway, and become one [`Listener`] of the model.

use serde_json::Value;

use super::envoy;
use super::model::{
    array, child, compile, contains_trustip, string, Build, Chain, Deployment, FilterStateEntry,
    Hcm, Kind, Listener, Location, NetworkFilter, Platform, ProxyProtocol, Trustip, Upstream,
};

/// The Istio resources read so far.
#[derive(Default)]
struct Istio {
    first: Option<Location>,
    network: Vec<Trustip>,
    http: Vec<Trustip>,
    filter_state: Vec<FilterStateEntry>,
    proxy_protocol: Option<ProxyProtocol>,
    use_remote_address: Option<(bool, Location)>,
    /// `gatewayTopology.numTrustedProxies`: the gateway HCM's xff_num_trusted_hops.
    trusted_proxies: Option<(u64, Location)>,
    skip_xff_append: Option<(bool, Location)>,
    underscores: Option<(String, Location)>,
    hcm_patch: Option<Location>,
}

#[derive(Default)]
struct Gateway {
    first: Option<Location>,
    http: Vec<Trustip>,
    proxy_protocol: Option<ProxyProtocol>,
    client_ip_detection: Option<Location>,
    underscores: Option<(String, Location)>,
    health_check: Option<(String, Location)>,
    ctp: Option<Location>,
    upstreams: Vec<Upstream>,
}

#[derive(Default)]
pub struct Kube {
    istio: Istio,
    gateway: Gateway,
}

/// `Kind/namespace/name`.
fn resource_id(doc: &Value) -> String {
    let kind = string(doc, "kind").unwrap_or("?");
    let meta = doc.get("metadata").unwrap_or(&Value::Null);
    let name = string(meta, "name").unwrap_or("?");
    match string(meta, "namespace") {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

pub fn is_kube(doc: &Value) -> bool {
    string(doc, "apiVersion").is_some() && string(doc, "kind").is_some()
}

/// An embedded policy object as the JSON text the filter receives.
fn policy_text(config: Option<&Value>) -> String {
    match config {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
    }
}

impl Kube {
    /// Reads one manifest (a `List` item by item).
    pub fn read(&mut self, doc: &Value, file: &str, path: &str) {
        if string(doc, "kind") == Some("List") {
            for (entry, entry_path) in array(doc, "items", path) {
                self.read(entry, file, &entry_path);
            }
            return;
        }
        let api = string(doc, "apiVersion").unwrap_or("");
        let kind = string(doc, "kind").unwrap_or("");
        let at = Location::new(file, &resource_id(doc), path);
        let spec = doc.get("spec").unwrap_or(&Value::Null);
        let spec_path = child(path, "spec");
        match (api.split('/').next().unwrap_or(""), kind) {
            ("extensions.istio.io", "WasmPlugin") => self.wasm_plugin(spec, &at, &spec_path),
            ("networking.istio.io", "EnvoyFilter") => self.envoy_filter(spec, &at, &spec_path),
            ("gateway.envoyproxy.io", "EnvoyExtensionPolicy") => {
                self.extension_policy(spec, &at, &spec_path)
            }
            ("gateway.envoyproxy.io", "ClientTrafficPolicy") => {
                self.client_traffic_policy(spec, &at, &spec_path)
            }
            ("gateway.envoyproxy.io", "BackendTrafficPolicy")
                if spec.get("proxyProtocol").is_some() =>
            {
                self.gateway.upstreams.push(Upstream {
                    platform: Platform::EnvoyGateway,
                    scope: "envoy-gateway".to_string(),
                    name: at.resource.clone(),
                    location: at.at(&child(&spec_path, "proxyProtocol")),
                    proxy_protocol: true,
                });
            }
            (_, "Deployment" | "DaemonSet" | "StatefulSet" | "Pod") => {
                self.annotations(doc, &at, path)
            }
            _ => {}
        }
    }

    fn istio_seen(&mut self, at: &Location) {
        if self.istio.first.is_none() {
            self.istio.first = Some(at.clone());
        }
    }

    fn wasm_plugin(&mut self, spec: &Value, at: &Location, spec_path: &str) {
        self.istio_seen(at);
        let name = string(spec, "pluginName");
        let ours = name.is_some_and(|n| n.starts_with("trustip"))
            || contains_trustip(string(spec, "url"))
            || contains_trustip(Some(&at.resource));
        if !ours {
            return;
        }
        let kind = if string(spec, "type") == Some("NETWORK") {
            Kind::Network
        } else {
            Kind::Http
        };
        let text = policy_text(spec.get("pluginConfig"));
        let fail_open = (string(spec, "failStrategy") == Some("FAIL_OPEN")).then(|| {
            (
                at.at(&child(spec_path, "failStrategy")),
                "failStrategy: FAIL_OPEN".to_string(),
            )
        });
        let plugin = Trustip {
            build: Build::Wasm,
            kind,
            location: at.at(spec_path),
            selector: name.map(str::to_string),
            fail_open,
            vm: None,
            disabled: Vec::new(),
            policy_location: at.at(&child(spec_path, "pluginConfig")),
            policy: compile(&text),
            policy_text: text,
        };
        match kind {
            Kind::Network => self.istio.network.push(plugin),
            _ => self.istio.http.push(plugin),
        }
    }

    fn envoy_filter(&mut self, spec: &Value, at: &Location, spec_path: &str) {
        self.istio_seen(at);
        for (patch, patch_path) in array(spec, "configPatches", spec_path) {
            let apply_to = string(patch, "applyTo").unwrap_or("");
            let value = patch
                .get("patch")
                .and_then(|p| p.get("value"))
                .unwrap_or(&Value::Null);
            let value_at = at.at(&child(&child(&patch_path, "patch"), "value"));
            let matched_filter = patch
                .get("match")
                .and_then(|m| m.get("listener"))
                .and_then(|l| l.get("filterChain"))
                .and_then(|c| c.get("filter"))
                .and_then(|f| string(f, "name"));
            let matched_listener_filter = patch
                .get("match")
                .and_then(|m| m.get("listener"))
                .and_then(|l| string(l, "listenerFilter"));
            match apply_to {
                "LISTENER_FILTER" => {
                    if envoy::is_proxy_protocol(value)
                        || matched_listener_filter == Some("envoy.filters.listener.proxy_protocol")
                    {
                        let mut pp = envoy::read_proxy_protocol(value, &value_at);
                        let allow = envoy::typed(value, &value_at)
                            .0
                            .get("allow_requests_without_proxy_protocol")
                            .and_then(Value::as_bool);
                        pp.strict = allow.map(|allow| !allow);
                        self.istio.proxy_protocol = Some(pp);
                    } else if let Some(t) = envoy::read_native(value, &value_at, Kind::Listener) {
                        // A listener filter inserted by patch: Istio runs the wasm build only;
                        // kept as a network-level decision.
                        self.istio.network.push(t);
                    }
                }
                "NETWORK_FILTER" => {
                    if envoy::is_set_filter_state(value) {
                        let (config, config_at) = envoy::typed(value, &value_at);
                        self.istio
                            .filter_state
                            .extend(envoy::filter_state_entries(config, &config_at));
                    } else if envoy::is_hcm(value)
                        || (matched_filter == Some("envoy.filters.network.http_connection_manager")
                            && value.get("typed_config").is_some()
                            && !envoy::is_set_filter_state(value))
                    {
                        self.hcm_patch(value, &value_at);
                    } else if let NetworkFilter::Trustip(t) =
                        envoy::read_network_filter(value, &value_at)
                    {
                        self.istio.network.push(*t);
                    }
                }
                "HTTP_FILTER" => {
                    if let Some(t) = envoy::read_wasm(value, &value_at, Kind::Http)
                        .or_else(|| envoy::read_native(value, &value_at, Kind::Http))
                    {
                        self.istio.http.push(t);
                    }
                }
                _ => {}
            }
        }
    }

    fn hcm_patch(&mut self, value: &Value, at: &Location) {
        let (config, config_at) = envoy::typed(value, at);
        let config_path = config_at.path;
        self.istio.hcm_patch = Some(at.clone());
        if let Some(b) = config.get("use_remote_address").and_then(Value::as_bool) {
            self.istio.use_remote_address =
                Some((b, at.at(&child(&config_path, "use_remote_address"))));
        }
        if let Some(b) = config.get("skip_xff_append").and_then(Value::as_bool) {
            self.istio.skip_xff_append = Some((b, at.at(&child(&config_path, "skip_xff_append"))));
        }
        if let Some(action) = config
            .get("common_http_protocol_options")
            .and_then(|o| string(o, "headers_with_underscores_action"))
        {
            let path = child(
                &child(&config_path, "common_http_protocol_options"),
                "headers_with_underscores_action",
            );
            self.istio.underscores = Some((action.to_string(), at.at(&path)));
        }
    }

    /// The gateway Deployment's `proxy.istio.io/config` with `gatewayTopology.proxyProtocol`:
    /// Istio adds the proxy_protocol listener filter to the gateway's listeners.
    fn annotations(&mut self, doc: &Value, at: &Location, path: &str) {
        let places = [
            (
                doc.get("metadata"),
                child(&child(path, "metadata"), "annotations"),
            ),
            (
                doc.get("spec")
                    .and_then(|s| s.get("template"))
                    .and_then(|t| t.get("metadata")),
                child(
                    &child(&child(&child(path, "spec"), "template"), "metadata"),
                    "annotations",
                ),
            ),
        ];
        for (meta, annotations_path) in places {
            let Some(text) = meta
                .and_then(|m| m.get("annotations"))
                .and_then(|a| string(a, "proxy.istio.io/config"))
            else {
                continue;
            };
            let Ok(docs) = super::parse::documents(text) else {
                continue;
            };
            let topology = |key: &str| {
                docs.iter()
                    .find_map(|d| d.value.get("gatewayTopology").and_then(|g| g.get(key)))
            };
            let at_annotation = || at.at(&format!("{annotations_path}[\"proxy.istio.io/config\"]"));
            if let Some(n) = topology("numTrustedProxies").and_then(Value::as_u64) {
                self.istio_seen(at);
                self.istio.trusted_proxies = Some((n, at_annotation()));
            }
            let enabled = topology("proxyProtocol").is_some();
            if enabled {
                self.istio_seen(at);
                if self.istio.proxy_protocol.is_none() {
                    self.istio.proxy_protocol = Some(ProxyProtocol {
                        location: at_annotation(),
                        strict: None,
                        tlv_filter_state: false,
                        tlv_rules: Vec::new(),
                    });
                }
            }
        }
    }

    fn gateway_seen(&mut self, at: &Location) {
        if self.gateway.first.is_none() {
            self.gateway.first = Some(at.clone());
        }
    }

    fn extension_policy(&mut self, spec: &Value, at: &Location, spec_path: &str) {
        self.gateway_seen(at);
        for (wasm, path) in array(spec, "wasm", spec_path) {
            let code = wasm.get("code").unwrap_or(&Value::Null);
            let url = code
                .get("image")
                .and_then(|i| string(i, "url"))
                .or_else(|| code.get("http").and_then(|h| string(h, "url")));
            let root_id = string(wasm, "rootID");
            let ours = root_id.is_some_and(|r| r.starts_with("trustip"))
                || contains_trustip(string(wasm, "name"))
                || contains_trustip(url);
            if !ours {
                continue;
            }
            let text = policy_text(wasm.get("config"));
            let fail_open =
                (wasm.get("failOpen").and_then(Value::as_bool) == Some(true)).then(|| {
                    (
                        at.at(&child(&path, "failOpen")),
                        "failOpen: true".to_string(),
                    )
                });
            self.gateway.http.push(Trustip {
                build: Build::Wasm,
                kind: Kind::Http,
                location: at.at(&path),
                selector: root_id.map(str::to_string),
                fail_open,
                vm: None,
                disabled: Vec::new(),
                policy_location: at.at(&child(&path, "config")),
                policy: compile(&text),
                policy_text: text,
            });
        }
        for (module, path) in array(spec, "dynamicModule", spec_path) {
            let filter_name = string(module, "filterName");
            let ours = filter_name.is_some_and(|f| f.starts_with("trustip"))
                || contains_trustip(string(module, "name"));
            if !ours {
                continue;
            }
            let text = policy_text(module.get("config"));
            self.gateway.http.push(Trustip {
                build: Build::Native,
                kind: Kind::Http,
                location: at.at(&path),
                selector: filter_name.map(str::to_string),
                fail_open: None,
                vm: None,
                disabled: Vec::new(),
                policy_location: at.at(&child(&path, "config")),
                policy: compile(&text),
                policy_text: text,
            });
        }
    }

    fn client_traffic_policy(&mut self, spec: &Value, at: &Location, spec_path: &str) {
        self.gateway_seen(at);
        self.gateway.ctp = Some(at.at(spec_path));
        let pp = if let Some(pp) = spec.get("proxyProtocol") {
            Some((
                !pp.get("optional").and_then(Value::as_bool).unwrap_or(false),
                child(spec_path, "proxyProtocol"),
            ))
        } else if spec.get("enableProxyProtocol").and_then(Value::as_bool) == Some(true) {
            Some((true, child(spec_path, "enableProxyProtocol")))
        } else {
            None
        };
        if let Some((strict, path)) = pp {
            self.gateway.proxy_protocol = Some(ProxyProtocol {
                location: at.at(&path),
                strict: Some(strict),
                tlv_filter_state: false,
                tlv_rules: Vec::new(),
            });
        }
        if let Some(detection) = spec.get("clientIPDetection") {
            if detection.get("xForwardedFor").is_some() || detection.get("customHeader").is_some() {
                self.gateway.client_ip_detection =
                    Some(at.at(&child(spec_path, "clientIPDetection")));
            }
        }
        if let Some(action) = spec
            .get("headers")
            .and_then(|h| string(h, "withUnderscoresAction"))
        {
            let path = child(&child(spec_path, "headers"), "withUnderscoresAction");
            self.gateway.underscores = Some((action.to_string(), at.at(&path)));
        }
        if let Some(path) = spec.get("healthCheck").and_then(|h| string(h, "path")) {
            self.gateway.health_check = Some((
                path.to_string(),
                at.at(&child(&child(spec_path, "healthCheck"), "path")),
            ));
        }
    }

    /// The gateways the resources describe.
    pub fn finish(self, out: &mut Deployment) {
        let Kube { istio, gateway } = self;
        if let Some(first) = istio.first {
            let anchor = istio
                .http
                .first()
                .map(|t| t.location.clone())
                .or_else(|| istio.hcm_patch.clone())
                .unwrap_or_else(|| first.clone());
            let (use_remote_address, use_remote_address_at) = istio.use_remote_address.unwrap_or((
                true,
                istio.hcm_patch.clone().unwrap_or_else(|| anchor.clone()),
            ));
            let (skip_xff_append, skip_xff_append_at) = istio.skip_xff_append.unwrap_or((
                false,
                istio.hcm_patch.clone().unwrap_or_else(|| anchor.clone()),
            ));
            let (underscores, underscores_at) = istio.underscores.unwrap_or((
                "ALLOW".to_string(),
                istio.hcm_patch.clone().unwrap_or_else(|| anchor.clone()),
            ));
            let (trusted_proxies, xff_num_trusted_hops_at) =
                istio.trusted_proxies.unwrap_or_else(|| (0, first.clone()));
            let mut filters = Vec::new();
            if !istio.filter_state.is_empty() {
                filters.push(NetworkFilter::SetFilterState(istio.filter_state));
            }
            filters.extend(
                istio
                    .network
                    .into_iter()
                    .map(|t| NetworkFilter::Trustip(Box::new(t))),
            );
            if !istio.http.is_empty() || istio.hcm_patch.is_some() {
                filters.push(NetworkFilter::Hcm(Box::new(Hcm {
                    use_remote_address,
                    use_remote_address_at,
                    xff_num_trusted_hops: trusted_proxies,
                    xff_num_trusted_hops_at,
                    skip_xff_append,
                    skip_xff_append_at,
                    underscores,
                    underscores_at,
                    http: istio.http,
                    health_checks: Vec::new(),
                    clusters: Vec::new(),
                    routes_unknown: true,
                })));
            }
            out.listeners.push(Listener {
                platform: Platform::Istio,
                scope: "istio".to_string(),
                location: first.clone(),
                proxy_protocol: istio.proxy_protocol.map(|pp| (0, pp)),
                native: Vec::new(),
                chains: vec![Chain {
                    location: first,
                    filters,
                    opaque: false,
                }],
            });
        }
        if let Some(first) = gateway.first {
            let ctp = gateway.ctp.clone().unwrap_or_else(|| first.clone());
            let (underscores, underscores_at) = match gateway.underscores {
                Some((action, at)) => (
                    match action.as_str() {
                        "Allow" => "ALLOW",
                        "DropHeader" => "DROP_HEADER",
                        _ => "REJECT_REQUEST",
                    }
                    .to_string(),
                    at,
                ),
                None => ("REJECT_REQUEST".to_string(), ctp.clone()),
            };
            let hcm = Hcm {
                use_remote_address: gateway.client_ip_detection.is_none(),
                use_remote_address_at: gateway.client_ip_detection.unwrap_or_else(|| ctp.clone()),
                xff_num_trusted_hops: 0,
                xff_num_trusted_hops_at: ctp.clone(),
                skip_xff_append: false,
                skip_xff_append_at: ctp.clone(),
                underscores,
                underscores_at,
                http: gateway.http,
                health_checks: gateway.health_check.into_iter().collect(),
                clusters: Vec::new(),
                routes_unknown: true,
            };
            out.upstreams.extend(gateway.upstreams);
            out.listeners.push(Listener {
                platform: Platform::EnvoyGateway,
                scope: "envoy-gateway".to_string(),
                location: first.clone(),
                proxy_protocol: gateway.proxy_protocol.map(|pp| (0, pp)),
                native: Vec::new(),
                chains: vec![Chain {
                    location: first,
                    filters: vec![NetworkFilter::Hcm(Box::new(hcm))],
                    opaque: false,
                }],
            });
        }
    }
}
