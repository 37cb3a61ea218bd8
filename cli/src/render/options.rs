//! The options that shape a gateway around the policy (`--health-check-path`,
//! `--upstream-proxy`, `--upstream-tlvs`, `--tls-passthrough`, `--tls-listen`): parsed, checked
//! against the target and against the policy. render never changes the policy: the JSON embedded
//! in the output is the file given, so `trustip explain --config` runs exactly what Envoy runs.
//! When an option needs a policy field, its absence is one usage line naming the field to add.

use trustip::core::tlv::TlvKey;

use crate::error::CliError;
use crate::hostport::parse_host_port;
use crate::render::model::{ProxyVersion, UpstreamProxy};
use crate::render::{RenderArgs, Target};

/// `--upstream-proxy`'s values.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum UpstreamProxyArg {
    /// PROXY v1 (text): the client's address and port only.
    V1,
    /// PROXY v2 (binary): the client, and the TLVs given with --upstream-tlvs.
    V2,
}

/// TLS passthrough routes: (server name, (host, port)), in the order given.
pub type TlsRoutes = Vec<(String, (String, u16))>;

/// What the options ask for, checked.
#[derive(Debug, Default)]
pub struct GatewayOptions {
    pub health_check_paths: Vec<String>,
    pub upstream_proxy: Option<UpstreamProxy>,
    pub tls_routes: TlsRoutes,
    /// Lines for stderr, each starting with `trustip: note: `.
    pub notes: Vec<String>,
}

fn usage(text: impl Into<String>) -> CliError {
    CliError::Usage(text.into())
}

/// The options against the target: each meaningless combination is one usage line.
fn check_target(args: &RenderArgs, target: Target) -> Result<(), CliError> {
    let health = !args.health_check_paths.is_empty();
    let upstream = args.upstream_proxy.is_some() || !args.upstream_tlvs.is_empty();
    let tls = !args.tls_passthrough.is_empty() || args.tls_listen.is_some();
    match target {
        Target::Istio if health => Err(usage(
            "--health-check-path is for --target envoy and compose: an Istio gateway answers readiness itself on its status port 15021 (GET /healthz/ready, a listener without trustip); point the load balancer's health check there, or, to check through the PROXY listener, list the path in the load balancer's require rule (\"health_check_paths\")",
        )),
        Target::Istio if upstream => Err(usage(
            "--upstream-proxy and --upstream-tlvs are for --target envoy: in Istio the upstream's transport socket belongs to the service's cluster, which these resources do not patch",
        )),
        Target::Istio if tls => Err(usage(
            "--tls-passthrough and --tls-listen are for --target envoy: in Istio, pass TLS through with a Gateway server in tls mode PASSTHROUGH and a VirtualService tls route by sniHosts; the WasmPlugin of type NETWORK decides for those connections too",
        )),
        Target::EnvoyGateway if health => Err(usage(
            "--health-check-path is for --target envoy and compose: Envoy Gateway answers health checks itself (ClientTrafficPolicy healthCheck.path, or the proxy's readiness port 19003 /ready); to check through the PROXY listener, list the path in the load balancer's require rule (\"health_check_paths\")",
        )),
        Target::EnvoyGateway if upstream => Err(usage(
            "--upstream-proxy and --upstream-tlvs are for --target envoy: in Envoy Gateway the backend's PROXY header is a BackendTrafficPolicy (proxyProtocol), which these resources do not render",
        )),
        Target::EnvoyGateway if tls => Err(usage(
            "--tls-passthrough and --tls-listen are for --target envoy: in Envoy Gateway, pass TLS through with a Gateway listener of protocol TLS (mode Passthrough) and a TLSRoute; trustip's HTTP filter does not see those connections",
        )),
        Target::Compose if upstream => Err(usage(
            "--upstream-proxy and --upstream-tlvs are for --target envoy: the compose stack's upstream (httpbin) does not read PROXY headers",
        )),
        Target::Compose if tls => Err(usage(
            "--tls-passthrough and --tls-listen are for --target envoy: the compose stack has no TLS backend",
        )),
        _ if args.tls_listen.is_some() && args.tls_passthrough.is_empty() => Err(usage(
            "--tls-listen is the address of the TLS passthrough listener: give at least one --tls-passthrough SNI=HOST:PORT",
        )),
        _ if !args.upstream_tlvs.is_empty() && args.upstream_proxy != Some(UpstreamProxyArg::V2) => {
            Err(usage(
                "--upstream-tlvs needs --upstream-proxy v2: PROXY v1 carries no TLVs",
            ))
        }
        _ => Ok(()),
    }
}

