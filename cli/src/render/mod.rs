//! `trustip render`: deployment configuration built from a policy, so nobody wires trustip by
//! hand. One module per target.

mod compose;
mod envoy;
mod istio;

use std::path::PathBuf;

use trustip::core::config::Policy;
use trustip::core::tlv::TlvEncoding;

use crate::error::CliError;
use crate::hostport::{parse_host_port, parse_socket_addr};
use crate::policy_file::PolicyFile;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A complete, runnable Envoy bootstrap (YAML).
    Envoy,
    /// Istio WasmPlugin resources for both roles plus the EnvoyFilter they need.
    Istio,
    /// A docker-compose stack: HAProxy (send-proxy-v2) -> Envoy + trustip -> httpbin.
    Compose,
}

/// Print deployment configuration built from a policy. The policy is validated by the filter's
/// own configuration step first; an invalid one is refused with the same error line.
#[derive(clap::Args)]
pub struct RenderArgs {
    /// The policy: the filter's JSON plugin configuration.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// What to render.
    #[arg(long, value_enum)]
    pub target: Target,
    /// The trustip.wasm file (envoy, compose: path Envoy loads; istio: a file:// url with its
    /// sha256).
    #[arg(long, value_name = "PATH", conflicts_with = "image")]
    pub wasm: Option<PathBuf>,
    /// istio only: the module's OCI image or http(s) url (oci://registry/trustip:tag).
    #[arg(long, value_name = "URL")]
    pub image: Option<String>,
    /// The listener address (envoy).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:10000")]
    pub listen: String,
    /// The upstream the listener routes to (envoy, compose: host name or IP).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub upstream: String,
    /// Envoy's admin address (envoy), kept on loopback by default.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9901")]
    pub admin: String,
    /// Refuse connections without a PROXY header at the listener
    /// (allow_requests_without_proxy_protocol: false). Default: allow them, and let trustip's
    /// rules decide.
    #[arg(long)]
    pub strict_proxy: bool,
    /// istio: namespace of the gateway.
    #[arg(long, value_name = "NAME", default_value = "istio-system")]
    pub namespace: String,
    /// istio: label selecting the ingress gateway pods.
    #[arg(long, value_name = "KEY=VALUE", default_value = "istio=ingressgateway")]
    pub gateway_label: String,
    /// compose: the directory to write the stack into (docker-compose.yml, envoy.yaml,
    /// haproxy.cfg, policy.json).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/trustip.wasm";

/// A JSON string literal, also a valid YAML double-quoted scalar.
pub fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The proxy_protocol listener filter's `rules` for the TLV keys the policy uses, with the
/// value encoding the policy expects (`tlv_encoding: base64` keeps binary ids intact).
pub fn tlv_rules(policy: &Policy, indent: &str) -> String {
    let keys = &policy.tlv_keys_used;
    if keys.is_empty() {
        return format!("{indent}rules: []   # the policy reads no TLVs\n");
    }
    let encoding = match policy.tlv_encoding {
        TlvEncoding::Raw => "",
        TlvEncoding::Base64 => ", value_string_encoding: BASE64",
    };
    let mut out = format!("{indent}rules:\n");
    for key in keys {
        out.push_str(&format!(
            "{indent}- tlv_type: {}   # 0x{:02X}\n{indent}  on_tlv_present: {{key: {}{encoding}}}\n",
            key.tlv_type(),
            key.tlv_type(),
            key.name()
        ));
    }
    out
}

pub fn run(args: &RenderArgs) -> Result<u8, CliError> {
    let file = PolicyFile::load(&args.config)?;
    if args.image.is_some() && args.target != Target::Istio {
        return Err(CliError::Usage(
            "--image is only for --target istio; use --wasm PATH".to_string(),
        ));
    }
    match args.target {
        Target::Envoy => {
            let wasm = args
                .wasm
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_WASM));
            let options = envoy::Options {
                listen: parse_socket_addr("--listen", &args.listen)?,
                admin: parse_socket_addr("--admin", &args.admin)?,
                upstream: parse_host_port("--upstream", &args.upstream)?.into_parts(),
                wasm: wasm.display().to_string(),
                strict_proxy: args.strict_proxy,
            };
            print!("{}", envoy::bootstrap(&file, &options));
        }
        Target::Istio => print!("{}", istio::resources(&file, args)?),
        Target::Compose => compose::write(&file, args)?,
    }
    Ok(0)
}
