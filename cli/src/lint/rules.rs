//! The checks. Each rule has a stable id and one severity (error: spoofing or an outage is
//! possible; warning: something is weaker or odder than it looks); docs/lint.md describes
//! each, and tests/data/lint/<id>/ holds a configuration that triggers it.

use trustip::core::config::{IfMissing, Mode, Policy, ProxyProtocol as Word, XffMode};
use trustip::core::names;
use trustip::core::tlv::{TlvEncoding, TlvKey};

use super::model::{
    Build, Deployment, Kind, Listener, Location, NetworkFilter, Platform, Trustip, Upstream,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// Every rule: id, severity, what it detects (one line, for `--help`-like listings and docs).
pub const RULES: &[(&str, Severity, &str)] = &[
    ("unreadable-input", Severity::Error, "a file that cannot be read or parsed"),
    ("no-config-found", Severity::Warning, "a file with no Envoy configuration, Kubernetes manifest or trustip policy in it"),
    ("policy-invalid", Severity::Error, "a trustip policy the filter's configuration step refuses"),
    ("wasm-root-id-mismatch", Severity::Error, "a trustip wasm filter whose root_id names the other role"),
    ("wasm-root-id-unknown", Severity::Error, "a trustip wasm filter whose root_id names no role"),
    ("native-filter-name-mismatch", Severity::Error, "a trustip dynamic-module filter whose filter_name is not its filter type's"),
    ("wasm-fail-open", Severity::Error, "a trustip wasm filter that fails open"),
    ("missing-set-filter-state", Severity::Error, "a wasm filter without the set_filter_state that records the direct peer, under if_missing reject"),
    ("set-filter-state-wrong-source", Severity::Error, "set_filter_state records something other than %DOWNSTREAM_DIRECT_REMOTE_ADDRESS% as the direct peer"),
    ("direct-peer-trust-source", Severity::Warning, "no direct peer recorded and if_missing trust_source: D is the PROXY source"),
    ("tlv-not-readable", Severity::Error, "a TLV the policy reads that the proxy_protocol filter does not store where the filter reads it"),
    ("tlv-raw-binary", Severity::Warning, "binary TLVs read with tlv_encoding raw"),
    ("use-remote-address-off", Severity::Error, "an HCM with a trustip HTTP filter and use_remote_address off"),
    ("xff-append-not-skipped", Severity::Error, "Envoy appends to X-Forwarded-For, the policy passes the header on (append, preserve) and lets unverified PROXY sources through (an ignore rule, or shadow mode)"),
    ("xff-append-extra-hop", Severity::Warning, "Envoy appends to X-Forwarded-For before trustip reads it: one hop more in the header trustip reads (and, with append or preserve, passes on)"),
    ("underscore-headers-allowed", Severity::Error, "an HCM with a trustip HTTP filter that lets header names with underscores through"),
    ("trustip-filter-disabled", Severity::Error, "a trustip filter disabled on the listener or on a route: requests skip it and the client's own X-Forwarded-For, X-Real-IP reach the upstream"),
    ("strict-proxy-health-checks", Severity::Error, "strict PROXY and a load-balancer health check no require rule admits"),
    ("health-check-path-not-admitted", Severity::Warning, "a health check path no require rule admits, on a listener that also takes connections without PROXY"),
    ("upstream-proxy-unverified", Severity::Error, "PROXY sent upstream while an ignore rule's PROXY header is not refused"),
    ("upstream-proxy-not-declared", Severity::Warning, "PROXY sent upstream and the policy does not say upstream_proxy_protocol"),
    ("proxy-without-trust", Severity::Error, "a PROXY listener where nothing checks who sent the header"),
    ("native-listener-order", Severity::Error, "trustip-listener before proxy_protocol, or with PROXY rules and no proxy_protocol"),
    ("proxy-protocol-filter-missing", Severity::Error, "require rules on a listener that parses no PROXY header"),
    ("shadow-mode", Severity::Warning, "a policy in shadow mode: nothing is enforced"),
    ("policy-mismatch", Severity::Warning, "trustip wasm filters of one listener with different policies"),
    ("native-policy-mismatch", Severity::Error, "the native listener and HTTP filters of one listener with policy texts that differ"),
    ("wasm-separate-vms", Severity::Warning, "trustip wasm filters of one listener in different VMs"),
];

pub fn severity(id: &str) -> Severity {
    RULES
        .iter()
        .find(|(rule, _, _)| *rule == id)
        .map_or(Severity::Error, |(_, severity, _)| *severity)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub location: Location,
    pub runtime: String,
    pub fix: String,
}

#[derive(Default)]
pub struct Findings(pub Vec<Finding>, std::collections::HashSet<Finding>);

impl Findings {
    pub fn push(
        &mut self,
        id: &'static str,
        location: &Location,
        runtime: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let finding = Finding {
            id,
            severity: severity(id),
            location: location.clone(),
            runtime: runtime.into(),
            fix: fix.into(),
        };
        // A set: a configuration with thousands of listeners has thousands of findings.
        if self.1.insert(finding.clone()) {
            self.0.push(finding);
        }
    }
}

/// Runs every rule over the deployment.
pub fn check(deployment: &Deployment, out: &mut Findings) {
    for policy in &deployment.policies {
        policy_only(policy, out);
    }
    for listener in &deployment.listeners {
        for t in listener.trustip() {
            policy_only(t, out);
            filter_type(t, listener.platform, out);
        }
        set_filter_state(listener, out);
        tlvs(listener, out);
        hcm_settings(listener, out);
        disabled(listener, out);
        health_checks(listener, out);
        upstream_proxy(listener, deployment, out);
        proxy_without_trust(listener, out);
        native_order(listener, out);
        proxy_protocol_missing(listener, out);
        consistency(listener, out);
    }
}

/// The checks that read the policy alone.
fn policy_only(t: &Trustip, out: &mut Findings) {
    let policy = match &t.policy {
        Ok(policy) => policy,
        Err(message) => {
            out.push(
                "policy-invalid",
                &t.policy_location,
                format!("Envoy refuses the filter's configuration (with a static configuration it exits; the listener never serves): {message}"),
                "correct the field the message names; `trustip explain --config FILE` checks a policy file with the same code",
            );
            return;
        }
    };
    if policy.mode == Mode::Shadow {
        out.push(
            "shadow-mode",
            &t.policy_location,
            "nothing is enforced: every would-be rejection is only counted (shadow_<reason>) and logged, and a spoofed PROXY header or X-Forwarded-For goes on with C = D",
            "after watching the shadow_* counters, set \"mode\": \"enforce\"",
        );
    }
    for rule in &policy.rules {
        if !matches!(rule.proxy_protocol, Word::Require | Word::Use) {
            continue;
        }
        if let Some(block) = rule
            .from
            .iter()
            .map(ToString::to_string)
            .find(|b| b.ends_with("/0"))
        {
            out.push(
                "proxy-without-trust",
                &t.policy_location,
                format!("a {} rule from {block} believes a PROXY header from any peer: anyone who reaches the listener directly can claim any client address", rule.proxy_protocol.name()),
                "list only the load balancer's addresses in the require/use rule's \"from\"",
            );
        }
    }
    let binary: Vec<&str> = policy
        .tlv_keys_used
        .iter()
        .filter(|k| {
            matches!(
                k,
                TlvKey::AzureLinkId | TlvKey::GcpPscConnectionId | TlvKey::UniqueId
            )
        })
        .map(|k| k.name())
        .collect();
    if policy.tlv_encoding == TlvEncoding::Raw && !binary.is_empty() {
        out.push(
            "tlv-raw-binary",
            &t.policy_location,
            format!("{} are binary: Envoy's default SANITIZED_UTF8 turns every byte >= 0x80 into '!', so such values are refused (tlv) or mapped into headers altered", binary.join(", ")),
            "set \"tlv_encoding\": \"base64\" and value_string_encoding: BASE64 on those proxy_protocol rules (`trustip render` writes both)",
        );
    }
}

/// The root_id (wasm) or filter_name (native) against the filter type that loads it.
fn filter_type(t: &Trustip, platform: Platform, out: &mut Findings) {
    if let Some((at, setting)) = &t.fail_open {
        let fix = match platform {
            Platform::Istio => "failStrategy: FAIL_CLOSE",
            Platform::EnvoyGateway => "failOpen: false",
            Platform::Envoy => "failure_policy: FAIL_CLOSED",
        };
        out.push(
            "wasm-fail-open",
            at,
            format!("{setting}: when the VM fails to start or traps, requests and connections pass without trustip, and spoofed PROXY sources and client headers reach the upstream"),
            fix,
        );
    }
    let selector = t.selector.as_deref().unwrap_or("");
    match t.build {
        Build::Wasm => {
            let (field, network_fix, http_fix) = match platform {
                Platform::Istio => (
                    "pluginName",
                    "pluginName: trustip-network (type: NETWORK)",
                    "pluginName: trustip-http (type: HTTP)",
                ),
                Platform::EnvoyGateway => ("rootID", "", "rootID: trustip-http"),
                Platform::Envoy => (
                    "root_id",
                    "root_id: trustip-network",
                    "root_id: trustip-http",
                ),
            };
            let shown = if selector.is_empty() {
                "empty".to_string()
            } else {
                format!("{selector:?}")
            };
            match (t.kind, selector) {
                (Kind::Network, names::NETWORK_ROOT_ID) | (Kind::Http, names::HTTP_ROOT_ID | "") => {}
                (Kind::Network, names::HTTP_ROOT_ID | "") => out.push(
                    "wasm-root-id-mismatch",
                    &t.location,
                    format!("the network filter's {field} is {shown}, the HTTP role's: it refuses all its traffic (every connection closed, reason misconfigured)"),
                    network_fix,
                ),
                (Kind::Http | Kind::Listener, names::NETWORK_ROOT_ID) => out.push(
                    "wasm-root-id-mismatch",
                    &t.location,
                    format!("the HTTP filter's {field} is {shown}, the network role's: it refuses every request (HTTP 500, x-trustip-reject: misconfigured)"),
                    http_fix,
                ),
                _ => out.push(
                    "wasm-root-id-unknown",
                    &t.location,
                    format!("{field} {shown} names no trustip role: the module refuses the configuration and Envoy refuses the filter"),
                    if t.kind == Kind::Network { network_fix } else { http_fix },
                ),
            }
        }
        Build::Native => {
            let expected = match t.kind {
                Kind::Listener => names::LISTENER_FILTER_NAME,
                Kind::Network => names::NETWORK_FILTER_NAME,
                Kind::Http => names::HTTP_FILTER_NAME,
            };
            if selector != expected {
                out.push(
                    "native-filter-name-mismatch",
                    &t.location,
                    format!("filter_name {selector:?} is not the {} filter's: the module refuses the configuration (config_new) and Envoy refuses the filter", kind_name(t.kind)),
                    format!("filter_name: {expected}"),
                );
            }
        }
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Listener => "listener",
        Kind::Network => "network",
        Kind::Http => "HTTP",
    }
}

fn proxy_strict(listener: &Listener) -> Option<bool> {
    listener
        .proxy_protocol
        .as_ref()
        .and_then(|(_, pp)| pp.strict)
}

/// The wasm filters read the direct peer D from set_filter_state.
fn set_filter_state(listener: &Listener, out: &mut Findings) {
    for chain in &listener.chains {
        for (position, t) in chain.trustip() {
            // The native filters read D themselves; only trustip-http (or -network) without the
            // listener filter takes D and P from a set_filter_state that records them.
            let native_alone = t.build == Build::Native && listener.native.is_empty();
            if t.build != Build::Wasm && !native_alone {
                continue;
            }
            let Some(policy) = t.policy() else { continue };
            let entry = chain
                .filter_state_before(position)
                .find(|e| e.object_key == policy.direct_peer_key);
            if let Some(entry) = entry {
                if !entry
                    .format
                    .trim_start()
                    .starts_with("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS")
                {
                    out.push(
                        "set-filter-state-wrong-source",
                        &entry.location,
                        format!("{} records {:?} as the direct peer D: after proxy_protocol that is the PROXY source, so a peer's own PROXY header names its D and picks the rule that trusts it", policy.direct_peer_key, entry.format),
                        format!("format_string.text_format_source.inline_string: \"{}\"", names::DIRECT_PEER_FORMAT),
                    );
                }
                continue;
            }
            if t.build == Build::Native {
                continue;
            }
            let later = chain
                .filter_state_before(chain.filters.len())
                .any(|e| e.object_key == policy.direct_peer_key);
            let why = if later {
                format!(
                    "the set_filter_state writing {} comes after the trustip filter",
                    policy.direct_peer_key
                )
            } else {
                format!(
                    "no set_filter_state before it writes {}",
                    policy.direct_peer_key
                )
            };
            let fix_sfs = match listener.platform {
                Platform::Istio => format!("an EnvoyFilter NETWORK_FILTER patch, INSERT_FIRST: envoy.filters.network.set_filter_state with object_key {} from \"{}\" (`trustip render --target istio` writes it)", policy.direct_peer_key, names::DIRECT_PEER_FORMAT),
                _ => format!("make envoy.filters.network.set_filter_state the chain's first filter, on_new_connection object_key {}, factory_key envoy.string, inline_string \"{}\"", policy.direct_peer_key, names::DIRECT_PEER_FORMAT),
            };
            match policy.if_missing {
                IfMissing::Reject => {
                    let (runtime, fix) = if listener.platform == Platform::EnvoyGateway {
                        (
                            "Envoy Gateway cannot add set_filter_state, so the wasm filter never learns the TCP peer: every request is refused no_direct_peer (outage)".to_string(),
                            "use the native build (EnvoyExtensionPolicy dynamicModule trustip-http), which reads the TCP peer itself".to_string(),
                        )
                    } else {
                        (
                            format!("{why}: the filter never learns the TCP peer, and every decision fails closed as no_direct_peer (outage)"),
                            fix_sfs,
                        )
                    };
                    out.push("missing-set-filter-state", &t.location, runtime, fix);
                }
                IfMissing::TrustSource => {
                    if listener.platform != Platform::EnvoyGateway
                        && proxy_strict(listener) == Some(false)
                    {
                        out.push(
                            "proxy-without-trust",
                            &t.location,
                            format!("{why}, and direct_peer.if_missing is trust_source on a listener where PROXY is optional: D is taken from the PROXY header, so a peer that reaches the listener directly names the load balancer as its D and any client address as P"),
                            fix_sfs,
                        );
                    } else {
                        let fix = if listener.platform == Platform::EnvoyGateway {
                            "keep the Gateway reachable only by the load balancer, or use the native build (dynamicModule trustip-http), which reads the TCP peer itself".to_string()
                        } else {
                            fix_sfs
                        };
                        out.push(
                            "direct-peer-trust-source",
                            &t.location,
                            format!("{}: with if_missing trust_source D is the PROXY source, which only holds while nothing but the load balancer can reach the listener", if listener.platform == Platform::EnvoyGateway { "the wasm filter has no TCP peer on Envoy Gateway".to_string() } else { why }),
                            fix,
                        );
                    }
                }
            }
        }
    }
}

/// Where each build reads TLVs: the wasm roles and the native HTTP filter from filter state;
/// the native listener filter from dynamic metadata or filter state.
fn tlvs(listener: &Listener, out: &mut Findings) {
    for t in listener.trustip() {
        let Some(policy) = t.policy() else { continue };
        for key in &policy.tlv_keys_used {
            let base64 = policy.tlv_encoding == TlvEncoding::Base64;
            // The native listener filter reads dynamic metadata too, and the native HTTP
            // filter after it takes the TLVs with its decision (the handoff).
            let needs_filter_state = t.build == Build::Wasm || listener.native.is_empty();
            let encoding = if base64 {
                ", value_string_encoding: BASE64"
            } else {
                ""
            };
            let rule_fix = format!(
                "proxy_protocol: tlv_location: FILTER_STATE, rules: [{{tlv_type: {}, on_tlv_present: {{key: {}{encoding}}}}}]",
                key.tlv_type(),
                key.name()
            );
            let effect = format!("every connection is refused tlv where the policy requires {} and its header mapping stays empty", key.name());
            if listener.platform == Platform::EnvoyGateway {
                out.push(
                    "tlv-not-readable",
                    &t.policy_location,
                    format!("Envoy Gateway's proxy_protocol listener filter keeps no TLVs: {effect}"),
                    "drop the TLV allowlists and headers.tlv from the policy on Envoy Gateway (or use plain Envoy or Istio)",
                );
                continue;
            }
            let Some((_, pp)) = &listener.proxy_protocol else {
                if listener.platform == Platform::Envoy {
                    out.push(
                        "tlv-not-readable",
                        &listener.location,
                        format!("the listener has no proxy_protocol listener filter, so no TLV is ever read: {effect}"),
                        format!("add envoy.filters.listener.proxy_protocol with {rule_fix}"),
                    );
                } else {
                    out.push(
                        "tlv-not-readable",
                        &t.policy_location,
                        format!("no EnvoyFilter gives the gateway's proxy_protocol filter the TLV rules: {effect}"),
                        format!("an EnvoyFilter LISTENER_FILTER patch (MERGE) of envoy.filters.listener.proxy_protocol with {rule_fix} (`trustip render --target istio` writes it)"),
                    );
                }
                continue;
            };
            let rule = pp
                .tlv_rules
                .iter()
                .find(|r| r.tlv_type == u64::from(key.tlv_type()));
            let problem = match rule {
                _ if needs_filter_state && !pp.tlv_filter_state => Some(format!(
                    "the TLVs stay in dynamic metadata (tlv_location unset or DYNAMIC_METADATA), which the {} {} filter cannot read",
                    if t.build == Build::Wasm { "wasm" } else { "native" },
                    kind_name(t.kind)
                )),
                None => Some(format!("no proxy_protocol rule stores TLV type {} ({})", key.tlv_type(), key.name())),
                Some(r) if r.key != key.name() => Some(format!(
                    "TLV type {} is stored under key {:?}, trustip reads {:?}",
                    key.tlv_type(),
                    r.key,
                    key.name()
                )),
                Some(r) if r.base64 != base64 => Some(format!(
                    "the policy says tlv_encoding {} and the proxy_protocol rule for {} {}",
                    if base64 { "base64" } else { "raw" },
                    key.name(),
                    if r.base64 { "stores BASE64" } else { "stores the default SANITIZED_UTF8" }
                )),
                _ => None,
            };
            if let Some(problem) = problem {
                out.push(
                    "tlv-not-readable",
                    &pp.location,
                    format!("{problem}: {effect}"),
                    rule_fix,
                );
            }
        }
    }
}

/// The HCM settings around trustip's HTTP filter.
fn hcm_settings(listener: &Listener, out: &mut Findings) {
    for chain in &listener.chains {
        let d_only = chain.filter_state_before(chain.filters.len()).any(|e| {
            e.format
                .trim()
                .starts_with("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS")
                && !e.format.trim().contains(' ')
        });
        for hcm in chain.hcms() {
            if hcm.http.is_empty() {
                continue;
            }
            let policies: Vec<&Policy> = hcm.http.iter().filter_map(Trustip::policy).collect();
            // use_remote_address with xff_num_trusted_hops N > 0 takes the downstream address
            // from X-Forwarded-For as well: the N-th element from the right, one the client
            // wrote when it connects directly.
            let hops = hcm.use_remote_address && hcm.xff_num_trusted_hops > 0;
            if !hcm.use_remote_address || hops {
                let alone =
                    hcm.http.iter().any(|t| t.build == Build::Native) && listener.native.is_empty();
                let from = if hops {
                    let field = match listener.platform {
                        Platform::Istio => "numTrustedProxies",
                        _ => "xff_num_trusted_hops",
                    };
                    format!(
                        "the client's own X-Forwarded-For ({field} {})",
                        hcm.xff_num_trusted_hops
                    )
                } else {
                    "the client's own X-Forwarded-For".to_string()
                };
                let runtime = if d_only || alone {
                    format!("the HCM takes the downstream address from {from}, and the trustip HTTP filter reads P from it: a direct client's X-Forwarded-For poses as a PROXY source (under a use rule it chooses its own address)")
                } else {
                    format!("the HCM takes the request's downstream address from {from}: %DOWNSTREAM_REMOTE_ADDRESS% in access logs, RBAC remote_ip and every other filter reading source.address see an address the client chose")
                };
                let fix = match listener.platform {
                    Platform::EnvoyGateway => "leave ClientTrafficPolicy clientIPDetection unset (its xForwardedFor or customHeader turns use_remote_address off); trustip's xff settings do that job",
                    Platform::Istio if hops => "leave the gateway's gatewayTopology.numTrustedProxies unset (0); trustip's xff.trusted_hops counts the hops instead",
                    Platform::Istio => "use_remote_address: true in the EnvoyFilter's HCM patch",
                    Platform::Envoy if hops => "xff_num_trusted_hops: 0 (or unset); trustip's xff.trusted_hops counts the hops instead",
                    Platform::Envoy => "use_remote_address: true",
                };
                let at = if hops {
                    &hcm.xff_num_trusted_hops_at
                } else {
                    &hcm.use_remote_address_at
                };
                out.push("use-remote-address-off", at, runtime, fix);
            } else if !hcm.skip_xff_append {
                for policy in &policies {
                    xff_append(listener.platform, &hcm.skip_xff_append_at, policy, out);
                }
            }
            if !matches!(hcm.underscores.as_str(), "DROP_HEADER" | "REJECT_REQUEST") {
                let fix = match listener.platform {
                    Platform::EnvoyGateway => "ClientTrafficPolicy headers.withUnderscoresAction: DropHeader",
                    Platform::Istio => "common_http_protocol_options.headers_with_underscores_action: DROP_HEADER in the EnvoyFilter's HCM patch",
                    Platform::Envoy => "common_http_protocol_options: {headers_with_underscores_action: DROP_HEADER}",
                };
                out.push(
                    "underscore-headers-allowed",
                    &hcm.underscores_at,
                    format!("header names with underscores pass (headers_with_underscores_action {}): X_Real_IP or X_Forwarded_For are not in trustip's strip list, and CGI-style apps read them as X-Real-IP and X-Forwarded-For", hcm.underscores),
                    fix,
                );
            }
        }
    }
}

/// A trustip HTTP filter Envoy is told to skip: `disabled: true` on its http_filters entry, or
/// a route's (virtual host's, route configuration's) FilterConfig `disabled: true`. The
/// requests it skips reach the upstream with the client's own X-Forwarded-For and X-Real-IP,
/// and with no other trustip filter on the chain a PROXY header from any peer is believed.
fn disabled(listener: &Listener, out: &mut Findings) {
    for chain in &listener.chains {
        let other = !listener.native.is_empty()
            || chain
                .filters
                .iter()
                .any(|f| matches!(f, NetworkFilter::Trustip(_)));
        for hcm in chain.hcms() {
            for t in &hcm.http {
                for (at, what) in &t.disabled {
                    let proxy = if listener.proxy_protocol.is_some() && !other {
                        ", and nothing checks who sent a PROXY header: any peer's claim is the client"
                    } else {
                        ""
                    };
                    let fix = if at.path.ends_with(".disabled") {
                        "remove disabled: true from the trustip filter's http_filters entry"
                    } else {
                        "remove that typed_per_filter_config entry (FilterConfig disabled: true) for the trustip filter"
                    };
                    out.push(
                        "trustip-filter-disabled",
                        at,
                        format!("{what}, so the client's own X-Forwarded-For and X-Real-IP reach the upstream unchecked{proxy}"),
                        fix,
                    );
                }
            }
        }
    }
}

/// `use_remote_address` without `skip_xff_append`: Envoy appends the connection's source (P, or D
/// without PROXY) to X-Forwarded-For before trustip runs. That address is one trustip did not
/// verify only where the policy lets such a connection through: an `ignore` rule (C = D while
/// Envoy appended P), or shadow mode (a would-be rejection goes on with C = D). In enforce mode
/// with only require/use/reject/deny rules it is the verified client C, and the appended hop is
/// an extra element: the upstream sees the client twice (append) or one hop more than the
/// client sent (preserve), and xff.trusted_hops counts one hop too many.
fn xff_append(platform: Platform, at: &Location, policy: &Policy, out: &mut Findings) {
    let mode = policy.headers.x_forwarded_for;
    let mode_name = match mode {
        XffMode::Overwrite => "overwrite",
        XffMode::Append => "append",
        XffMode::Preserve => "preserve",
        XffMode::Remove => "remove",
    };
    let passes_on = matches!(mode, XffMode::Append | XffMode::Preserve);
    let fix = match platform {
        Platform::EnvoyGateway => "Envoy Gateway cannot skip its append without turning use_remote_address off: use headers.x_forwarded_for overwrite",
        Platform::Istio => "skip_xff_append: true in the EnvoyFilter's HCM patch",
        Platform::Envoy => "skip_xff_append: true",
    };
    let ignore = policy
        .rules
        .iter()
        .position(|r| r.proxy_protocol == Word::Ignore);
    let shadow = policy.mode == Mode::Shadow;
    if passes_on && (ignore.is_some() || shadow) {
        let why = match (ignore, shadow) {
            (Some(i), true) => {
                format!("rules[{i}] is an ignore rule and the policy is in shadow mode")
            }
            (Some(i), false) => format!("rules[{i}] is an ignore rule"),
            _ => "the policy is in shadow mode".to_string(),
        };
        out.push(
            "xff-append-not-skipped",
            at,
            format!("Envoy appends the PROXY-derived address to X-Forwarded-For before trustip runs, and x_forwarded_for {mode_name} passes the header on; {why}, so for an ignored (or, in shadow mode, refused) PROXY source trustip decides C = D while the upstream gets that source, an address trustip did not verify, as the last hop"),
            fix,
        );
        return;
    }
    let hops = policy.xff_hops > 0;
    // On Envoy Gateway the append cannot be turned off: overwrite or remove without
    // trusted_hops changes nothing there worth a finding.
    if platform == Platform::EnvoyGateway && !hops && !passes_on {
        return;
    }
    let mut effects = Vec::new();
    match mode {
        XffMode::Append => effects.push("x_forwarded_for append adds C after Envoy's hop, which is C too, so the upstream sees the client twice (..., C, C)"),
        XffMode::Preserve => effects.push("x_forwarded_for preserve passes on Envoy's hop, so the upstream gets one element more than the client sent (C)"),
        XffMode::Overwrite | XffMode::Remove if !hops => effects.push("trustip walks one element more than the client sent (Envoy's own, counted against xff.max_entries)"),
        _ => {}
    }
    if hops {
        effects.push(
            "xff.trusted_hops counts Envoy's own hop, so R is one hop nearer than configured",
        );
    }
    let fix = match (platform, passes_on, hops) {
        (Platform::EnvoyGateway, true, true) => "Envoy Gateway cannot skip its append without turning use_remote_address off: use headers.x_forwarded_for overwrite, and count Envoy's own hop in xff.trusted_hops (N + 1) or list the proxies in xff.trusted and leave trusted_hops at 0",
        (Platform::EnvoyGateway, false, _) => "count Envoy's own hop in xff.trusted_hops (N + 1), or list the proxies in xff.trusted and leave trusted_hops at 0",
        _ => fix,
    };
    out.push(
        "xff-append-extra-hop",
        at,
        if passes_on {
            format!("Envoy appends the PROXY-derived address to X-Forwarded-For before trustip reads it; with no ignore rule and in enforce mode that is the verified client C: {}", effects.join("; "))
        } else {
            format!("Envoy appends the PROXY-derived address to X-Forwarded-For before trustip reads it: {}", effects.join("; "))
        },
        fix,
    );
}

/// Load-balancer health checks the listener answers, against PROXY and the require rules.
fn health_checks(listener: &Listener, out: &mut Findings) {
    let policies: Vec<&Policy> = listener.trustip().filter_map(Trustip::policy).collect();
    let strict = proxy_strict(listener);
    for chain in &listener.chains {
        for hcm in chain.hcms() {
            for (path, at) in &hcm.health_checks {
                let refused = policies.iter().any(|p| {
                    let mut require = p
                        .rules
                        .iter()
                        .filter(|r| r.proxy_protocol == Word::Require)
                        .peekable();
                    require.peek().is_some()
                        && !require.any(|r| r.health_check_paths.iter().any(|h| h == path))
                });
                if !refused {
                    continue;
                }
                let rule_fix = format!("list \"{path}\" in the load balancer's require rule: \"health_check_paths\": [\"{path}\"]");
                if strict == Some(true) {
                    let fix = match listener.platform {
                        Platform::EnvoyGateway => format!(
                            "ClientTrafficPolicy proxyProtocol.optional: true, and {rule_fix}"
                        ),
                        _ => format!("allow_requests_without_proxy_protocol: true, and {rule_fix}"),
                    };
                    out.push(
                        "strict-proxy-health-checks",
                        at,
                        format!("the load balancer's health check of {path} cannot pass: without a PROXY header Envoy closes it before any filter, and with PROXY LOCAL trustip refuses it missing_proxy; the load balancer marks every Envoy down (outage)"),
                        fix,
                    );
                } else {
                    out.push(
                        "health-check-path-not-admitted",
                        at,
                        format!("a health check of {path} from a require rule's peers brings no client (no header, or PROXY LOCAL) and is refused missing_proxy: if those peers are the load balancer, it marks every Envoy down"),
                        rule_fix,
                    );
                }
            }
        }
    }
}

/// An upstream PROXY socket on a cluster the listener reaches.
fn upstream_proxy(listener: &Listener, deployment: &Deployment, out: &mut Findings) {
    // A listener reaches the clusters of its own file; from a file with none (file-based LDS
    // beside its CDS file, a bootstrap whose clusters come from CDS) those of every Envoy file.
    let own = deployment
        .upstreams
        .iter()
        .any(|u| u.scope == listener.scope);
    let in_scope = |u: &Upstream| {
        u.scope == listener.scope
            || (!own && listener.platform == Platform::Envoy && u.platform == Platform::Envoy)
    };
    for chain in &listener.chains {
        let (names, unknown) = chain.clusters();
        let reached: Vec<_> = deployment
            .upstreams
            .iter()
            .filter(|u| u.proxy_protocol && in_scope(u))
            .filter(|u| unknown || names.contains(&u.name))
            .collect();
        let Some(upstream) = reached.first() else {
            continue;
        };
        let filters: Vec<&Trustip> = listener
            .native
            .iter()
            .map(|(_, t)| t)
            .chain(chain.trustip().map(|(_, t)| t))
            .collect();
        let place = if upstream.location.file == listener.location.file {
            upstream.location.path.clone()
        } else {
            format!("{}: {}", upstream.location.file, upstream.location.path)
        };
        let mut seen: Vec<&str> = Vec::new();
        for t in filters {
            let Some(policy) = t.policy() else { continue };
            // One finding per policy: the roles of a listener usually share it.
            if policy.upstream_proxy_protocol || seen.contains(&t.policy_text.trim()) {
                continue;
            }
            seen.push(t.policy_text.trim());
            let ignore = policy
                .rules
                .iter()
                .any(|r| r.proxy_protocol == Word::Ignore);
            if ignore {
                out.push(
                    "upstream-proxy-unverified",
                    &t.policy_location,
                    format!("{} ({place}) sends PROXY upstream from what the proxy_protocol listener filter parsed: a PROXY header under an ignore rule (trustip decided C = D) reaches the backend with its unverified source", upstream.name),
                    "add \"upstream_proxy_protocol\": true to the policy (such connections are then refused proxy_not_forwardable)",
                );
            } else {
                out.push(
                    "upstream-proxy-not-declared",
                    &t.policy_location,
                    format!("{} ({place}) sends PROXY upstream and the policy does not say upstream_proxy_protocol: an ignore rule added later would forward unverified PROXY sources, and shadow mode forwards them now", upstream.name),
                    "add \"upstream_proxy_protocol\": true to the policy",
                );
            }
        }
    }
}

/// A PROXY listener whose chains trustip does not decide.
fn proxy_without_trust(listener: &Listener, out: &mut Findings) {
    let Some((_, pp)) = &listener.proxy_protocol else {
        return;
    };
    if !listener.native.is_empty() {
        return;
    }
    for chain in &listener.chains {
        if chain.opaque || chain.trustip().next().is_some() {
            continue;
        }
        let at = if listener.platform == Platform::Envoy {
            &chain.location
        } else {
            &pp.location
        };
        out.push(
            "proxy-without-trust",
            at,
            if listener.platform == Platform::Envoy {
                "the listener takes PROXY headers and no trustip filter decides this filter chain: any peer that reaches it directly can send a PROXY header claiming any client address"
            } else {
                "the gateway takes PROXY headers and no trustip filter runs on it: any peer that reaches it directly can send a PROXY header claiming any client address"
            },
            match listener.platform {
                Platform::Envoy => "add trustip to the chain (the network role, or the HTTP role in its HCM, or the native trustip-listener listener filter) with require rules for the load balancer only",
                Platform::Istio => "deploy trustip's WasmPlugins (`trustip render --target istio`) on the gateway that parses PROXY",
                Platform::EnvoyGateway => "add trustip's EnvoyExtensionPolicy (`trustip render --target envoy-gateway`) to the Gateway that parses PROXY",
            },
        );
    }
}

/// The native listener filter reads P from proxy_protocol, so it must come after it.
fn native_order(listener: &Listener, out: &mut Findings) {
    for (index, t) in &listener.native {
        match &listener.proxy_protocol {
            Some((pp_index, _)) if pp_index < index => {}
            Some(_) => out.push(
                "native-listener-order",
                &t.location,
                "trustip-listener runs before envoy.filters.listener.proxy_protocol: it decides on the raw TCP connection (P = D) before the PROXY header is read, so require rules refuse the load balancer's clients (missing_proxy) and the header's source is never checked",
                "move trustip-listener after envoy.filters.listener.proxy_protocol in listener_filters",
            ),
            None => {
                let proxy_rules = t.policy().is_some_and(|p| {
                    p.rules.iter().any(|r| matches!(r.proxy_protocol, Word::Require | Word::Use))
                });
                if proxy_rules {
                    out.push(
                        "native-listener-order",
                        &t.location,
                        "the listener has no envoy.filters.listener.proxy_protocol: trustip-listener never sees a PROXY source, so require rules refuse every connection (missing_proxy) and use rules never apply",
                        "add envoy.filters.listener.proxy_protocol before trustip-listener in listener_filters",
                    );
                }
            }
        }
    }
}

/// Filters that decide one connection and should share a policy and (wasm) a VM: the
/// listener's native filter with the trustip filters of each chain. Chains are apart (a
/// filter_chain_match per port or server name may pick another policy on purpose).
fn consistency(listener: &Listener, out: &mut Findings) {
    for chain in &listener.chains {
        let group: Vec<&Trustip> = listener
            .native
            .iter()
            .map(|(_, t)| t)
            .chain(chain.trustip().map(|(_, t)| t))
            .collect();
        consistent(&group, out);
    }
}

fn consistent(all: &[&Trustip], out: &mut Findings) {
    let Some(first) = all.first() else { return };
    for t in all.iter().skip(1) {
        // trustip-listener hands its decision to the native filters after it when a
        // fingerprint of the policy text's bytes matches; for any other pair the same JSON is
        // the same policy.
        let native = first.build == Build::Native
            && first.kind == Kind::Listener
            && t.build == Build::Native;
        let same = if native {
            t.policy_text == first.policy_text
        } else {
            match (
                serde_json::from_str::<serde_json::Value>(&t.policy_text),
                serde_json::from_str::<serde_json::Value>(&first.policy_text),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => t.policy_text.trim() == first.policy_text.trim(),
            }
        };
        if !same {
            let (id, runtime) = if native {
                ("native-policy-mismatch", format!("this filter's policy text is not byte for byte the one at {}: the native HTTP filter ignores the listener filter's decision and decides again from the TCP peer alone (P = D), so every request under a require rule (the load balancer's clients) is refused missing_proxy", first.policy_location.path))
            } else {
                ("policy-mismatch", format!("this filter's policy differs from the one at {}: the roles of one listener decide by different rules", first.policy_location.path))
            };
            out.push(
                id,
                &t.policy_location,
                runtime,
                "give every trustip filter of a listener the same policy text (a YAML anchor, as `trustip render` writes)",
            );
        }
        if let (Some(a), Some(b)) = (&first.vm, &t.vm) {
            if a != b {
                out.push(
                    "wasm-separate-vms",
                    &t.location,
                    format!("vm_id/code {:?} differs from {:?}: two VMs per worker, each compiling its own copy of the policy", b, a),
                    format!("vm_config.vm_id: {} and the same code for both roles", names::VM_ID),
                );
            }
        }
    }
}

/// `require` rules need a PROXY header, which only the proxy_protocol listener filter parses.
/// (The native listener filter's case is `native-listener-order`; Istio's gateway may parse
/// PROXY through mesh-wide settings lint is not given.)
fn proxy_protocol_missing(listener: &Listener, out: &mut Findings) {
    if listener.proxy_protocol.is_some()
        || !listener.native.is_empty()
        || listener.platform == Platform::Istio
    {
        return;
    }
    for chain in &listener.chains {
        // A trustip network filter decides when the connection opens, before any HTTP.
        let network = chain.trustip().any(|(_, t)| t.kind == Kind::Network);
        for (_, t) in chain.trustip() {
            let Some(policy) = t.policy() else { continue };
            let Some(rule) = policy
                .rules
                .iter()
                .position(|r| r.proxy_protocol == Word::Require)
            else {
                continue;
            };
            let (missing, fix) = match listener.platform {
                Platform::EnvoyGateway => (
                    "no ClientTrafficPolicy turns PROXY on: no request ever carries a PROXY source",
                    "a ClientTrafficPolicy for the Gateway with proxyProtocol: {optional: true}",
                ),
                _ => (
                    "the listener has no envoy.filters.listener.proxy_protocol: no connection ever carries a PROXY source",
                    "add envoy.filters.listener.proxy_protocol to listener_filters (allow_requests_without_proxy_protocol: true unless only the load balancer connects)",
                ),
            };
            let effect = if network {
                format!("the trustip network filter closes every connection from the peers of rules[{rule}] (require), the load balancer's, as missing_proxy before any byte goes further, with a PROXY header or without (outage)")
            } else {
                format!("when a peer of rules[{rule}] (require), the load balancer, sends its PROXY header, Envoy's HTTP codec answers a plain 400 (the PROXY line is not an HTTP request line; trustip decides nothing), and its requests without one are refused {} missing_proxy (outage)", policy.reject_status)
            };
            out.push(
                "proxy-protocol-filter-missing",
                &t.location,
                format!("{missing}; {effect}"),
                fix,
            );
        }
    }
}
