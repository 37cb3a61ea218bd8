//! The sample configurations shipped in envoy/, built from the wiring model. `trustip render
//! --sample NAME` prints one; a test compares each file in envoy/ with a fresh render.

use crate::error::CliError;
use crate::render::envoy::to_yaml;
use crate::render::model::{
    App, Build, ClusterPlan, Discovery, HostPort, ListenerPlan, LogLine, Trustip, Wiring,
};
use crate::render::yaml::{Anchors, Node};
use crate::render::{DEFAULT_NATIVE, DEFAULT_WASM};

/// The file names in envoy/, without `.yaml`.
pub const NAMES: &[&str] = &[
    "strict-lb-only",
    "mixed-lb-and-direct",
    "http-role-only",
    "tcp-proxy-network-role",
    "demo",
    "native-strict-lb-only",
    "native-lb-and-cdn",
];

struct Sample {
    /// What the sample shows and how to run it.
    about: &'static str,
    wiring: Wiring,
}

/// `[%START_TIME%] "GET /path" 200 client_ip=... reason=... direct_peer=... source=...`
fn request_line() -> LogLine {
    LogLine::default()
        .text("[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)%\" %RESPONSE_CODE% client_ip=")
        .client()
        .text(" reason=")
        .reason()
        .text(
            " direct_peer=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% source=%DOWNSTREAM_REMOTE_ADDRESS%\n",
        )
}

/// `[%START_TIME%] connection client_ip=... reason=... direct_peer=... source=...` + `extra`.
fn connection_line(extra: &str) -> LogLine {
    LogLine::default()
        .text("[%START_TIME%] connection client_ip=")
        .client()
        .text(" reason=")
        .reason()
        .text(" direct_peer=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% source=%DOWNSTREAM_REMOTE_ADDRESS%")
        .text(extra)
        .text("\n")
}

fn wasm() -> Build {
    Build::Wasm {
        module: DEFAULT_WASM.to_string(),
    }
}

fn native() -> Build {
    Build::Native {
        module: DEFAULT_NATIVE.to_string(),
    }
}

fn trustip(build: Build, policy_json: &str) -> Result<Trustip, CliError> {
    Ok(Trustip {
        build,
        policy: trustip::core::config::Policy::from_json(policy_json.as_bytes())?,
        policy_json: policy_json.to_string(),
    })
}

/// One listener on 0.0.0.0:10000 in front of a service on 127.0.0.1:8080, admin on loopback.
fn one_listener(
    build: Build,
    policy_json: &str,
    strict_proxy: bool,
    connection_role: bool,
    app: App,
    connection_log: LogLine,
) -> Result<Wiring, CliError> {
    let cluster = match &app {
        App::Http { cluster, .. } | App::Tcp { cluster, .. } => cluster.clone(),
        App::TlsPassthrough { .. } => {
            return Err(CliError::Usage(
                "a sample's one listener is HTTP or TCP".to_string(),
            ))
        }
    };
    Ok(Wiring {
        trustip: trustip(build, policy_json)?,
        admin: HostPort::new("127.0.0.1", 9901),
        listeners: vec![ListenerPlan {
            name: "ingress".to_string(),
            address: HostPort::new("0.0.0.0", 10000),
            strict_proxy,
            connection_role,
            app,
            connection_log: Some(connection_log),
        }],
        clusters: vec![ClusterPlan {
            name: cluster,
            discovery: Discovery::Static,
            endpoint: HostPort::new("127.0.0.1", 8080),
        }],
        upstream_proxy: None,
    })
}

fn http_app(http_role: bool) -> App {
    App::Http {
        stat_prefix: "ingress_http".to_string(),
        http_role,
        cluster: "app".to_string(),
        request_log: Some(request_line()),
        health_check_paths: Vec::new(),
    }
}

