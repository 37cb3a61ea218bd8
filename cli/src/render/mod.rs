//! `trustip render`: deployment configuration built from a policy, so nobody wires trustip by
//! hand. One module per target.

mod compose;
mod envoy;
mod envoy_api;
mod envoy_gateway;
mod image;
mod istio;
mod k8s;
mod model;
mod options;
mod samples;
mod yaml;

use std::path::PathBuf;

use crate::error::CliError;
use crate::hostport::{parse_host_port, parse_socket_addr};
use crate::policy_file::PolicyFile;
use crate::render::image::PullPolicy;
use crate::render::model::{Build, Trustip};
use crate::render::options::{gateway_options, GatewayOptions, UpstreamProxyArg};

/// Which build of trustip Envoy runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum BuildKind {
    /// The proxy-wasm module (trustip.wasm): network and HTTP filters.
    Wasm,
    /// The native Envoy dynamic module (libtrustip.so, Envoy 1.40): listener and HTTP filters.
    Native,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A complete, runnable Envoy bootstrap (YAML).
    Envoy,
    /// Istio WasmPlugin resources for both roles plus the EnvoyFilter they need.
    Istio,
    /// A docker-compose stack: HAProxy (send-proxy-v2) -> Envoy + trustip -> httpbin.
    Compose,
    /// Envoy Gateway: the Gateway, a ClientTrafficPolicy (PROXY, headers) and an
    /// EnvoyExtensionPolicy running trustip's HTTP filter (wasm image or native module).
    EnvoyGateway,
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
    /// Which build Envoy runs (envoy, envoy-gateway): the proxy-wasm module, or the native
    /// dynamic module. istio and compose run the wasm build.
    #[arg(long, value_enum, value_name = "BUILD", default_value = "wasm")]
    pub build: BuildKind,
    /// The trustip.wasm file (envoy, compose: path Envoy loads; istio: a file:// url with its
    /// sha256).
    #[arg(long, value_name = "PATH", conflicts_with = "image")]
    pub wasm: Option<PathBuf>,
    /// --build native: the libtrustip.so file Envoy loads (envoy-gateway: its absolute path
    /// inside the proxy container).
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// istio, envoy-gateway: the module's OCI image (oci://registry/trustip:tag, pinned with
    /// --image-digest, or oci://registry/trustip@sha256:...) or http(s) url.
    #[arg(long, value_name = "URL")]
    pub image: Option<String>,
    /// With --image: the OCI image's manifest digest (sha256:<64 hex>), or the sha256 of the
    /// file an http(s) url serves. Written as the resources' sha256.
    #[arg(long, value_name = "sha256:HEX", requires = "image")]
    pub image_digest: Option<String>,
    /// istio, with --image: the WasmPlugin's imagePullPolicy [default: IfNotPresent]. Always is
    /// refused for a pinned module (Istio pulls it IfNotPresent regardless).
    #[arg(long, value_enum, value_name = "POLICY", requires = "image")]
    pub image_pull_policy: Option<PullPolicy>,
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
    /// istio, envoy-gateway: namespace of the gateway [default: istio-system for istio,
    /// default for envoy-gateway].
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// envoy-gateway: attach the policies to this existing Gateway instead of rendering one.
    #[arg(long, value_name = "NAME")]
    pub gateway: Option<String>,
    /// envoy-gateway: the GatewayClass of the rendered Gateway [default: eg].
    #[arg(long, value_name = "NAME")]
    pub gateway_class: Option<String>,
    /// istio: label selecting the ingress gateway pods.
    #[arg(long, value_name = "KEY=VALUE", default_value = "istio=ingressgateway")]
    pub gateway_label: String,
    /// compose: the directory to write the stack into (docker-compose.yml, envoy.yaml,
    /// haproxy.cfg, policy.json).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// envoy, compose (repeatable): Envoy answers this path itself for the load balancer's
    /// health check (the health_check filter, after trustip's HTTP filter): 200 while Envoy is
    /// live, 503 while it drains. The policy's require rule must list the path in
    /// "health_check_paths" (a health check brings no client information: PROXY LOCAL, v1
    /// UNKNOWN or no header); render refuses otherwise and does not change the policy.
    #[arg(long = "health-check-path", value_name = "PATH")]
    pub health_check_paths: Vec<String>,
    /// envoy: every cluster sends a PROXY header of this version to its upstream, carrying the
    /// client trustip decided. The policy must say "upstream_proxy_protocol": true (render
    /// refuses otherwise, and refuses the field without this option).
    #[arg(long, value_enum, value_name = "VERSION")]
    pub upstream_proxy: Option<UpstreamProxyArg>,
    /// envoy, with --upstream-proxy v2: TLVs from the load balancer's PROXY header passed on to
    /// the upstream (comma-separated keys: aws_vpce_id, azure_link_id, gcp_psc_connection_id,
    /// authority, unique_id): the listener's pass_through_tlvs and the socket's.
    #[arg(long, value_name = "KEY,...", value_delimiter = ',')]
    pub upstream_tlvs: Vec<String>,
    /// envoy (repeatable): a second listener passes TLS through, routed by SNI (tls_inspector
    /// after proxy_protocol and trustip's connection decision) to HOST:PORT with tcp_proxy.
    #[arg(long = "tls-passthrough", value_name = "SNI=HOST:PORT")]
    pub tls_passthrough: Vec<String>,
    /// envoy: the TLS passthrough listener's address [default: 0.0.0.0:10443].
    #[arg(long, value_name = "ADDR:PORT")]
    pub tls_listen: Option<String>,
}

/// The TLS passthrough listener's address when --tls-listen is not given.
pub const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:10443";

