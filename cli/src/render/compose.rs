//! A docker-compose stack: HAProxy (`send-proxy-v2`) -> Envoy + trustip -> go-httpbin, on a
//! fixed subnet so the policy can name the load balancer's address. The compose file is a typed
//! model; envoy.yaml is `render --target envoy`'s wiring with the container's addresses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::CliError;
use crate::policy_file::PolicyFile;
use crate::render::envoy::{self, Options};
use crate::render::model::Build;
use crate::render::yaml::{self, Anchors, Node};
use crate::render::{trustip, RenderArgs, DEFAULT_WASM};

/// Where the containers sit; the policy's rules should name `LB_ADDRESS`.
pub const SUBNET: &str = "172.28.0.0/24";
pub const LB_ADDRESS: &str = "172.28.0.10";
const ENVOY_ADDRESS: &str = "172.28.0.30";
const HTTPBIN_ADDRESS: &str = "172.28.0.20";
/// Where the module is mounted inside the Envoy container.
const WASM_IN_CONTAINER: &str = "/etc/trustip/trustip.wasm";
const NETWORK: &str = "trustip";

#[derive(Serialize)]
struct ComposeFile {
    name: &'static str,
    services: Services,
    networks: BTreeMap<&'static str, Network>,
}

#[derive(Serialize)]
struct Services {
    httpbin: Service,
    envoy: Service,
    haproxy: Service,
}

#[derive(Serialize)]
struct Service {
    image: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    command: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<&'static str>,
    networks: BTreeMap<&'static str, Attachment>,
}

#[derive(Serialize)]
struct Attachment {
    ipv4_address: &'static str,
}

#[derive(Serialize)]
struct Network {
    ipam: Ipam,
}

#[derive(Serialize)]
struct Ipam {
    config: Vec<Subnet>,
}

#[derive(Serialize)]
struct Subnet {
    subnet: &'static str,
}

fn on_network(address: &'static str) -> BTreeMap<&'static str, Attachment> {
    BTreeMap::from([(
        NETWORK,
        Attachment {
            ipv4_address: address,
        },
    )])
}

fn compose_file(wasm_on_host: &Path) -> ComposeFile {
    ComposeFile {
        name: "trustip",
        services: Services {
            // Echoes the request headers at /headers.
            httpbin: Service {
                image: "mccutchen/go-httpbin",
                command: vec![],
                volumes: vec![],
                ports: vec![],
                depends_on: vec![],
                networks: on_network(HTTPBIN_ADDRESS),
            },
            envoy: Service {
                image: "envoyproxy/envoy:v1.40-latest",
                command: vec![
                    "envoy",
                    "-c",
                    "/etc/envoy/envoy.yaml",
                    "--log-level",
                    "info",
                ],
                volumes: vec![
                    "./envoy.yaml:/etc/envoy/envoy.yaml:ro".to_string(),
                    format!("{}:{WASM_IN_CONTAINER}:ro", wasm_on_host.display()),
                ],
                // Direct access (as another pod or host would have), and admin for /stats.
                ports: vec!["127.0.0.1:10000:10000", "127.0.0.1:9901:9901"],
                depends_on: vec!["httpbin"],
                networks: on_network(ENVOY_ADDRESS),
            },
            // The L4 load balancer: mode tcp, send-proxy-v2.
            haproxy: Service {
                image: "haproxy:2.6",
                command: vec![],
                volumes: vec!["./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro".to_string()],
                ports: vec!["127.0.0.1:8000:8000"],
                depends_on: vec!["envoy"],
                networks: on_network(LB_ADDRESS),
            },
        },
        networks: BTreeMap::from([(
            NETWORK,
            Network {
                ipam: Ipam {
                    config: vec![Subnet { subnet: SUBNET }],
                },
            },
        )]),
    }
}

const COMPOSE_HEADER: &str =
    "Rendered by `trustip render --target compose`: a load balancer that sends PROXY v2 (haproxy),
Envoy with trustip in both roles, and an upstream that echoes the headers it got (httpbin).
  docker compose up
  curl http://127.0.0.1:8000/headers          # through the load balancer: trusted
  curl http://127.0.0.1:10000/headers         # straight to Envoy: a direct client
  curl http://127.0.0.1:9901/stats?filter=wasmcustom";

/// Not YAML and nothing in it comes from the policy: a fixed text.
const HAPROXY: &str = r#"# HAProxy as the L4 load balancer in front of Envoy, rendered by `trustip render`.
global
    log stdout format raw local0

defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend lb
    bind :8000
    default_backend gateway

backend gateway
    # PROXY v2 with the client's address, a unique id and the authority TLVs.
    server envoy envoy:10000 send-proxy-v2 proxy-v2-options unique-id,authority
"#;

fn write_file(dir: &Path, name: &str, text: &str) -> Result<(), CliError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| CliError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// `health_check_paths`: `--health-check-path`, checked against the policy.
pub fn write(
    file: &PolicyFile,
    args: &RenderArgs,
    health_check_paths: Vec<String>,
) -> Result<(), CliError> {
    let out = args.out.clone().ok_or_else(|| {
        CliError::Usage("--target compose writes several files: give --out DIR".to_string())
    })?;
    std::fs::create_dir_all(&out).map_err(|source| CliError::Write {
        path: out.display().to_string(),
        source,
    })?;
    let wasm: PathBuf = match &args.wasm {
        Some(path) => path.clone(),
        None => std::fs::canonicalize(DEFAULT_WASM).unwrap_or_else(|_| DEFAULT_WASM.into()),
    };
    let lb = LB_ADDRESS
        .parse()
        .map_err(|_| CliError::Usage("bad LB address".to_string()))?;
    if file.policy.rule_for(lb).is_none() {
        eprintln!(
            "trustip: note: no rule names the load balancer {LB_ADDRESS}; add {{\"from\": [\"{LB_ADDRESS}/32\"], \"proxy_protocol\": \"require\"}} or PROXY headers from it will be rejected"
        );
    }
    let options = Options {
        listen: "0.0.0.0:10000"
            .parse()
            .map_err(|_| CliError::Usage("listen".into()))?,
        admin: "0.0.0.0:9901"
            .parse()
            .map_err(|_| CliError::Usage("admin".into()))?,
        upstream: ("httpbin".to_string(), 8080),
        strict_proxy: args.strict_proxy,
        health_check_paths,
        upstream_proxy: None,
        tls: None,
    };
    let wiring = envoy::wiring(
        trustip(
            file,
            Build::Wasm {
                module: WASM_IN_CONTAINER.to_string(),
            },
        ),
        &options,
    );
    let compose = Node::from_serialize(&compose_file(&wasm))
        .map_err(|err| CliError::Usage(err.to_string()))?;
    let compose =
        yaml::comment(COMPOSE_HEADER) + "\n" + &yaml::document(&compose, &mut Anchors::default());
    write_file(&out, "docker-compose.yml", &compose)?;
    write_file(
        &out,
        "envoy.yaml",
        &envoy::bootstrap(&wiring, args.strict_proxy)?,
    )?;
    write_file(&out, "haproxy.cfg", HAPROXY)?;
    let pretty =
        serde_json::to_string_pretty(&file.json).map_err(|err| CliError::Usage(err.to_string()))?;
    write_file(&out, "policy.json", &(pretty + "\n"))?;
    println!(
        "wrote {}/{{docker-compose.yml,envoy.yaml,haproxy.cfg,policy.json}}",
        out.display()
    );
    Ok(())
}