fn sample(name: &str) -> Result<Sample, CliError> {
    Ok(match name {
        "strict-lb-only" => Sample {
            about: STRICT,
            wiring: one_listener(
                wasm(),
                STRICT_POLICY,
                true,
                true,
                http_app(true),
                connection_line(""),
            )?,
        },
        "mixed-lb-and-direct" => Sample {
            about: MIXED,
            wiring: one_listener(
                wasm(),
                MIXED_POLICY,
                false,
                true,
                http_app(true),
                connection_line(""),
            )?,
        },
        "http-role-only" => Sample {
            about: HTTP_ONLY,
            wiring: one_listener(
                wasm(),
                HTTP_ONLY_POLICY,
                false,
                false,
                http_app(true),
                connection_line(""),
            )?,
        },
        "tcp-proxy-network-role" => Sample {
            about: TCP,
            wiring: one_listener(
                wasm(),
                TCP_POLICY,
                true,
                true,
                App::Tcp {
                    stat_prefix: "tcp_ingress".to_string(),
                    cluster: "service".to_string(),
                },
                connection_line(" bytes_in=%BYTES_RECEIVED% bytes_out=%BYTES_SENT%"),
            )?,
        },
        "demo" => Sample {
            about: DEMO,
            wiring: demo()?,
        },
        "native-strict-lb-only" => Sample {
            about: NATIVE_STRICT,
            // The listener filter alone: the HCM writes the client headers itself.
            wiring: one_listener(
                native(),
                // The same load-balancer-only policy as the TCP sample.
                TCP_POLICY,
                true,
                true,
                http_app(false),
                connection_line(""),
            )?,
        },
        "native-lb-and-cdn" => Sample {
            about: NATIVE_CDN,
            wiring: one_listener(
                native(),
                NATIVE_CDN_POLICY,
                false,
                true,
                http_app(true),
                connection_line(""),
            )?,
        },
        other => {
            return Err(CliError::Usage(format!(
                "--sample {other:?}: one of {}",
                NAMES.join(", ")
            )))
        }
    })
}

fn demo() -> Result<Wiring, CliError> {
    let listener = |name: &str, port: u16, connection_role: bool| {
        let direct = " direct=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% source=%DOWNSTREAM_REMOTE_ADDRESS% client_ip=";
        ListenerPlan {
            name: name.to_string(),
            address: HostPort::new("127.0.0.1", port),
            strict_proxy: false,
            connection_role,
            app: App::Http {
                stat_prefix: name.to_string(),
                http_role: true,
                cluster: "echo".to_string(),
                request_log: Some(
                    LogLine::default()
                        .text(&format!(
                            "request listener={name} \"%REQ(:METHOD)% %REQ(:PATH)%\" %RESPONSE_CODE%{direct}"
                        ))
                        .client()
                        .text(" reason=")
                        .reason()
                        .text("\n"),
                ),
                health_check_paths: Vec::new(),
            },
            connection_log: Some(
                LogLine::default()
                    .text(&format!("connection listener={name}{direct}"))
                    .client()
                    .text(" reason=")
                    .reason()
                    .text(" bytes_received=%BYTES_RECEIVED%\n"),
            ),
        }
    };
    Ok(Wiring {
        trustip: trustip(wasm(), DEMO_POLICY)?,
        admin: HostPort::new("127.0.0.1", 18439),
        listeners: vec![
            listener("trustip_demo", 18431, true),
            listener("trustip_demo_http_only", 18432, false),
        ],
        clusters: vec![ClusterPlan {
            name: "echo".to_string(),
            discovery: Discovery::Static,
            endpoint: HostPort::new("127.0.0.1", 18438),
        }],
        upstream_proxy: None,
    })
}

/// The first lines of every sample's notes; `build` introduces the build when it is not wasm.
fn notes_header(name: &str, build: &str) -> String {
    format!(
        "Generated by `trustip render --sample {name}` from the wiring model (cli/src/render/):\n\
         change the model and render again; a test fails when this file differs from a render.\n\
         {build}Each listener, in order:\n"
    )
}

/// The proxy_protocol listener filter, as every sample's first step.
fn proxy_protocol_step(wiring: &Wiring) -> &'static str {
    if wiring.listeners.iter().any(|l| l.strict_proxy) {
        "proxy_protocol: Envoy parses the PROXY header (strict: a connection without one is\n   \
         reset); TLVs the policy reads go to filter state."
    } else {
        "proxy_protocol: Envoy parses the PROXY header, optional here: trustip's rules decide\n   \
         who may send or omit one; TLVs the policy reads go to filter state."
    }
}

