//! Envoy Gateway: a Gateway (or `--gateway NAME`, an existing one), a ClientTrafficPolicy with
//! the listener settings trustip needs (PROXY parsed, optional only when the policy admits
//! clients without it; client-IP detection left to trustip; header names with underscores
//! dropped), and an EnvoyExtensionPolicy running trustip's HTTP filter: the wasm module from an
//! OCI image or an http(s) url, or the native module registered in an EnvoyProxy resource.
//!
//! What Envoy Gateway cannot express (its extension policies add HTTP filters only): trustip's
//! network role or native listener filter, `set_filter_state` (the wasm build's direct peer D),
//! proxy_protocol TLV rules and `skip_xff_append`. render refuses the policies that would need
//! them, with one line saying why; docs/envoy-gateway.md has the details.

use std::net::IpAddr;

use serde::Serialize;
use trustip::core::names;

use crate::error::CliError;
use crate::policy_file::PolicyFile;
use crate::render::image::{self, Image};
use crate::render::k8s::{Metadata, Resource};
use crate::render::model::Role;
use crate::render::yaml::{self, Anchors, Node};
use crate::render::{BuildKind, RenderArgs};

/// `--namespace` when not given.
const DEFAULT_NAMESPACE: &str = "default";
/// `--gateway-class` when not given: the class Envoy Gateway's quickstart installs.
const DEFAULT_GATEWAY_CLASS: &str = "eg";
/// The name of every resource render writes (different kinds).
const NAME: &str = "trustip";
/// The name the EnvoyProxy registers the native module under.
const MODULE_NAME: &str = "trustip";
const GATEWAY_API: &str = "gateway.networking.k8s.io";
const EG_API: &str = "gateway.envoyproxy.io";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GatewaySpec {
    gateway_class_name: String,
    listeners: Vec<Listener>,
    #[serde(skip_serializing_if = "Option::is_none")]
    infrastructure: Option<Infrastructure>,
}

