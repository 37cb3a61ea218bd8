//! Istio: a WasmPlugin per role (same pluginConfig, pluginName = root_id, FAIL_CLOSE), an
//! EnvoyFilter adding what WasmPlugin cannot (set_filter_state, proxy_protocol TLVs,
//! skip_xff_append), and the gateway annotation that turns PROXY parsing on.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::error::CliError;
use crate::policy_file::PolicyFile;
use crate::render::{quoted, tlv_rules, RenderArgs, DEFAULT_WASM};

fn module_source(args: &RenderArgs) -> Result<(String, Option<String>), CliError> {
    if let Some(image) = &args.image {
        return Ok((image.clone(), None));
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
    Ok((format!("file://{}", absolute.display()), Some(hex)))
}

pub fn resources(file: &PolicyFile, args: &RenderArgs) -> Result<String, CliError> {
    let (url, sha256) = module_source(args)?;
    let (label_key, label_value) = args.gateway_label.split_once('=').ok_or_else(|| {
        CliError::Usage(format!(
            "--gateway-label {:?}: expected KEY=VALUE",
            args.gateway_label
        ))
    })?;
    let namespace = quoted(&args.namespace);
    let selector = format!(
        "  selector:\n    matchLabels:\n      {}: {}\n",
        quoted(label_key),
        quoted(label_value)
    );
    let sha_line = sha256
        .map(|h| format!("  sha256: {h}\n"))
        .unwrap_or_default();
    let config = file.compact();
    let mut out = String::new();
    out.push_str(&format!(
        "# Rendered by `trustip render --target istio`.\n\
# Before applying: the ingress gateway must parse PROXY headers. Annotate its Deployment\n\
# (pod template) with\n\
#   proxy.istio.io/config: '{{\"gatewayTopology\":{{\"proxyProtocol\":{{}}}}}}'\n\
# e.g. kubectl -n {ns} patch deployment istio-ingressgateway --type merge -p \\\n\
#   '{{\"spec\":{{\"template\":{{\"metadata\":{{\"annotations\":{{\"proxy.istio.io/config\":\"{{\\\"gatewayTopology\\\":{{\\\"proxyProtocol\\\":{{}}}}}}\"}}}}}}}}}}'\n",
        ns = args.namespace
    ));
    for (role, plugin_type, what) in [
        (
            "trustip-network",
            "NETWORK",
            "network role: decides once per connection and closes rejected ones",
        ),
        (
            "trustip-http",
            "HTTP",
            "HTTP role: decides per request and writes the client-IP headers",
        ),
    ] {
        out.push_str(&format!(
            "---\n# trustip, {what}.\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: {role}\n  namespace: {namespace}\nspec:\n{selector}  url: {url}\n{sha_line}  # pluginName is the root_id: it selects the role inside the one module.\n  pluginName: {role}\n  type: {plugin_type}\n  phase: AUTHN\n  # A module that fails to load must not let unverified clients through.\n  failStrategy: FAIL_CLOSE\n  pluginConfig: {config}\n",
            url = quoted(&url),
        ));
    }
    let tlv = tlv_rules(&file.policy, "          ");
    out.push_str(&format!(
        r#"---
# What WasmPlugin cannot express: the direct peer in filter state, the TLVs in filter state,
# and an HCM that leaves X-Forwarded-For to trustip.
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: trustip-wiring
  namespace: {namespace}
spec:
  workloadSelector:
    labels:
      {label_key}: {label_value}
  configPatches:
  # Remember the TCP peer before PROXY processing (trustip's "direct peer" D) and the
  # PROXY-derived source P as the connection opened: one filter-state read gives both.
  - applyTo: NETWORK_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.network.set_filter_state
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config
          on_new_connection:
          - object_key: {direct_peer}
            factory_key: envoy.string
            format_string:
              text_format_source:
                inline_string: "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%"
  # Keep the PROXY v2 TLVs the policy reads, where the HTTP wasm filter can see them.
  - applyTo: LISTENER_FILTER
    match:
      context: GATEWAY
      listener:
        listenerFilter: envoy.filters.listener.proxy_protocol
    patch:
      operation: MERGE
      value:
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol
          tlv_location: FILTER_STATE
{tlv}  # trustip writes X-Forwarded-For; the HCM must not append to it.
  - applyTo: NETWORK_FILTER
    match:
      context: GATEWAY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
    patch:
      operation: MERGE
      value:
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          use_remote_address: true
          skip_xff_append: true
"#,
        label_key = quoted(label_key),
        label_value = quoted(label_value),
        direct_peer = quoted(&file.policy.direct_peer_key),
    ));
    Ok(out)
}