/// The module trustip ships: `scripts/build-wasm` writes it (cargo release build, wasm-opt -Oz).
pub const DEFAULT_WASM: &str = "target/trustip.wasm";
/// Where `cargo build -p trustip --release` writes the native module.
pub const DEFAULT_NATIVE: &str = "target/release/libtrustip.so";

/// trustip with the policy of `file`, as `build`.
pub fn trustip(file: &PolicyFile, build: Build) -> Trustip {
    Trustip {
        build,
        policy: file.policy.clone(),
        // The policy as one line of JSON, embedded exactly (a YAML scalar, never text
        // substituted into a template).
        policy_json: file.compact(),
    }
}

/// The build choice against the target and the module flags: each mismatch one usage line.
fn check_build(args: &RenderArgs, target: Target) -> Result<(), CliError> {
    match args.build {
        BuildKind::Native if target == Target::Istio => Err(CliError::Usage(
            "--build native is only for --target envoy: Istio's WasmPlugin loads wasm modules, not Envoy dynamic modules".to_string(),
        )),
        BuildKind::Wasm if target == Target::EnvoyGateway && args.wasm.is_some() => Err(CliError::Usage(
            "--wasm is not for --target envoy-gateway: Envoy Gateway fetches wasm code from an OCI image or an http(s) url (--image), not from a file".to_string(),
        )),
        BuildKind::Native if target == Target::Compose => Err(CliError::Usage(
            "--build native is only for --target envoy: the compose stack runs the wasm build".to_string(),
        )),
        BuildKind::Native if args.wasm.is_some() => Err(CliError::Usage(
            "--wasm is for the wasm build; with --build native give the dynamic module with --module PATH".to_string(),
        )),
        BuildKind::Wasm if args.module.is_some() => Err(CliError::Usage(
            "--module is for --build native; the wasm build's module is --wasm PATH".to_string(),
        )),
        _ => Ok(()),
    }
}

fn envoy_options(args: &RenderArgs, gateway: GatewayOptions) -> Result<envoy::Options, CliError> {
    let tls = if gateway.tls_routes.is_empty() {
        None
    } else {
        let listen = args.tls_listen.as_deref().unwrap_or(DEFAULT_TLS_LISTEN);
        Some(envoy::TlsPassthrough {
            listen: parse_socket_addr("--tls-listen", listen)?,
            routes: gateway.tls_routes,
        })
    };
    let listen = parse_socket_addr("--listen", &args.listen)?;
    let admin = parse_socket_addr("--admin", &args.admin)?;
    if let Some(tls) = &tls {
        for (flag, other) in [("--listen", listen), ("--admin", admin)] {
            let overlap = tls.listen.port() == other.port()
                && (tls.listen.ip() == other.ip()
                    || tls.listen.ip().is_unspecified()
                    || other.ip().is_unspecified());
            if overlap {
                return Err(CliError::Usage(format!(
                    "--tls-listen {}: the same address and port as {flag} {other}: give the TLS passthrough listener its own port",
                    tls.listen
                )));
            }
        }
    }
    Ok(envoy::Options {
        listen,
        admin,
        upstream: parse_host_port("--upstream", &args.upstream)?.into_parts(),
        strict_proxy: args.strict_proxy,
        health_check_paths: gateway.health_check_paths,
        upstream_proxy: gateway.upstream_proxy,
        tls,
    })
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
    if args.image.is_some() && !matches!(target, Target::Istio | Target::EnvoyGateway) {
        return Err(CliError::Usage(
            "--image is only for --target istio and envoy-gateway; use --wasm PATH".to_string(),
        ));
    }
    if args.image.is_some() && args.build == BuildKind::Native {
        return Err(CliError::Usage(
            "--image is the wasm build's image; with --build native give the module's path with --module PATH".to_string(),
        ));
    }
    if target != Target::EnvoyGateway && (args.gateway.is_some() || args.gateway_class.is_some()) {
        return Err(CliError::Usage(
            "--gateway and --gateway-class are only for --target envoy-gateway".to_string(),
        ));
    }
    if args.gateway.is_some() && args.gateway_class.is_some() {
        return Err(CliError::Usage(
            "--gateway-class is the class of the Gateway render writes; with --gateway NAME (an existing Gateway) none is written".to_string(),
        ));
    }

    if args.namespace.is_some() && !matches!(target, Target::Istio | Target::EnvoyGateway) {
        return Err(CliError::Usage(
            "--namespace is only for --target istio and envoy-gateway".to_string(),
        ));
    }
    if args.image_pull_policy.is_some() && target != Target::Istio {
        return Err(CliError::Usage(
            "--image-pull-policy is only for --target istio: Envoy Gateway ignores pullPolicy for a module pinned by its sha256, which render always writes".to_string(),
        ));
    }
    check_build(args, target)?;
    let gateway = gateway_options(args, target, &file.json)?;
    for note in &gateway.notes {
        eprintln!("{note}");
    }
    match target {
        Target::Envoy => {
            let build = match args.build {
                BuildKind::Wasm => Build::Wasm {
                    module: args
                        .wasm
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_WASM))
                        .display()
                        .to_string(),
                },
                BuildKind::Native => Build::Native {
                    module: args
                        .module
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_NATIVE))
                        .display()
                        .to_string(),
                },
            };
            let options = envoy_options(args, gateway)?;
            let wiring = envoy::wiring(trustip(&file, build), &options);
            print!("{}", envoy::bootstrap(&wiring, options.strict_proxy)?);
        }
        Target::Istio => print!("{}", istio::resources(&file, args)?),
        Target::Compose => compose::write(&file, args, gateway.health_check_paths)?,
        Target::EnvoyGateway => print!("{}", envoy_gateway::resources(&file, args)?),
    }
    Ok(0)
}