#[derive(Serialize)]
struct Listener {
    name: &'static str,
    protocol: &'static str,
    port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Infrastructure {
    parameters_ref: LocalRef,
}

#[derive(Serialize)]
struct LocalRef {
    group: &'static str,
    kind: &'static str,
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvoyProxySpec {
    dynamic_modules: Vec<DynamicModuleEntry>,
}

#[derive(Serialize)]
struct DynamicModuleEntry {
    name: &'static str,
    source: ModuleSource,
}

#[derive(Serialize)]
struct ModuleSource {
    #[serde(rename = "type")]
    source_type: &'static str,
    local: LocalPath,
}

#[derive(Serialize)]
struct LocalPath {
    path: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientTrafficPolicySpec {
    target_refs: Vec<LocalRef>,
    proxy_protocol: ProxyProtocol,
    headers: Headers,
}

#[derive(Serialize)]
struct ProxyProtocol {
    optional: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Headers {
    with_underscores_action: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtensionPolicySpec {
    target_refs: Vec<LocalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wasm: Option<Vec<Wasm>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic_module: Option<Vec<DynamicModule>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wasm {
    name: &'static str,
    #[serde(rename = "rootID")]
    root_id: &'static str,
    code: WasmCode,
    config: serde_json::Value,
    fail_open: bool,
}

#[derive(Serialize)]
struct WasmCode {
    #[serde(rename = "type")]
    code_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<CodeSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<CodeSource>,
}

#[derive(Serialize)]
struct CodeSource {
    url: String,
    sha256: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DynamicModule {
    name: &'static str,
    filter_name: &'static str,
    config: serde_json::Value,
}

fn usage(text: impl Into<String>) -> CliError {
    CliError::Usage(text.into())
}

fn document<T: Serialize>(comment: &str, value: &T) -> Result<String, CliError> {
    let node = Node::from_serialize(value).map_err(|err| usage(err.to_string()))?;
    Ok(format!(
        "---\n{}{}",
        yaml::comment(comment),
        yaml::document(&node, &mut Anchors::default())
    ))
}

/// Whether a `from` entry is a whole address family (`0.0.0.0/0`, `::/0`): Some(is IPv4).
fn whole_family(block: &str) -> Option<bool> {
    let (address, prefix) = block.split_once('/')?;
    if prefix != "0" {
        return None;
    }
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some(true),
        IpAddr::V6(_) => Some(false),
    }
}

/// Whether the listener may refuse every connection without a PROXY header: only when the
/// policy admits no client without one. That holds when the policy enforces (shadow mode
/// refuses nobody) and its rules, all `require` without `health_check_paths` or `deny`, cover
/// every IPv4 and IPv6 peer (a `0.0.0.0/0` and a `::/0` among their `from`). Any other policy
/// admits some connection without PROXY (a `use`/`ignore`/`reject` rule, a health check, or
/// the implicit last rule `reject`, C = D), so PROXY stays optional and trustip decides.
pub fn proxy_required(policy: &serde_json::Value) -> bool {
    if policy.get("mode").and_then(|m| m.as_str()) == Some("shadow") {
        return false;
    }
    let rules = policy
        .get("rules")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (mut v4, mut v6) = (false, false);
    for rule in rules {
        let kind = rule.get("proxy_protocol").and_then(|p| p.as_str());
        let refuses_direct = match kind {
            Some("require") => rule.get("health_check_paths").is_none(),
            Some("deny") => true,
            _ => false,
        };
        if !refuses_direct {
            return false;
        }
        for block in rule
            .get("from")
            .and_then(|f| f.as_array())
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
        {
            match whole_family(block) {
                Some(true) => v4 = true,
                Some(false) => v6 = true,
                None => {}
            }
        }
    }
    v4 && v6
}

/// The native module's path inside the proxy container: given, absolute.
fn module_path(args: &RenderArgs) -> Result<String, CliError> {
    let Some(path) = &args.module else {
        return Err(usage(
            "--target envoy-gateway --build native needs --module PATH: the absolute path of libtrustip.so inside the Envoy proxy container (Envoy Gateway loads dynamic modules from the proxy's filesystem; ship it in the image or a volume)",
        ));
    };
    let text = path.display().to_string();
    if !path.is_absolute() || text.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(usage(format!(
            "--module {text:?}: expected the absolute path of libtrustip.so inside the Envoy proxy container (/usr/local/lib/envoy/libtrustip.so)"
        )));
    }
    Ok(text)
}

/// The policy against what Envoy Gateway can wire: each gap one usage line.
fn check_policy(file: &PolicyFile, build: BuildKind) -> Result<(), CliError> {
    if let Some(key) = file.policy.tlv_keys_used.first() {
        return Err(usage(format!(
            "the policy reads the PROXY v2 TLV {}: Envoy Gateway's proxy_protocol listener filter keeps no TLVs (its ClientTrafficPolicy has no TLV rules), so the TLV would always be missing; remove \"tlvs\" and \"headers.tlv\" from the policy, or use --target envoy",
            key.name()
        )));
    }
    let if_missing = file
        .json
        .get("direct_peer")
        .and_then(|d| d.get("if_missing"))
        .and_then(|m| m.as_str());
    if build == BuildKind::Wasm && if_missing != Some("trust_source") {
        return Err(usage(
            "--target envoy-gateway with the wasm build: Envoy Gateway adds wasm HTTP filters only, without the set_filter_state network filter that gives the wasm filter the TCP peer D, so every request would be refused no_direct_peer; use --build native (its HTTP filter reads D itself), or, if nothing but the load balancer can reach the Gateway, say \"direct_peer\": {\"if_missing\": \"trust_source\"} in the policy (D := the PROXY source); render does not change the policy",
        ));
    }
    let rules = file
        .json
        .get("rules")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let require = rules
        .iter()
        .position(|rule| rule.get("proxy_protocol").and_then(|p| p.as_str()) == Some("require"));
    if let (BuildKind::Wasm, Some(index)) = (build, require) {
        return Err(usage(format!(
            "--target envoy-gateway with the wasm build: rules[{index}] is a require rule, which would refuse every request missing_proxy: with \"if_missing\": \"trust_source\" D is the PROXY source itself, so no PROXY header ever counts as used; use --build native, whose HTTP filter reads the TCP peer, or a use rule"
        )));
    }
    Ok(())
}

pub fn resources(file: &PolicyFile, args: &RenderArgs) -> Result<String, CliError> {
    let build = args.build;
    check_policy(file, build)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let metadata = || Metadata {
        name: NAME.to_string(),
        namespace: namespace.clone(),
    };
    let gateway_name = args.gateway.clone().unwrap_or_else(|| NAME.to_string());
    let target_refs = || {
        vec![LocalRef {
            group: GATEWAY_API,
            kind: "Gateway",
            name: gateway_name.clone(),
        }]
    };
    let proxy_optional = !(args.strict_proxy || proxy_required(&file.json));

    let (extension, module) = match build {
        BuildKind::Wasm => {
            let Some(text) = &args.image else {
                return Err(usage(
                    "--target envoy-gateway with the wasm build needs --image oci://REGISTRY/REPOSITORY:TAG --image-digest sha256:... (or an https url with --image-digest, the file's sha256): Envoy Gateway fetches wasm code, it cannot read a local file",
                ));
            };
            let (code_type, url, sha256, is_image) =
                match image::parse(text, args.image_digest.as_deref())? {
                    // Envoy Gateway's image url has no scheme.
                    Image::Oci { reference, digest } => ("Image", reference, digest, true),
                    Image::Http {
                        url,
                        sha256: Some(sha256),
                    } => ("HTTP", url, sha256, false),
                    Image::Http { sha256: None, .. } => {
                        return Err(usage(format!(
                            "--image {text}: add --image-digest sha256:<64 hex>, the sha256 of the file the url serves: Envoy Gateway does not verify wasm code fetched without it"
                        )))
                    }
                };
            let source = CodeSource { url, sha256 };
            let wasm = Wasm {
                name: Role::Http.root_id(),
                root_id: Role::Http.root_id(),
                code: if is_image {
                    WasmCode {
                        code_type,
                        image: Some(source),
                        http: None,
                    }
                } else {
                    WasmCode {
                        code_type,
                        image: None,
                        http: Some(source),
                    }
                },
                config: file.json.clone(),
                fail_open: false,
            };
            (
                ExtensionPolicySpec {
                    target_refs: target_refs(),
                    wasm: Some(vec![wasm]),
                    dynamic_module: None,
                },
                None,
            )
        }
        BuildKind::Native => {
            let path = module_path(args)?;
            (
                ExtensionPolicySpec {
                    target_refs: target_refs(),
                    wasm: None,
                    dynamic_module: Some(vec![DynamicModule {
                        name: MODULE_NAME,
                        filter_name: names::HTTP_FILTER_NAME,
                        config: file.json.clone(),
                    }]),
                },
                Some(path),
            )
        }
    };

    let mut out = yaml::comment(&format!(
        "Rendered by `trustip render --target envoy-gateway` ({} build).\n\
         Envoy Gateway's extension policies add HTTP filters only: trustip decides per request\n\
         (the connection-level decision of --target envoy happens on each request instead), and\n\
         a request that matches no route (Envoy Gateway's 404) does not run it.{}",
        match build {
            BuildKind::Wasm => "wasm",
            BuildKind::Native => "native",
        },
        match build {
            BuildKind::Wasm => "\nWasm build: Envoy Gateway cannot add the set_filter_state filter that gives it the\n\
                 TCP peer, so the policy takes the PROXY source for it (if_missing: trust_source):\n\
                 any peer that reaches the Gateway is believed, and reject / ignore rules do nothing.\n\
                 Keep the Gateway reachable only through the load balancer and use --strict-proxy,\n\
                 or use the native build (--build native), which reads the TCP peer itself.",
            BuildKind::Native => "",
        }
    ));
    if let Some(path) = &module {
        let proxy = Resource {
            api_version: "gateway.envoyproxy.io/v1alpha1",
            kind: "EnvoyProxy",
            metadata: metadata(),
            spec: EnvoyProxySpec {
                dynamic_modules: vec![DynamicModuleEntry {
                    name: MODULE_NAME,
                    source: ModuleSource {
                        source_type: "Local",
                        local: LocalPath { path: path.clone() },
                    },
                }],
            },
        };
        let reference = if args.gateway.is_some() {
            "Reference it from your Gateway (spec.infrastructure.parametersRef) or GatewayClass\n\
             (spec.parametersRef)."
        } else {
            "The Gateway below references it (spec.infrastructure.parametersRef)."
        };
        out.push_str(&document(
            &format!(
                "Registers trustip's native module (libtrustip.so, built for the Envoy the proxy runs:\n\
                 1.40's dynamic-module ABI). The file must be at this path in the proxy container.\n\
                 {reference}"
            ),
            &proxy,
        )?);
    }
    if args.gateway.is_none() {
        let gateway = Resource {
            api_version: "gateway.networking.k8s.io/v1",
            kind: "Gateway",
            metadata: metadata(),
            spec: GatewaySpec {
                gateway_class_name: args
                    .gateway_class
                    .clone()
                    .unwrap_or_else(|| DEFAULT_GATEWAY_CLASS.to_string()),
                listeners: vec![Listener {
                    name: "http",
                    protocol: "HTTP",
                    port: 80,
                }],
                infrastructure: module.as_ref().map(|_| Infrastructure {
                    parameters_ref: LocalRef {
                        group: EG_API,
                        kind: "EnvoyProxy",
                        name: NAME.to_string(),
                    },
                }),
            },
        };
        out.push_str(&document(
            "The Gateway the policies below attach to (or give --gateway NAME for an existing one).",
            &gateway,
        )?);
    }
    let client = Resource {
        api_version: "gateway.envoyproxy.io/v1alpha1",
        kind: "ClientTrafficPolicy",
        metadata: metadata(),
        spec: ClientTrafficPolicySpec {
            target_refs: target_refs(),
            proxy_protocol: ProxyProtocol {
                optional: proxy_optional,
            },
            headers: Headers {
                with_underscores_action: "DropHeader",
            },
        },
    };
    out.push_str(&document(
        &format!(
            "The listener parses PROXY headers ({}).\n\
             clientIPDetection stays unset: trustip decides the client. Envoy Gateway's\n\
             xForwardedFor or customHeader detection would switch use_remote_address off (the HCM\n\
             would then take the client from X-Forwarded-For) and would second-guess trustip.\n\
             Header names with underscores (x_forwarded_for, x_real_ip) are dropped before any\n\
             filter sees them.",
            if proxy_optional {
                "optional: the policy admits some connections without one, and trustip's rules decide"
            } else if args.strict_proxy {
                "required: --strict-proxy"
            } else {
                "required: the policy admits no connection without one"
            }
        ),
        &client,
    )?);
    let what = match build {
        BuildKind::Wasm => {
            "trustip's HTTP role (wasm): rootID selects it inside the module; failOpen false: a\n\
             module that fails to load or traps answers 5xx instead of letting clients through.\n\
             The config is the policy, passed to the module as JSON text."
        }
        BuildKind::Native => {
            "trustip's native HTTP filter (filterName trustip-http) from the module the EnvoyProxy\n\
             registers; it reads the TCP peer itself. The config is the policy, passed to the\n\
             module as JSON text."
        }
    };
    out.push_str(&document(
        what,
        &Resource {
            api_version: "gateway.envoyproxy.io/v1alpha1",
            kind: "EnvoyExtensionPolicy",
            metadata: metadata(),
            spec: extension,
        },
    )?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxy_required_only_when_no_peer_is_admitted_without_it() {
        let all = json!({"rules": [{"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "require"}]});
        assert!(proxy_required(&all));
        let split = json!({"rules": [
            {"from": ["192.0.2.0/24"], "proxy_protocol": "deny"},
            {"from": ["0.0.0.0/0"], "proxy_protocol": "require"},
            {"from": ["::/0"], "proxy_protocol": "require"},
        ]});
        assert!(proxy_required(&split));
        for admitting in [
            json!({}),
            json!({"rules": [{"from": ["10.0.0.0/8"], "proxy_protocol": "require"}]}),
            json!({"rules": [{"from": ["0.0.0.0/0"], "proxy_protocol": "require"}]}),
            json!({"mode": "shadow", "rules": [{"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "require"}]}),
            json!({"rules": [{"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "require", "health_check_paths": ["/h"]}]}),
            json!({"rules": [
                {"from": ["10.0.0.5/32"], "proxy_protocol": "use"},
                {"from": ["0.0.0.0/0", "::/0"], "proxy_protocol": "require"},
            ]}),
        ] {
            assert!(!proxy_required(&admitting), "{admitting}");
        }
    }
}