/// What every sample's listeners are made of, from the model itself.
fn wiring_notes(name: &str, wiring: &Wiring) -> String {
    if wiring.trustip.build.is_native() {
        return native_notes(name, wiring);
    }
    let mut notes = notes_header(name, "");
    let mut step = 0;
    let mut line = |text: &str| {
        step += 1;
        notes.push_str(&format!("{step}. {text}\n"));
    };
    line(proxy_protocol_step(wiring));
    line(
        "set_filter_state, the first network filter: the real TCP peer D (no wasm attribute shows\n   \
         it once proxy_protocol ran) and the PROXY-derived source P, in one filter-state value.",
    );
    if wiring.listeners.iter().all(|l| l.connection_role) {
        line(
            "trustip's network role: decides once per connection, closes a rejected one before\n   \
             any byte is forwarded.",
        );
    } else if wiring.listeners.iter().any(|l| l.connection_role) {
        line(
            "trustip's network role, on the listeners that have it: decides once per connection,\n   \
             closes a rejected one before any byte is forwarded.",
        );
    }
    let http = wiring
        .listeners
        .iter()
        .any(|l| matches!(l.app, App::Http { .. }));
    if http {
        line(
            "the HCM: use_remote_address (the client is the PROXY-derived address), skip_xff_append\n   \
             (trustip owns X-Forwarded-For), headers_with_underscores_action: DROP_HEADER\n   \
             (x_forwarded_for, x_real_ip, true_client_ip never reach a filter or the upstream);\n   \
             inside it trustip's HTTP role decides per request and writes the client-IP headers.",
        );
    } else {
        line("tcp_proxy: forwards the bytes; TCP has no headers to write.");
    }
    notes.push_str(
        "Both roles take the same policy and run in one wasm VM (vm_id trustip: one compiled\n\
         policy); a filter given the other role's root_id refuses its own traffic and leaves the\n\
         VM alone, and failure_policy FAIL_CLOSED fails a connection when the VM fails. The listener access log\n\
         prints one line per connection (also one the network role closed: client_ip \"-\" and the\n\
         reason); the HCM's, one per request.",
    );
    notes
}

/// The native samples' pieces: no set_filter_state, the listener filter, the HCM writing the
/// client headers itself when trustip-http is absent.
fn native_notes(name: &str, wiring: &Wiring) -> String {
    let mut notes = notes_header(
        name,
        "trustip's native build: the Envoy 1.40 dynamic module target/release/libtrustip.so\n\
         (`cargo build -p trustip --release`). ",
    );
    let mut step = 0;
    let mut line = |text: &str| {
        step += 1;
        notes.push_str(&format!("{step}. {text}\n"));
    };
    line(proxy_protocol_step(wiring));
    if wiring.listeners.iter().any(|l| l.connection_role) {
        line(
            "trustip-listener, a dynamic-module listener filter: decides once per connection from\n   \
             the direct peer and the PROXY source, read natively (no set_filter_state); closes a\n   \
             refused connection before any byte reaches a network filter; sets Envoy's remote\n   \
             address to the verified client, so %DOWNSTREAM_REMOTE_ADDRESS%, RBAC remote_ip and\n   \
             the HCM's client headers carry trustip's decision.",
        );
    }
    let http_role = wiring.listeners.iter().any(|l| {
        matches!(
            l.app,
            App::Http {
                http_role: true,
                ..
            }
        )
    });
    if http_role {
        line(
            "the HCM: use_remote_address (the client is the address the listener filter set),\n   \
             skip_xff_append (trustip owns X-Forwarded-For), headers_with_underscores_action:\n   \
             DROP_HEADER (x_forwarded_for, x_real_ip, true_client_ip never reach a filter or the\n   \
             upstream); inside it trustip-http, a dynamic-module HTTP filter, takes the listener's\n   \
             decision, walks X-Forwarded-For where the policy trusts the hop, and writes the\n   \
             client-IP headers.",
        );
    } else {
        line(
            "the HCM, without a trustip HTTP filter: use_remote_address with skip_xff_append\n   \
             false, so Envoy itself writes the remote address the listener filter set (the\n   \
             verified client) into x-envoy-external-address and appends it to X-Forwarded-For;\n   \
             headers_with_underscores_action: DROP_HEADER (x_forwarded_for, x_real_ip never\n   \
             reach the upstream).",
        );
    }
    notes.push_str(
        "The filters take the same policy (filter_config), and filter_name picks the filter in\n\
         the one module; a bad policy makes Envoy refuse the configuration. Counters are\n\
         trustip.<filter>.<outcome> in /stats (metrics_namespace). The listener access log\n\
         prints one line per connection (also one trustip closed, client_ip \"-\"; Envoy's log\n\
         has trustip's line with the reason); the HCM's, one per request.",
    );
    notes
}

