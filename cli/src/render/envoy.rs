//! The Envoy bootstrap: proxy_protocol (TLVs in filter state), set_filter_state for the direct
//! peer, the network role, the HCM with the HTTP role, an access log printing the decision.

use std::net::SocketAddr;

use crate::policy_file::PolicyFile;
use crate::render::{quoted, tlv_rules};

pub struct Options {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: (String, u16),
    pub wasm: String,
    pub strict_proxy: bool,
}

/// The access-log line: the decision trustip published as filter state.
pub const ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%\" %RESPONSE_CODE% direct_peer=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% source=%DOWNSTREAM_REMOTE_ADDRESS% client=%FILTER_STATE(wasm.trustip.client_ip:PLAIN)% reason=%FILTER_STATE(wasm.trustip.reason:PLAIN)%\n";

const TEMPLATE: &str = r#"# Envoy bootstrap rendered by `trustip render --target envoy` from POLICY_FILE.
# Run: envoy -c THIS_FILE
admin:
  address: {socket_address: {address: "ADMIN_ADDR", port_value: ADMIN_PORT}}
static_resources:
  listeners:
  - name: trustip_ingress
    address: {socket_address: {address: "LISTEN_ADDR", port_value: LISTEN_PORT}}
    listener_filters:
    # Envoy parses the PROXY header; trustip decides whether to believe it.
    - name: envoy.filters.listener.proxy_protocol
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol
        # STRICT_COMMENT
        allow_requests_without_proxy_protocol: ALLOW_WITHOUT
        # TLVs go to filter state, where the HTTP wasm filter can read them.
        tlv_location: FILTER_STATE
TLV_RULES    filter_chains:
    - filters:
      # First: remember the TCP peer before PROXY processing (trustip's "direct peer" D), and
      # the PROXY-derived source P as the connection opened: one filter-state read gives both.
      - name: envoy.filters.network.set_filter_state
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config
          on_new_connection:
          - object_key: DIRECT_PEER_KEY
            factory_key: envoy.string
            format_string:
              text_format_source: {inline_string: "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%"}
      # trustip, network role: decides once per connection, closes rejected ones.
      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: trustip-network
            root_id: trustip-network
            vm_config:
              vm_id: trustip
              runtime: envoy.wasm.runtime.v8
              code: {local: {filename: WASM_PATH}}
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: POLICY_JSON
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: trustip_ingress
          # The client address is the PROXY-derived one (trustip may still overrule it) ...
          use_remote_address: true
          # ... and trustip, not the HCM, writes X-Forwarded-For.
          skip_xff_append: true
          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                text_format_source:
                  inline_string: ACCESS_LOG
          http_filters:
          # trustip, HTTP role: decides per request and writes the client-IP headers.
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: trustip-http
                root_id: trustip-http
                vm_config:
                  vm_id: trustip
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: WASM_PATH}}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: POLICY_JSON
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            name: local_route
            virtual_hosts:
            - name: upstream
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
  clusters:
  - name: upstream
    type: STRICT_DNS
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {socket_address: {address: "UPSTREAM_HOST", port_value: UPSTREAM_PORT}}
"#;

pub fn bootstrap(file: &PolicyFile, options: &Options) -> String {
    let strict_comment = if options.strict_proxy {
        "Strict (--strict-proxy): a connection without PROXY is reset at the listener."
    } else {
        "Connections without PROXY are allowed; trustip's rules decide who may omit it."
    };
    TEMPLATE
        .replace("POLICY_FILE", "the policy")
        .replace("ADMIN_ADDR", &options.admin.ip().to_string())
        .replace("ADMIN_PORT", &options.admin.port().to_string())
        .replace("LISTEN_ADDR", &options.listen.ip().to_string())
        .replace("LISTEN_PORT", &options.listen.port().to_string())
        .replace("STRICT_COMMENT", strict_comment)
        .replace(
            "ALLOW_WITHOUT",
            if options.strict_proxy {
                "false"
            } else {
                "true"
            },
        )
        .replace("TLV_RULES", &tlv_rules(&file.policy, "        "))
        .replace("DIRECT_PEER_KEY", &quoted(&file.policy.direct_peer_key))
        .replace("WASM_PATH", &quoted(&options.wasm))
        .replace("ACCESS_LOG", &quoted(ACCESS_LOG_FORMAT))
        .replace("UPSTREAM_HOST", &options.upstream.0)
        .replace("UPSTREAM_PORT", &options.upstream.1.to_string())
        // Last, so that nothing in the policy is taken for a placeholder.
        .replace("POLICY_JSON", &quoted(&file.compact()))
}
