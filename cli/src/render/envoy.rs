//! `render --target envoy`: one listener with both roles, a listener access log per connection
//! and an HCM access log per request, both printing the decision. The wasm build: proxy_protocol
//! with the policy's TLVs in filter state, set_filter_state for the direct peer, the network
//! role, the HCM with the HTTP role. The native build (`--build native`): proxy_protocol, the
//! listener filter, the HCM with the HTTP filter.

use std::net::SocketAddr;

use trustip::core::names;

use crate::error::CliError;
use crate::render::envoy_api::Bootstrap;
use crate::render::model::{
    App, ClusterPlan, Discovery, HostPort, ListenerPlan, LogLine, ProxyVersion, SniRoute, Trustip,
    UpstreamProxy, Wiring,
};
use crate::render::yaml::{self, Anchors, Node};

pub struct Options {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: (String, u16),
    pub strict_proxy: bool,
    /// Paths Envoy answers itself for the load balancer's health check (`--health-check-path`).
    pub health_check_paths: Vec<String>,
    /// A PROXY header to every upstream (`--upstream-proxy`, `--upstream-tlvs`).
    pub upstream_proxy: Option<UpstreamProxy>,
    /// A second listener passing TLS through by SNI (`--tls-listen`, `--tls-passthrough`).
    pub tls: Option<TlsPassthrough>,
}

/// The TLS passthrough listener: where it listens, and each server name's backend.
pub struct TlsPassthrough {
    pub listen: SocketAddr,
    pub routes: Vec<(String, (String, u16))>,
}

pub const LISTENER: &str = "trustip_ingress";
pub const CLUSTER: &str = "upstream";
pub const TLS_LISTENER: &str = "trustip_tls_passthrough";

fn discovery(host: &str) -> Discovery {
    if host.parse::<std::net::IpAddr>().is_ok() {
        Discovery::Static
    } else {
        Discovery::StrictDns
    }
}

/// The HCM's line: one per request, with the decision trustip published.
pub fn request_log() -> LogLine {
    LogLine::default()
        .text("[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%\" %RESPONSE_CODE% direct_peer=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% source=%DOWNSTREAM_REMOTE_ADDRESS% client=")
        .client()
        .text(" reason=")
        .reason()
        .text("\n")
}

/// The listener's line: one per connection, also for those trustip closed.
pub fn connection_log() -> LogLine {
    LogLine::default()
        .text("[%START_TIME%] connection direct_peer=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% source=%DOWNSTREAM_REMOTE_ADDRESS% client=")
        .client()
        .text(" reason=")
        .reason()
        .text(" bytes_received=%BYTES_RECEIVED%\n")
}

pub fn wiring(trustip: Trustip, options: &Options) -> Wiring {
    let (host, port) = options.upstream.clone();
    let mut listeners = vec![ListenerPlan {
        name: LISTENER.to_string(),
        address: HostPort::new(options.listen.ip().to_string(), options.listen.port()),
        strict_proxy: options.strict_proxy,
        connection_role: true,
        app: App::Http {
            stat_prefix: LISTENER.to_string(),
            http_role: true,
            cluster: CLUSTER.to_string(),
            request_log: Some(request_log()),
            health_check_paths: options.health_check_paths.clone(),
        },
        connection_log: Some(connection_log()),
    }];
    let mut clusters = vec![ClusterPlan {
        name: CLUSTER.to_string(),
        discovery: discovery(&host),
        endpoint: HostPort::new(host, port),
    }];
    if let Some(tls) = &options.tls {
        let mut routes = Vec::new();
        for (index, (server_name, (host, port))) in tls.routes.iter().enumerate() {
            let cluster = format!("tls_backend_{index}");
            clusters.push(ClusterPlan {
                name: cluster.clone(),
                discovery: discovery(host),
                endpoint: HostPort::new(host.clone(), *port),
            });
            routes.push(SniRoute {
                server_name: server_name.clone(),
                cluster,
            });
        }
        listeners.push(ListenerPlan {
            name: TLS_LISTENER.to_string(),
            address: HostPort::new(tls.listen.ip().to_string(), tls.listen.port()),
            strict_proxy: options.strict_proxy,
            connection_role: true,
            app: App::TlsPassthrough {
                stat_prefix: TLS_LISTENER.to_string(),
                routes,
            },
            connection_log: Some(connection_log()),
        });
    }
    Wiring {
        trustip,
        admin: HostPort::new(options.admin.ip().to_string(), options.admin.port()),
        listeners,
        clusters,
        upstream_proxy: options.upstream_proxy.clone(),
    }
}