pub fn render(name: &str) -> Result<String, CliError> {
    let sample = sample(name)?;
    let bootstrap = sample.wiring.bootstrap();
    let mut anchors = Anchors::default();
    // Both roles' filters carry the same policy: printed once, then referred to.
    let policy =
        crate::render::envoy_api::StringValue::new(sample.wiring.trustip.policy_json.clone());
    anchors.add(
        "policy",
        Node::from_serialize(&policy).map_err(|err| CliError::Usage(err.to_string()))?,
    );
    let header = format!(
        "{}\n\n{}",
        sample.about.trim_end(),
        wiring_notes(name, &sample.wiring)
    );
    to_yaml(&header, &bootstrap, &mut anchors)
}

const STRICT: &str = "\
trustip sample: a listener reachable ONLY through the L4 load balancer (strict PROXY protocol).

  client --TCP--> L4 load balancer --PROXY v2 + TCP--> Envoy :10000 (this) --HTTP--> app :8080

Every connection must start with a PROXY header (Envoy itself resets connections without
one), and trustip makes sure the header comes from the load balancer: a PROXY header from any
other peer is a spoofing attempt and the connection is closed (network role) before a byte
reaches the HTTP layer. The HTTP role then writes one consistent set of client-IP headers.

Run from the repository root, after `scripts/build-wasm` (writes target/trustip.wasm):
  .venv/bin/envoy -c envoy/strict-lb-only.yaml --concurrency 1
Try it with HAProxy bound to 127.0.0.5 and `server envoy 127.0.0.1:10000 send-proxy-v2
source 127.0.0.5` (what scripts/demo does), or hand-made PROXY headers.

The policy: put your load balancers' addresses in rules[0].from (10.0.0.0/8 is a
placeholder; 127.0.0.5 is the local HAProxy of scripts/demo and the tests).
";

const STRICT_POLICY: &str = r#"{
  "mode": "enforce",
  "rules": [
    {"from": ["10.0.0.0/8", "127.0.0.5/32"], "proxy_protocol": "require"}
  ],
  "headers": {
    "x_forwarded_for": "overwrite",
    "set": ["x-envoy-external-address", "x-real-ip"]
  }
}
"#;

const MIXED: &str = "\
trustip sample: one listener for both the L4 load balancer (with PROXY) and direct clients.

  client --> L4 load balancer --PROXY v2--> Envoy :10000 (this) --> app :8080
  client (office, monitoring, other services) -------^  (no PROXY)

The PROXY header is optional on this listener, so Envoy alone would believe a PROXY header
from anyone. trustip decides per direct peer (first matching rule wins):
  - the load balancers must send PROXY (a connection from them without it is rejected);
  - 192.168.10.5, an older proxy that sends PROXY only sometimes: used when present;
  - 198.51.100.0/24 is blocked outright;
  - everyone else (the implicit last rule) connects directly: their own address is the
    client, and a PROXY header from them is a spoofing attempt, rejected.
Behind the load balancer sits a CDN whose edges (xff.trusted) add X-Forwarded-For: the walk
over that chain finds the real client. Headers: X-Forwarded-For and Forwarded are rewritten
with the verified chain, x-envoy-external-address and x-real-ip get the client address.

Run from the repository root, after `scripts/build-wasm` (writes target/trustip.wasm):
  .venv/bin/envoy -c envoy/mixed-lb-and-direct.yaml --concurrency 1
Edit rules[0].from (10.0.0.0/8 is a placeholder; 127.0.0.5 is the local HAProxy of
scripts/demo and the tests) and xff.trusted (here: two Cloudflare ranges as an example).
";

const MIXED_POLICY: &str = r#"{
  "mode": "enforce",
  "rules": [
    {"from": ["10.0.0.0/8", "127.0.0.5/32"], "proxy_protocol": "require"},
    {"from": ["192.168.10.5/32"], "proxy_protocol": "use"},
    {"from": ["198.51.100.0/24"], "proxy_protocol": "deny"}
  ],
  "xff": {"trusted": ["173.245.48.0/20", "2400:cb00::/32"], "max_entries": 32},
  "headers": {
    "x_forwarded_for": "overwrite",
    "forwarded": "overwrite",
    "set": ["x-envoy-external-address", "x-real-ip"]
  },
  "reject_status": 403
}
"#;

