//! Istio: a WasmPlugin per role (same pluginConfig, pluginName = root_id, FAIL_CLOSE), and an
//! EnvoyFilter adding what WasmPlugin cannot: set_filter_state, the proxy_protocol TLVs, and the
//! HCM's client-address settings (use_remote_address, skip_xff_append, underscores dropped).
//! The patch values are the same typed pieces the Envoy bootstrap is built from.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::CliError;
use crate::policy_file::PolicyFile;
use crate::render::envoy_api::{self as api, Extension, TypedConfig};
use crate::render::image;
use crate::render::k8s::{Metadata, Resource};
use crate::render::model::{hcm_client_address, proxy_protocol, set_filter_state, Role};
use crate::render::yaml::{self, Anchors, Node};
use crate::render::{RenderArgs, DEFAULT_WASM};

/// `--namespace` when not given.
const DEFAULT_NAMESPACE: &str = "istio-system";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmPluginSpec {
    selector: Selector,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// For an image or http url: IfNotPresent (a pinned module never changes) unless asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    image_pull_policy: Option<&'static str>,
    /// The root_id: it selects the role inside the one module.
    plugin_name: &'static str,
    #[serde(rename = "type")]
    plugin_type: &'static str,
    phase: &'static str,
    /// A module that fails to load must not let unverified clients through.
    fail_strategy: &'static str,
    plugin_config: serde_json::Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvoyFilterSpec {
    workload_selector: WorkloadSelector,
    config_patches: Vec<Patch>,
}

#[derive(Serialize)]
struct WorkloadSelector {
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Patch {
    apply_to: &'static str,
    #[serde(rename = "match")]
    match_: PatchMatch,
    patch: PatchOperation,
}

#[derive(Serialize)]
struct PatchMatch {
    context: &'static str,
    listener: ListenerMatch,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListenerMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_chain: Option<FilterChainMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listener_filter: Option<&'static str>,
}

#[derive(Serialize)]
struct FilterChainMatch {
    filter: FilterMatch,
}

#[derive(Serialize)]
struct FilterMatch {
    name: &'static str,
}

#[derive(Serialize)]
struct PatchOperation {
    operation: &'static str,
    value: PatchValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PatchValue {
    /// A whole filter, inserted.
    Filter(Extension),
    /// Fields merged into an existing filter's configuration.
    Merge { typed_config: TypedConfig },
}

fn gateway_hcm() -> PatchMatch {
    PatchMatch {
        context: "GATEWAY",
        listener: ListenerMatch {
            filter_chain: Some(FilterChainMatch {
                filter: FilterMatch {
                    name: api::HTTP_CONNECTION_MANAGER,
                },
            }),
            listener_filter: None,
        },
    }
}

/// The module's url, its sha256 and the pull policy (images only).
type ModuleSource = (String, Option<String>, Option<&'static str>);

fn module_source(args: &RenderArgs) -> Result<ModuleSource, CliError> {
    if let Some(text) = &args.image {
        let image = image::parse(text, args.image_digest.as_deref())?;
        let policy = image::pull_policy(&image, args.image_pull_policy)?;
        return Ok((
            image.istio_url(),
            image.sha256().map(str::to_string),
            Some(policy.name()),
        ));
    }
    let path = args.wasm.clone().unwrap_or_else(|| DEFAULT_WASM.into());
    let bytes = std::fs::read(&path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let absolute = std::fs::canonicalize(&path).unwrap_or(path);
    let digest = Sha256::digest(&bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok((format!("file://{}", absolute.display()), Some(hex), None))
}

fn document<T: Serialize>(comment: &str, value: &T) -> Result<String, CliError> {
    let node = Node::from_serialize(value).map_err(|err| CliError::Usage(err.to_string()))?;
    Ok(format!(
        "---\n{}{}",
        yaml::comment(comment),
        yaml::document(&node, &mut Anchors::default())
    ))
}

pub fn resources(file: &PolicyFile, args: &RenderArgs) -> Result<String, CliError> {
    let (label_key, label_value) = args.gateway_label.split_once('=').ok_or_else(|| {
        CliError::Usage(format!(
            "--gateway-label {:?}: expected KEY=VALUE",
            args.gateway_label
        ))
    })?;
    let labels = BTreeMap::from([(label_key.to_string(), label_value.to_string())]);
    let (url, sha256, image_pull_policy) = module_source(args)?;
    let namespace = args.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let mut out = yaml::comment(&format!(
        "Rendered by `trustip render --target istio`.\n\
         Before applying: the ingress gateway must parse PROXY headers. Annotate its Deployment\n\
         (pod template) with\n  \
           proxy.istio.io/config: '{{\"gatewayTopology\":{{\"proxyProtocol\":{{}}}}}}'\n\
         e.g. kubectl -n {namespace} patch deployment istio-ingressgateway --type merge -p \\\n  \
           '{{\"spec\":{{\"template\":{{\"metadata\":{{\"annotations\":{{\"proxy.istio.io/config\":\"{{\\\"gatewayTopology\\\":{{\\\"proxyProtocol\\\":{{}}}}}}\"}}}}}}}}}}'\n\
         WasmPlugin has no vm_id: Istio keys a wasm VM by the module alone, so the two plugins\n\
         below share one VM per worker (render --target envoy gives each role its own)."
    ));
    for (role, plugin_type, what) in [
        (
            Role::Network,
            "NETWORK",
            "network role: decides once per connection and closes rejected ones",
        ),
        (
            Role::Http,
            "HTTP",
            "HTTP role: decides per request and writes the client-IP headers",
        ),
    ] {
        let plugin = Resource {
            api_version: "extensions.istio.io/v1alpha1",
            kind: "WasmPlugin",
            metadata: Metadata {
                name: role.root_id().to_string(),
                namespace: namespace.to_string(),
            },
            spec: WasmPluginSpec {
                selector: Selector {
                    match_labels: labels.clone(),
                },
                url: url.clone(),
                sha256: sha256.clone(),
                image_pull_policy,
                plugin_name: role.root_id(),
                plugin_type,
                phase: "AUTHN",
                fail_strategy: "FAIL_CLOSE",
                plugin_config: file.json.clone(),
            },
        };
        out.push_str(&document(
            &format!(
                "trustip, {what}.\n\
                 pluginName is the root_id: it selects the role inside the one module."
            ),
            &plugin,
        )?);
    }
    let wiring = Resource {
        api_version: "networking.istio.io/v1alpha3",
        kind: "EnvoyFilter",
        metadata: Metadata {
            name: "trustip-wiring".to_string(),
            namespace: namespace.to_string(),
        },
        spec: EnvoyFilterSpec {
            workload_selector: WorkloadSelector { labels },
            config_patches: vec![
                // Remember the TCP peer before PROXY processing (the direct peer D) and the
                // PROXY-derived source P as the connection opened.
                Patch {
                    apply_to: "NETWORK_FILTER",
                    match_: gateway_hcm(),
                    patch: PatchOperation {
                        operation: "INSERT_FIRST",
                        value: PatchValue::Filter(set_filter_state(&file.policy)),
                    },
                },
                // Keep the PROXY v2 TLVs the policy reads where the wasm filters see them.
                Patch {
                    apply_to: "LISTENER_FILTER",
                    match_: PatchMatch {
                        context: "GATEWAY",
                        listener: ListenerMatch {
                            filter_chain: None,
                            listener_filter: Some(api::PROXY_PROTOCOL),
                        },
                    },
                    patch: PatchOperation {
                        operation: "MERGE",
                        value: PatchValue::Merge {
                            typed_config: TypedConfig::ProxyProtocol(proxy_protocol(
                                &file.policy,
                                None,
                                &[],
                            )),
                        },
                    },
                },
                // trustip writes X-Forwarded-For; the HCM must not append to it, and header
                // names with underscores are dropped.
                Patch {
                    apply_to: "NETWORK_FILTER",
                    match_: gateway_hcm(),
                    patch: PatchOperation {
                        operation: "MERGE",
                        value: PatchValue::Merge {
                            typed_config: TypedConfig::HcmClientAddress(hcm_client_address()),
                        },
                    },
                },
            ],
        },
    };
    out.push_str(&document(
        "What WasmPlugin cannot express: the direct peer in filter state, the TLVs in filter\n\
         state, and an HCM that leaves X-Forwarded-For to trustip and drops header names with\n\
         underscores (x_forwarded_for, x_real_ip) before any filter sees them.",
        &wiring,
    )?);
    Ok(out)
}