/// A bootstrap as YAML, after a comment and a blank line.
pub fn to_yaml(
    header: &str,
    bootstrap: &Bootstrap,
    anchors: &mut Anchors,
) -> Result<String, CliError> {
    let node = Node::from_serialize(bootstrap).map_err(|err| CliError::Usage(err.to_string()))?;
    Ok(yaml::comment(header) + "\n" + &yaml::document(&node, anchors))
}

pub fn bootstrap(wiring: &Wiring, strict_proxy: bool) -> Result<String, CliError> {
    let strict = if strict_proxy {
        "Strict (--strict-proxy): a connection without a PROXY header is reset at the listener."
    } else {
        "Connections without a PROXY header are allowed; trustip's rules decide who may omit it."
    };
    let mut header = if wiring.trustip.build.is_native() {
        native_header(strict)
    } else {
        format!(
            "Envoy bootstrap rendered by `trustip render --target envoy`.\n\
             Run: envoy -c THIS_FILE\n\
             {strict}\n\
             Both roles share the policy and one wasm VM. Header names with\n\
             underscores (x_forwarded_for, x_real_ip) are dropped before any filter sees them."
        )
    };
    for note in option_notes(wiring) {
        header.push('\n');
        header.push_str(&note);
    }
    to_yaml(&header, &wiring.bootstrap(), &mut Anchors::default())
}