const HTTP_ONLY: &str = "\
trustip sample: the HTTP role only (no network wasm filter).

  client --> AWS NLB / PrivateLink --PROXY v2 (+ TLV 0xEA)--> Envoy :10000 (this) --> app :8080

Every request is decided on its own and a rejection is an HTTP answer (403 with
`x-trustip-reject: <reason>`) rather than a closed connection: friendlier to debug, and enough
when nothing but HTTP is served. The PROXY header is optional on this listener: direct
clients are accepted as themselves, and a PROXY header from anyone but the load balancers is
rejected (implicit last rule).

The AWS example: requests that arrive through the VPC endpoint must carry its id in the PROXY
v2 TLV 0xEA (subtype 0x01), and the verified id is passed upstream as x-amzn-vpce-id (a
client's own x-amzn-vpce-id is always removed).

Run from the repository root, after `scripts/build-wasm` (writes target/trustip.wasm):
  .venv/bin/envoy -c envoy/http-role-only.yaml --concurrency 1
Edit the rules: 10.0.0.0/8 and the endpoint id are placeholders; 127.0.0.5 is the local
HAProxy of scripts/demo and the tests (HAProxy cannot send the AWS TLV).
";

const HTTP_ONLY_POLICY: &str = r#"{
  "rules": [
    {"from": ["10.0.0.0/8"], "proxy_protocol": "require",
     "tlvs": {"aws_vpce_id": ["vpce-0a1b2c3d4e5f60718"]}},
    {"from": ["127.0.0.5/32"], "proxy_protocol": "require"}
  ],
  "headers": {
    "x_forwarded_for": "overwrite",
    "tlv": {"aws_vpce_id": "x-amzn-vpce-id"}
  },
  "reject_status": 403
}
"#;

const TCP: &str = "\
trustip sample: a plain TCP service (no HTTP) behind the L4 load balancer: the network role
with tcp_proxy.

  client --> L4 load balancer --PROXY v2--> Envoy :10000 (this) --TCP--> service :8080

trustip decides once per connection and closes a rejected connection before any byte is
forwarded. There are no headers to write in TCP: the decision (client address and reason) is
published as filter state and printed by the listener's access log, one line per connection.

Run from the repository root, after `scripts/build-wasm` (writes target/trustip.wasm):
  .venv/bin/envoy -c envoy/tcp-proxy-network-role.yaml --concurrency 1
Edit rules[0].from (10.0.0.0/8 is a placeholder; 127.0.0.5 is the local HAProxy of
scripts/demo and the tests).
";

const TCP_POLICY: &str = r#"{
  "mode": "enforce",
  "rules": [
    {"from": ["10.0.0.0/8", "127.0.0.5/32"], "proxy_protocol": "require"}
  ]
}
"#;

const DEMO: &str = "\
The configuration `scripts/demo` runs: trustip in both roles behind an L4 load balancer.

  client --> HAProxy 127.0.0.5:18430 (mode tcp, send-proxy-v2) --> Envoy 127.0.0.1:18431
  attacker 127.0.0.66 ------------------------------------------> Envoy 127.0.0.1:18431 / :18432
  Envoy --> echo upstream 127.0.0.1:18438; admin on 127.0.0.1:18439

Listener trustip_demo (18431): the network role closes a spoofed connection before HTTP; the
HTTP role then decides per request and rewrites the client-IP headers. Listener
trustip_demo_http_only (18432): the HTTP role alone, same policy: a spoofed PROXY header gets
the local reply (reject_status, 403 by default) instead of a closed connection.

Run it by hand from the repository root (paths are relative to it):
  scripts/build-wasm
  .venv/bin/envoy -c envoy/demo.yaml --base-id 18431 --concurrency 1
Access logs go to Envoy's stdout.

The policy (the same JSON for both roles, see the README's configuration table):
- the load balancer 127.0.0.5 must send a PROXY header (`require`); C = the PROXY source;
- every other peer falls to the implicit last rule `reject`: a PROXY header from it is a
  spoofing attempt, and without one C = its own address;
- X-Forwarded-For is walked only when C is in 198.51.100.0/24 (a CDN, say);
- the upstream gets the client in X-Forwarded-For, x-envoy-external-address and x-real-ip.
";

const DEMO_POLICY: &str = r#"{
  "rules": [{"from": ["127.0.0.5"], "proxy_protocol": "require"}],
  "xff": {"trusted": ["198.51.100.0/24"]},
  "headers": {"set": ["x-envoy-external-address", "x-real-ip"]}
}
"#;