/// A request path as the policy's health_check_paths takes it (and Envoy's `:path` can equal).
fn check_path(path: &str) -> Result<(), CliError> {
    if !path.starts_with('/')
        || path.len() > 256
        || path
            .bytes()
            .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#')
    {
        return Err(usage(format!(
            "--health-check-path {path:?}: expected an absolute request path of at most 256 visible ASCII bytes, without spaces, query or fragment (/healthz/ready)"
        )));
    }
    Ok(())
}

/// The `require` rules of the policy JSON: (index, health_check_paths).
fn require_rules(policy: &serde_json::Value) -> Vec<(usize, Vec<&str>)> {
    let Some(rules) = policy.get("rules").and_then(|r| r.as_array()) else {
        return Vec::new();
    };
    rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.get("proxy_protocol").and_then(|p| p.as_str()) == Some("require"))
        .map(|(index, rule)| {
            let paths = rule
                .get("health_check_paths")
                .and_then(|p| p.as_array())
                .map(|paths| paths.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            (index, paths)
        })
        .collect()
}

/// `--health-check-path` against the policy: a require rule must admit the path (the load
/// balancer's health check brings no client information: PROXY LOCAL, v1 UNKNOWN or no
/// header). A policy without require rules admits such connections anyway (C = D).
fn check_health_paths(
    paths: &[String],
    policy: &serde_json::Value,
    notes: &mut Vec<String>,
) -> Result<(), CliError> {
    let rules = require_rules(policy);
    if rules.is_empty() {
        return Ok(());
    }
    for path in paths {
        let listing: Vec<usize> = rules
            .iter()
            .filter(|(_, listed)| listed.contains(&path.as_str()))
            .map(|(index, _)| *index)
            .collect();
        if listing.is_empty() {
            return Err(usage(format!(
                "--health-check-path {path}: no require rule of the policy admits it: add \"health_check_paths\": [\"{path}\"] to the load balancer's require rule (rules[{}]), or its health check (PROXY LOCAL, or no header) is refused missing_proxy; render does not change the policy, so `trustip explain` runs what Envoy runs",
                rules.first().map_or(0, |(index, _)| *index)
            )));
        }
        for (index, _) in rules.iter().filter(|(index, _)| !listing.contains(index)) {
            notes.push(format!(
                "trustip: note: rules[{index}] (require) does not list {path} in health_check_paths: a health check from its peers is refused missing_proxy"
            ));
        }
    }
    Ok(())
}

/// `--upstream-proxy` against the policy's `upstream_proxy_protocol`: both or neither.
fn check_upstream_policy(
    upstream: Option<UpstreamProxyArg>,
    policy: &serde_json::Value,
    target: Target,
) -> Result<(), CliError> {
    let declared = policy.get("upstream_proxy_protocol") == Some(&serde_json::Value::Bool(true));
    match (upstream, declared) {
        (Some(version), false) => Err(usage(format!(
            "--upstream-proxy {}: the policy must say so: add \"upstream_proxy_protocol\": true (then a PROXY header trustip does not use, from an ignore rule, is refused proxy_not_forwardable instead of reaching the upstream as if it were the client); render does not change the policy",
            match version {
                UpstreamProxyArg::V1 => "v1",
                UpstreamProxyArg::V2 => "v2",
            }
        ))),
        (None, true) if target == Target::Envoy => Err(usage(
            "the policy says \"upstream_proxy_protocol\": true: give --upstream-proxy v1|v2 so Envoy sends the PROXY header it declares, or remove the field",
        )),
        (None, true) if target == Target::Compose => Err(usage(
            "the policy says \"upstream_proxy_protocol\": true, but the compose stack's upstream (httpbin) does not read PROXY headers: remove the field",
        )),
        _ => Ok(()),
    }
}

