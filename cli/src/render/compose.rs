//! A docker-compose stack: HAProxy (`send-proxy-v2`) -> Envoy + trustip -> go-httpbin, on a
//! fixed subnet so the policy can name the load balancer's address.

use std::path::{Path, PathBuf};

use crate::error::CliError;
use crate::policy_file::PolicyFile;
use crate::render::envoy::{bootstrap, Options};
use crate::render::{RenderArgs, DEFAULT_WASM};

/// Where the containers sit; the policy's rules should name `LB_ADDRESS`.
pub const SUBNET: &str = "172.28.0.0/24";
pub const LB_ADDRESS: &str = "172.28.0.10";
const ENVOY_ADDRESS: &str = "172.28.0.30";
const HTTPBIN_ADDRESS: &str = "172.28.0.20";
/// Where the module is mounted inside the Envoy container.
const WASM_IN_CONTAINER: &str = "/etc/trustip/trustip.wasm";

const COMPOSE: &str = r#"# Rendered by `trustip render --target compose`: a load balancer that sends PROXY v2,
# Envoy with trustip in both roles, and an upstream that echoes the headers it got.
#   docker compose up
#   curl http://127.0.0.1:8000/headers          # through the load balancer: trusted
#   curl http://127.0.0.1:10000/headers         # straight to Envoy: a direct client
#   curl http://127.0.0.1:9901/stats?filter=wasmcustom
name: trustip
services:
  httpbin:
    # Echoes the request headers at /headers.
    image: mccutchen/go-httpbin
    networks:
      trustip: {ipv4_address: HTTPBIN_ADDRESS}
  envoy:
    image: envoyproxy/envoy:v1.40-latest
    command: ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "info"]
    volumes:
      - ./envoy.yaml:/etc/envoy/envoy.yaml:ro
      - WASM_ON_HOST:WASM_IN_CONTAINER:ro
    ports:
      - "127.0.0.1:10000:10000"   # direct access, as another pod or host would have
      - "127.0.0.1:9901:9901"     # admin: /stats
    depends_on: [httpbin]
    networks:
      trustip: {ipv4_address: ENVOY_ADDRESS}
  haproxy:
    # The L4 load balancer: mode tcp, send-proxy-v2.
    image: haproxy:2.6
    volumes:
      - ./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro
    ports:
      - "127.0.0.1:8000:8000"
    depends_on: [envoy]
    networks:
      trustip: {ipv4_address: LB_ADDRESS}
networks:
  trustip:
    ipam:
      config:
        - subnet: SUBNET
"#;

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

pub fn write(file: &PolicyFile, args: &RenderArgs) -> Result<(), CliError> {
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
        wasm: WASM_IN_CONTAINER.to_string(),
        strict_proxy: args.strict_proxy,
    };
    let compose = COMPOSE
        .replace("HTTPBIN_ADDRESS", HTTPBIN_ADDRESS)
        .replace("ENVOY_ADDRESS", ENVOY_ADDRESS)
        .replace("LB_ADDRESS", LB_ADDRESS)
        .replace("SUBNET", SUBNET)
        .replace("WASM_IN_CONTAINER", WASM_IN_CONTAINER)
        .replace("WASM_ON_HOST", &wasm.display().to_string());
    write_file(&out, "docker-compose.yml", &compose)?;
    write_file(&out, "envoy.yaml", &bootstrap(file, &options))?;
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