const NATIVE_STRICT: &str = "\
trustip sample, native build: a listener reachable ONLY through the L4 load balancer (strict
PROXY protocol), with trustip's listener filter alone.

  client --TCP--> L4 load balancer --PROXY v2 + TCP--> Envoy :10000 (this) --HTTP--> app :8080

Every connection must start with a PROXY header (Envoy itself resets connections without
one), and trustip makes sure the header comes from the load balancer: a PROXY header from any
other peer is a spoofing attempt and the connection is closed before a byte reaches the HTTP
layer. For the others the listener filter sets Envoy's remote address to the client, and
Envoy's own HCM writes it: x-envoy-external-address, and the last X-Forwarded-For hop. There
is no trustip HTTP filter, so no trustip code runs per request; but nothing removes what the
client sent either: the upstream must read only x-envoy-external-address (or the last
X-Forwarded-For hop), never x-real-ip or an earlier hop. Use native-lb-and-cdn.yaml when a
proxy in front adds X-Forwarded-For, or when client-IP headers must be rewritten.

Run from the repository root, after `cargo build -p trustip --release` (Envoy 1.40):
  .venv/bin/envoy -c envoy/native-strict-lb-only.yaml --concurrency 1
Try it with HAProxy bound to 127.0.0.5 and `server envoy 127.0.0.1:10000 send-proxy-v2
source 127.0.0.5`, or hand-made PROXY headers.

The policy: put your load balancers' addresses in rules[0].from (10.0.0.0/8 is a
placeholder; 127.0.0.5 is the local HAProxy of scripts/demo and the tests).
";

const NATIVE_CDN: &str = "\
trustip sample, native build: the L4 load balancer with a CDN in front of it, with trustip's
listener and HTTP filters.

  client --> CDN edge --X-Forwarded-For--> L4 load balancer --PROXY v2--> Envoy :10000 (this)
  Envoy --> app :8080

The listener filter decides once per connection: the load balancer must send PROXY (without
it the connection is rejected), a PROXY header from anyone else is a spoofing attempt and the
connection is closed; direct clients connect as themselves. It sets Envoy's remote address to
the PROXY source, here a CDN edge. The HTTP filter then walks X-Forwarded-For from the right
while the hop is a CDN edge (xff.trusted): the first address outside the CDN is the client.
X-Forwarded-For is rewritten with the verified chain, x-envoy-external-address and x-real-ip
get the client address.

Run from the repository root, after `cargo build -p trustip --release` (Envoy 1.40):
  .venv/bin/envoy -c envoy/native-lb-and-cdn.yaml --concurrency 1
Edit rules[0].from (10.0.0.0/8 is a placeholder; 127.0.0.5 is the local HAProxy of
scripts/demo and the tests) and xff.trusted (here: two Cloudflare ranges as an example).
";

const NATIVE_CDN_POLICY: &str = r#"{
  "mode": "enforce",
  "rules": [
    {"from": ["10.0.0.0/8", "127.0.0.5/32"], "proxy_protocol": "require"}
  ],
  "xff": {"trusted": ["173.245.48.0/20", "2400:cb00::/32"], "max_entries": 32},
  "headers": {
    "x_forwarded_for": "overwrite",
    "set": ["x-envoy-external-address", "x-real-ip"]
  },
  "reject_status": 403
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_renders() {
        for name in NAMES {
            let text = render(name).unwrap();
            if name.starts_with("native-") {
                assert!(text.contains("filter_name: trustip-listener"), "{name}");
                assert!(!text.contains("wasm"), "{name}");
            } else {
                assert!(text.contains("vm_id: trustip\n"), "{name}");
            }
            assert!(text.contains("&policy"), "{name}");
        }
        assert!(render("nope").is_err());
    }

    #[test]
    fn default_native_module_is_the_release_build() {
        assert!(DEFAULT_NATIVE.ends_with(&format!("/{}", trustip::core::names::NATIVE_MODULE_FILE)));
    }
}
