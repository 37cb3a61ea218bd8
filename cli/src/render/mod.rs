//! `trustip render`: deployment configuration built from a policy, so nobody wires trustip by
//! hand. One module per target.

mod compose;
mod envoy;
mod envoy_api;
mod istio;
mod model;
mod samples;
mod yaml;

use std::path::PathBuf;

use crate::error::CliError;
use crate::hostport::{parse_host_port, parse_socket_addr};
use crate::policy_file::PolicyFile;
use crate::render::model::{Build, Trustip};

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
    #[arg(long, value_name = "FILE", required_unless_present = "sample")]
    pub config: Option<PathBuf>,
    /// What to render.
    #[arg(long, value_enum, required_unless_present = "sample")]
    pub target: Option<Target>,
    /// Print one of the sample configurations shipped in envoy/ (NAME.yaml), as generated
    /// from the same model.
    #[arg(long, value_name = "NAME", hide = true, conflicts_with_all = ["config", "target"])]
    pub sample: Option<String>,
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

/// trustip with the policy of `file`, loaded by Envoy from `module`.
pub fn trustip(file: &PolicyFile, module: String) -> Trustip {
    Trustip {
        build: Build::Wasm { module },
        policy: file.policy.clone(),
        // The policy as one line of JSON, embedded exactly (a YAML scalar, never text
        // substituted into a template).
        policy_json: file.compact(),
    }
}

pub fn run(args: &RenderArgs) -> Result<u8, CliError> {
    if let Some(name) = &args.sample {
        print!("{}", samples::render(name)?);
        return Ok(0);
    }
    let (Some(config), Some(target)) = (&args.config, args.target) else {
        return Err(CliError::Usage(
            "render needs --config FILE and --target".to_string(),
        ));
    };
    let file = PolicyFile::load(config)?;
    if args.image.is_some() && target != Target::Istio {
        return Err(CliError::Usage(
            "--image is only for --target istio; use --wasm PATH".to_string(),
        ));
    }
    match target {
        Target::Envoy => {
            let wasm = args
                .wasm
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_WASM));
            let options = envoy::Options {
                listen: parse_socket_addr("--listen", &args.listen)?,
                admin: parse_socket_addr("--admin", &args.admin)?,
                upstream: parse_host_port("--upstream", &args.upstream)?.into_parts(),
                strict_proxy: args.strict_proxy,
            };
            let wiring = envoy::wiring(trustip(&file, wasm.display().to_string()), &options);
            print!("{}", envoy::bootstrap(&wiring, options.strict_proxy)?);
        }
        Target::Istio => print!("{}", istio::resources(&file, args)?),
        Target::Compose => compose::write(&file, args)?,
    }
    Ok(0)
}