/// What the options (--health-check-path, --upstream-proxy, --tls-passthrough) added.
fn option_notes(wiring: &Wiring) -> Vec<String> {
    let mut notes = Vec::new();
    for listener in &wiring.listeners {
        match &listener.app {
            App::Http {
                health_check_paths, ..
            } if !health_check_paths.is_empty() => notes.push(format!(
                "Health check ({paths}): answered by Envoy's health_check filter after\n\
                 trustip's HTTP filter (200 while Envoy is live, 503 while it drains or after\n\
                 POST /healthcheck/fail on admin); the policy's require rule lists the paths in\n\
                 health_check_paths, so the load balancer's PROXY LOCAL (or header-less) health\n\
                 check is admitted for them only; other requests on such a connection get 403\n\
                 missing_proxy.",
                paths = health_check_paths.join(", ")
            )),
            App::TlsPassthrough { routes, .. } => notes.push(format!(
                "Listener {name}: TLS passed through, routed by SNI:\n  \
                 {names}\n\
                 {pieces}; a server name not listed matches no chain: closed.",
                name = listener.name,
                names = routes
                    .iter()
                    .map(|r| format!("{} -> cluster {}", r.server_name, r.cluster))
                    .collect::<Vec<_>>()
                    .join("\n  "),
                pieces = if wiring.trustip.build.is_native() {
                    "proxy_protocol, trustip-listener, tls_inspector, then one filter chain per\n\
                     server name: tcp_proxy"
                } else {
                    "proxy_protocol, tls_inspector, then one filter chain per server name:\n\
                     set_filter_state, trustip's network role, tcp_proxy"
                },
            )),
            _ => {}
        }
    }
    if let Some(upstream) = &wiring.upstream_proxy {
        let version = match upstream.version {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        };
        let mut note = format!(
            "Every cluster sends a PROXY {version} header upstream (transport socket\n\
             upstream_proxy_protocol) with the source Envoy recorded from the PROXY header it\n\
             parsed (filter state envoy.network.proxy_protocol.options), which trustip used or\n\
             refused: the policy says upstream_proxy_protocol: true, so a PROXY header trustip\n\
             does not use (an ignore rule) is refused (proxy_not_forwardable), never forwarded."
        );
        if !upstream.tlvs.is_empty() {
            note.push_str(&format!(
                "\nTLVs passed on (proxy_protocol's and the socket's pass_through_tlvs): {}.",
                upstream
                    .tlvs
                    .iter()
                    .map(|k| format!("{} (0x{:02X})", k.name(), k.tlv_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        notes.push(note);
    }
    notes
}

/// What the native bootstrap is made of, piece by piece.
fn native_header(strict: &str) -> String {
    format!(
        "Envoy bootstrap rendered by `trustip render --target envoy --build native`: trustip as\n\
         an Envoy 1.40 dynamic module (libtrustip.so, `cargo build -p trustip --release`).\n\
         Run: envoy -c THIS_FILE\n\
         {strict}\n\
         The listener, in order:\n\
         1. proxy_protocol: Envoy parses the PROXY header; TLVs the policy reads go to filter\n   \
            state.\n\
         2. trustip-listener (dynamic-module listener filter): decides once per connection from\n   \
            the direct peer and the PROXY source, read natively (no set_filter_state); closes a\n   \
            refused connection before any byte reaches a network filter; sets Envoy's remote\n   \
            address to the verified client, and publishes the decision in filter state\n   \
            ({client} / {reason}).\n\
         3. the HCM: use_remote_address (the client is the address the listener filter set),\n   \
            skip_xff_append (trustip-http owns X-Forwarded-For), headers_with_underscores_action:\n   \
            DROP_HEADER (x_forwarded_for, x_real_ip never reach a filter or the upstream).\n\
         4. trustip-http (dynamic-module HTTP filter): takes the listener's decision, walks\n   \
            X-Forwarded-For when the policy trusts the hop, writes the client-IP headers and\n   \
            publishes the request's decision ({request_client} / {request_reason}).\n\
         Both filters take the same policy (filter_config); counters are trustip.* in /stats\n\
         (metrics_namespace). The listener access log prints one line per connection, also one\n\
         trustip closed (client \"-\"; Envoy's log has trustip's line with the reason); the\n\
         HCM's, one per request.",
        client = names::CONNECTION_CLIENT_IP_STATE,
        reason = names::CONNECTION_REASON_STATE,
        request_client = names::CLIENT_IP_PROPERTY,
        request_reason = names::REASON_PROPERTY,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::envoy_api as api;
    use crate::render::model::Build;
    use trustip::core::config::Policy;
    use trustip::core::tlv::TlvKey;

    fn options() -> Options {
        Options {
            listen: "127.0.0.1:10000".parse().unwrap(),
            admin: "127.0.0.1:9901".parse().unwrap(),
            upstream: ("127.0.0.1".to_string(), 8080),
            strict_proxy: false,
            health_check_paths: vec!["/healthz/ready".to_string(), "/ping".to_string()],
            upstream_proxy: Some(UpstreamProxy {
                version: ProxyVersion::V2,
                tlvs: vec![TlvKey::AwsVpceId],
            }),
            tls: Some(TlsPassthrough {
                listen: "127.0.0.1:10443".parse().unwrap(),
                routes: vec![
                    (
                        "api.example.com".to_string(),
                        ("127.0.0.1".to_string(), 8443),
                    ),
                    (
                        "*.example.org".to_string(),
                        ("backend.internal".to_string(), 443),
                    ),
                ],
            }),
        }
    }

    fn trustip(build: Build) -> Trustip {
        let json = r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use"}]}"#;
        Trustip {
            build,
            policy: Policy::from_json(json.as_bytes()).unwrap(),
            policy_json: json.to_string(),
        }
    }

    fn rendered(build: Build) -> serde_json::Value {
        let wiring = wiring(trustip(build), &options());
        let text = serde_json::to_string(&wiring.bootstrap()).unwrap();
        if std::env::var_os("TRUSTIP_DUMP").is_some() {
            println!("{}", bootstrap(&wiring, false).unwrap());
        }
        serde_json::from_str(&text).unwrap()
    }

    fn names(list: &serde_json::Value) -> Vec<&str> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn every_option_in_the_bootstrap() {
        for build in [
            Build::Wasm {
                module: "t.wasm".to_string(),
            },
            Build::Native {
                module: "t.so".to_string(),
            },
        ] {
            let native = build.is_native();
            let config = rendered(build);
            let listeners = &config["static_resources"]["listeners"];
            let (http, tls) = (&listeners[0], &listeners[1]);
            assert_eq!(tls["name"], TLS_LISTENER);
            // The health check filters after trustip's HTTP filter, before the router.
            let hcm = &http["filter_chains"][0]["filters"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()["typed_config"];
            let http_filters = names(&hcm["http_filters"]);
            assert_eq!(
                &http_filters[1..],
                [api::HEALTH_CHECK, api::HEALTH_CHECK, api::ROUTER]
            );
            assert_eq!(
                hcm["http_filters"][1]["typed_config"]["headers"][0],
                serde_json::json!({"name": ":path", "string_match": {"safe_regex": {"regex": "/healthz/ready(\\?.*)?"}}})
            );
            assert_eq!(
                hcm["http_filters"][2]["typed_config"]["pass_through_mode"],
                false
            );
            // proxy_protocol keeps the TLVs to pass on, on both listeners.
            for listener in [http, tls] {
                assert_eq!(
                    listener["listener_filters"][0]["typed_config"]["pass_through_tlvs"],
                    serde_json::json!({"match_type": "INCLUDE", "tlv_type": [234]})
                );
            }
            // tls_inspector last, after trustip's listener filter (native).
            let expected: &[&str] = if native {
                &[
                    api::PROXY_PROTOCOL,
                    api::LISTENER_DYNAMIC_MODULE,
                    api::TLS_INSPECTOR,
                ]
            } else {
                &[api::PROXY_PROTOCOL, api::TLS_INSPECTOR]
            };
            assert_eq!(names(&tls["listener_filters"]), expected);
            let chains = tls["filter_chains"].as_array().unwrap();
            assert_eq!(chains.len(), 2);
            for (chain, (sni, cluster)) in chains.iter().zip([
                ("api.example.com", "tls_backend_0"),
                ("*.example.org", "tls_backend_1"),
            ]) {
                assert_eq!(
                    chain["filter_chain_match"],
                    serde_json::json!({"server_names": [sni]})
                );
                let expected: &[&str] = if native {
                    &[api::TCP_PROXY]
                } else {
                    &[api::SET_FILTER_STATE, api::NETWORK_WASM, api::TCP_PROXY]
                };
                assert_eq!(names(&chain["filters"]), expected);
                assert_eq!(
                    chain["filters"].as_array().unwrap().last().unwrap()["typed_config"]["cluster"],
                    cluster
                );
            }
            // Every cluster sends PROXY v2 with the TLV.
            let clusters = config["static_resources"]["clusters"].as_array().unwrap();
            assert_eq!(
                clusters.iter().map(|c| &c["type"]).collect::<Vec<_>>(),
                ["STATIC", "STATIC", "STRICT_DNS"]
            );
            for cluster in clusters {
                let socket = &cluster["transport_socket"];
                assert_eq!(socket["name"], api::UPSTREAM_PROXY_PROTOCOL);
                assert_eq!(
                    socket["typed_config"]["config"],
                    serde_json::json!({"version": "V2", "pass_through_tlvs": {"match_type": "INCLUDE", "tlv_type": [234]}})
                );
                assert_eq!(
                    socket["typed_config"]["transport_socket"]["name"],
                    api::RAW_BUFFER
                );
            }
        }
    }

    #[test]
    fn without_options_nothing_changes() {
        let mut plain = options();
        plain.health_check_paths.clear();
        plain.upstream_proxy = None;
        plain.tls = None;
        let wiring = wiring(
            trustip(Build::Wasm {
                module: "t.wasm".to_string(),
            }),
            &plain,
        );
        let text = bootstrap(&wiring, false).unwrap();
        for absent in [
            "health_check",
            "transport_socket",
            "pass_through_tlvs",
            "tls_inspector",
            "filter_chain_match",
        ] {
            assert!(!text.contains(absent), "{absent}");
        }
    }
}