fn parse_tlvs(names: &[String]) -> Result<Vec<TlvKey>, CliError> {
    let mut keys = Vec::new();
    for name in names {
        let key = TlvKey::from_name(name.trim()).ok_or_else(|| {
            usage(format!(
                "--upstream-tlvs {name:?}: expected TLV keys among {}",
                TlvKey::ALL.map(TlvKey::name).join(", ")
            ))
        })?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// A TLS server name Envoy's `server_names` takes: a host name, or `*.` and a host name.
fn check_server_name(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_tls_routes(values: &[String]) -> Result<TlsRoutes, CliError> {
    let mut routes: TlsRoutes = Vec::new();
    for value in values {
        let Some((name, backend)) = value.split_once('=') else {
            return Err(usage(format!(
                "--tls-passthrough {value:?}: expected SNI=HOST:PORT (api.example.com=10.0.0.7:443)"
            )));
        };
        let name = name.to_ascii_lowercase();
        if !check_server_name(&name) {
            return Err(usage(format!(
                "--tls-passthrough {value:?}: {name:?} is not a server name (api.example.com, *.example.com)"
            )));
        }
        if routes.iter().any(|(n, _)| *n == name) {
            return Err(usage(format!(
                "--tls-passthrough {value:?}: {name} is routed twice"
            )));
        }
        let backend = parse_host_port("--tls-passthrough", backend)?.into_parts();
        routes.push((name, backend));
    }
    Ok(routes)
}

/// The options, checked against the target and the policy (its JSON, validated already).
pub fn gateway_options(
    args: &RenderArgs,
    target: Target,
    policy: &serde_json::Value,
) -> Result<GatewayOptions, CliError> {
    check_target(args, target)?;
    let mut options = GatewayOptions::default();
    for path in &args.health_check_paths {
        check_path(path)?;
        if !options.health_check_paths.contains(path) {
            options.health_check_paths.push(path.clone());
        }
    }
    check_health_paths(&options.health_check_paths, policy, &mut options.notes)?;
    check_upstream_policy(args.upstream_proxy, policy, target)?;
    let tlvs = parse_tlvs(&args.upstream_tlvs)?;
    options.upstream_proxy = args.upstream_proxy.map(|version| UpstreamProxy {
        version: match version {
            UpstreamProxyArg::V1 => ProxyVersion::V1,
            UpstreamProxyArg::V2 => ProxyVersion::V2,
        },
        tlvs,
    });
    options.tls_routes = parse_tls_routes(&args.tls_passthrough)?;
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        render: RenderArgs,
    }

    fn args(extra: &[&str]) -> RenderArgs {
        let mut argv = vec!["render", "--config", "p.json", "--target", "envoy"];
        argv.extend_from_slice(extra);
        Wrapper::try_parse_from(argv).unwrap().render
    }

    fn error(result: Result<GatewayOptions, CliError>) -> String {
        match result {
            Err(err) => err.to_string(),
            Ok(options) => panic!("accepted: {options:?}"),
        }
    }

    const LB: &str = "10.0.0.0/8";

    fn strict(paths: &[&str]) -> serde_json::Value {
        json!({"rules": [{"from": [LB], "proxy_protocol": "require", "health_check_paths": paths}]})
    }

    #[test]
    fn health_check_path_needs_a_require_rule_listing_it() {
        let a = args(&["--health-check-path", "/healthz/ready"]);
        let text = error(gateway_options(&a, Target::Envoy, &strict(&[])));
        assert!(
            text.contains(r#"add "health_check_paths": ["/healthz/ready"] to the load balancer's require rule (rules[0])"#),
            "{text}"
        );
        let options = gateway_options(&a, Target::Envoy, &strict(&["/healthz/ready"])).unwrap();
        assert_eq!(options.health_check_paths, vec!["/healthz/ready"]);
        assert!(options.notes.is_empty());
        // Without require rules a connection without client information is admitted (C = D).
        let options = gateway_options(
            &a,
            Target::Envoy,
            &json!({"rules": [{"from": [LB], "proxy_protocol": "use"}]}),
        )
        .unwrap();
        assert_eq!(options.health_check_paths, vec!["/healthz/ready"]);
        // A second require rule not listing it: a note.
        let two = json!({"rules": [
            {"from": ["192.0.2.0/24"], "proxy_protocol": "deny"},
            {"from": [LB], "proxy_protocol": "require", "health_check_paths": ["/healthz/ready"]},
            {"from": ["172.16.0.0/12"], "proxy_protocol": "require"},
        ]});
        let options = gateway_options(&a, Target::Compose, &two).unwrap();
        assert_eq!(options.notes.len(), 1, "{:?}", options.notes);
        assert!(options.notes[0].starts_with("trustip: note: rules[2] (require)"));
        // Repeated and odd paths.
        let options = gateway_options(
            &args(&["--health-check-path", "/a", "--health-check-path", "/a"]),
            Target::Envoy,
            &json!({}),
        )
        .unwrap();
        assert_eq!(options.health_check_paths, vec!["/a"]);
        for bad in ["healthz", "/a b", "/a\u{7f}", "", "/a?b=1", "/a#b"] {
            let text = error(gateway_options(
                &args(&["--health-check-path", bad]),
                Target::Envoy,
                &json!({}),
            ));
            assert!(text.contains("expected an absolute request path"), "{text}");
        }
    }

    #[test]
    fn upstream_proxy_and_the_policy_agree() {
        let declared = json!({"upstream_proxy_protocol": true});
        let text = error(gateway_options(
            &args(&["--upstream-proxy", "v2"]),
            Target::Envoy,
            &json!({}),
        ));
        assert!(
            text.contains(r#"add "upstream_proxy_protocol": true"#),
            "{text}"
        );
        let text = error(gateway_options(&args(&[]), Target::Envoy, &declared));
        assert!(text.contains("give --upstream-proxy v1|v2"), "{text}");
        let text = error(gateway_options(&args(&[]), Target::Compose, &declared));
        assert!(text.contains("httpbin"), "{text}");
        // Istio does not render the upstream: nothing to check.
        gateway_options(&args(&[]), Target::Istio, &declared).unwrap();

        let options = gateway_options(
            &args(&[
                "--upstream-proxy",
                "v2",
                "--upstream-tlvs",
                "aws_vpce_id,unique_id,aws_vpce_id",
            ]),
            Target::Envoy,
            &declared,
        )
        .unwrap();
        let upstream = options.upstream_proxy.unwrap();
        assert_eq!(upstream.version, ProxyVersion::V2);
        assert_eq!(upstream.tlvs, vec![TlvKey::AwsVpceId, TlvKey::UniqueId]);

        let text = error(gateway_options(
            &args(&["--upstream-proxy", "v1", "--upstream-tlvs", "aws_vpce_id"]),
            Target::Envoy,
            &declared,
        ));
        assert!(text.contains("needs --upstream-proxy v2"), "{text}");
        let text = error(gateway_options(
            &args(&["--upstream-tlvs", "aws_vpce_id"]),
            Target::Envoy,
            &declared,
        ));
        assert!(text.contains("needs --upstream-proxy v2"), "{text}");
        let text = error(gateway_options(
            &args(&["--upstream-proxy", "v2", "--upstream-tlvs", "vpce"]),
            Target::Envoy,
            &declared,
        ));
        assert!(
            text.contains("expected TLV keys among aws_vpce_id"),
            "{text}"
        );
    }

    #[test]
    fn tls_passthrough_routes() {
        let options = gateway_options(
            &args(&[
                "--tls-passthrough",
                "API.example.com=10.0.0.7:443",
                "--tls-passthrough",
                "*.example.org=backend.internal:8443",
            ]),
            Target::Envoy,
            &json!({}),
        )
        .unwrap();
        assert_eq!(
            options.tls_routes,
            vec![
                ("api.example.com".to_string(), ("10.0.0.7".to_string(), 443)),
                (
                    "*.example.org".to_string(),
                    ("backend.internal".to_string(), 8443)
                ),
            ]
        );
        for (bad, needle) in [
            ("api.example.com", "expected SNI=HOST:PORT"),
            ("a..b=1.2.3.4:443", "is not a server name"),
            ("a.*.b=1.2.3.4:443", "is not a server name"),
            ("=1.2.3.4:443", "is not a server name"),
            ("a.b=1.2.3.4", "--tls-passthrough"),
        ] {
            let text = error(gateway_options(
                &args(&["--tls-passthrough", bad]),
                Target::Envoy,
                &json!({}),
            ));
            assert!(text.contains(needle), "{bad}: {text}");
        }
        let text = error(gateway_options(
            &args(&[
                "--tls-passthrough",
                "a.b=1.2.3.4:443",
                "--tls-passthrough",
                "A.b=1.2.3.5:443",
            ]),
            Target::Envoy,
            &json!({}),
        ));
        assert!(text.contains("a.b is routed twice"), "{text}");
        let text = error(gateway_options(
            &args(&["--tls-listen", "0.0.0.0:443"]),
            Target::Envoy,
            &json!({}),
        ));
        assert!(
            text.contains("give at least one --tls-passthrough"),
            "{text}"
        );
    }

    #[test]
    fn meaningless_combinations() {
        for (target, extra, needle) in [
            (Target::Istio, &["--health-check-path", "/h"][..], "15021"),
            (
                Target::Istio,
                &["--upstream-proxy", "v2"][..],
                "--target envoy",
            ),
            (
                Target::Istio,
                &["--tls-passthrough", "a.b=1.2.3.4:443"][..],
                "PASSTHROUGH",
            ),
            (Target::Compose, &["--upstream-proxy", "v1"][..], "httpbin"),
            (
                Target::Compose,
                &["--tls-passthrough", "a.b=1.2.3.4:443"][..],
                "no TLS backend",
            ),
        ] {
            let text = error(gateway_options(&args(extra), target, &json!({})));
            assert!(text.contains(needle), "{extra:?}: {text}");
            assert!(!text.contains('\n'), "{text}");
        }
        // compose takes health-check paths.
        gateway_options(
            &args(&["--health-check-path", "/h"]),
            Target::Compose,
            &json!({}),
        )
        .unwrap();
    }
}
