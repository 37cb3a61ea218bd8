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
    App, ClusterPlan, Discovery, HostPort, ListenerPlan, LogLine, Trustip, Wiring,
};
use crate::render::yaml::{self, Anchors, Node};

pub struct Options {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: (String, u16),
    pub strict_proxy: bool,
}

pub const LISTENER: &str = "trustip_ingress";
pub const CLUSTER: &str = "upstream";

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
    let discovery = if host.parse::<std::net::IpAddr>().is_ok() {
        Discovery::Static
    } else {
        Discovery::StrictDns
    };
    Wiring {
        trustip,
        admin: HostPort::new(options.admin.ip().to_string(), options.admin.port()),
        listeners: vec![ListenerPlan {
            name: LISTENER.to_string(),
            address: HostPort::new(options.listen.ip().to_string(), options.listen.port()),
            strict_proxy: options.strict_proxy,
            connection_role: true,
            app: App::Http {
                stat_prefix: LISTENER.to_string(),
                http_role: true,
                cluster: CLUSTER.to_string(),
                request_log: Some(request_log()),
            },
            connection_log: Some(connection_log()),
        }],
        clusters: vec![ClusterPlan {
            name: CLUSTER.to_string(),
            discovery,
            endpoint: HostPort::new(host, port),
        }],
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
    if wiring.trustip.build.is_native() {
        return to_yaml(
            &native_header(strict),
            &wiring.bootstrap(),
            &mut Anchors::default(),
        );
    }
    let header = format!(
        "Envoy bootstrap rendered by `trustip render --target envoy`.\n\
         Run: envoy -c THIS_FILE\n\
         {strict}\n\
         Both roles share the policy and one wasm VM. Header names with\n\
         underscores (x_forwarded_for, x_real_ip) are dropped before any filter sees them."
    );
    to_yaml(&header, &wiring.bootstrap(), &mut Anchors::default())
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
