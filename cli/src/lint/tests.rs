//! The fixtures: every rule has tests/data/lint/<id>/ with `bad*` files that trigger it (an
//! error rule as their only error, a warning rule as their only finding) and `fixed*` files
//! that lint clean; the shipped samples lint clean.

use std::path::{Path, PathBuf};

use super::rules::{Severity, RULES};
use super::{exit_code, lint, to_json, to_text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures(id: &str) -> Vec<PathBuf> {
    let dir = repo().join("tests/data/lint").join(id);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

fn ids(findings: &[super::Finding], severity: Option<Severity>) -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = findings
        .iter()
        .filter(|f| severity.is_none_or(|s| f.severity == s))
        .map(|f| f.id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Lints one fixture file.
fn check(path: &Path) -> Vec<super::Finding> {
    lint(&[path.display().to_string()])
}

/// `bad*` triggers `id` (alone among errors, or alone for a warning rule) with its
/// severity's exit status; `fixed*` is clean.
fn assert_rule(id: &str) {
    let severity = super::rules::severity(id);
    let files = fixtures(id);
    assert!(
        files
            .iter()
            .any(|f| f.file_name().unwrap().to_string_lossy().starts_with("bad")),
        "{id}: no bad fixture"
    );
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let findings = check(&file);
        if name.starts_with("bad") {
            match severity {
                Severity::Error => assert_eq!(
                    ids(&findings, Some(Severity::Error)),
                    vec![id],
                    "{}",
                    file.display()
                ),
                Severity::Warning => {
                    assert_eq!(ids(&findings, None), vec![id], "{}", file.display())
                }
            }
            let expected = if severity == Severity::Error { 2 } else { 1 };
            assert_eq!(exit_code(&findings), expected, "{}", file.display());
            for finding in findings.iter().filter(|f| f.id == id) {
                assert_eq!(finding.location.file, file.display().to_string());
                assert!(!finding.runtime.is_empty() && !finding.fix.is_empty());
                assert!(!finding.fix.contains('\n') && !finding.runtime.contains('\n'));
            }
        } else if name.starts_with("fixed") {
            assert!(findings.is_empty(), "{}: {findings:#?}", file.display());
            assert_eq!(exit_code(&findings), 0);
        } else {
            panic!("{}: fixtures are bad* or fixed*", file.display());
        }
    }
}

macro_rules! rule_tests {
    ($($name:ident => $id:literal,)*) => {
        $(#[test] fn $name() { assert_rule($id); })*

        #[test]
        fn every_rule_has_a_test_and_fixtures() {
            let tested = [$($id),*];
            for (id, _, _) in RULES {
                assert!(tested.contains(id), "{id} has no test");
            }
            let dirs: Vec<String> = std::fs::read_dir(repo().join("tests/data/lint"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            for dir in &dirs {
                assert!(RULES.iter().any(|(id, _, _)| id == dir), "tests/data/lint/{dir} is no rule");
            }
            assert_eq!(dirs.len(), RULES.len());
        }
    };
}

rule_tests! {
    unreadable_input => "unreadable-input",
    no_config_found => "no-config-found",
    policy_invalid => "policy-invalid",
    wasm_root_id_mismatch => "wasm-root-id-mismatch",
    wasm_root_id_unknown => "wasm-root-id-unknown",
    native_filter_name_mismatch => "native-filter-name-mismatch",
    wasm_fail_open => "wasm-fail-open",
    missing_set_filter_state => "missing-set-filter-state",
    set_filter_state_wrong_source => "set-filter-state-wrong-source",
    direct_peer_trust_source => "direct-peer-trust-source",
    tlv_not_readable => "tlv-not-readable",
    tlv_raw_binary => "tlv-raw-binary",
    use_remote_address_off => "use-remote-address-off",
    xff_append_not_skipped => "xff-append-not-skipped",
    xff_append_extra_hop => "xff-append-extra-hop",
    underscore_headers_allowed => "underscore-headers-allowed",
    trustip_filter_disabled => "trustip-filter-disabled",
    strict_proxy_health_checks => "strict-proxy-health-checks",
    health_check_path_not_admitted => "health-check-path-not-admitted",
    upstream_proxy_unverified => "upstream-proxy-unverified",
    upstream_proxy_not_declared => "upstream-proxy-not-declared",
    proxy_without_trust => "proxy-without-trust",
    native_listener_order => "native-listener-order",
    proxy_protocol_filter_missing => "proxy-protocol-filter-missing",
    shadow_mode => "shadow-mode",
    policy_mismatch => "policy-mismatch",
    native_policy_mismatch => "native-policy-mismatch",
    wasm_separate_vms => "wasm-separate-vms",
}

#[test]
fn shipped_samples_lint_clean() {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.push(
        repo()
            .join("deploy/compose/envoy.yaml")
            .display()
            .to_string(),
    );
    files.push(
        repo()
            .join("deploy/compose/policy.json")
            .display()
            .to_string(),
    );
    assert!(files.len() >= 9);
    for file in &files {
        let findings = lint(std::slice::from_ref(file));
        assert!(findings.is_empty(), "{file}: {findings:#?}");
    }
}
#[test]
fn json_and_text_output() {
    let file = repo()
        .join("tests/data/lint/wasm-fail-open/bad.yaml")
        .display()
        .to_string();
    let findings = lint(std::slice::from_ref(&file));
    let json = to_json(std::slice::from_ref(&file), &findings);
    assert_eq!(json["files"][0], file.as_str());
    assert_eq!(json["errors"], findings.len());
    assert_eq!(json["warnings"], 0);
    let first = &json["findings"][0];
    assert_eq!(first["id"], "wasm-fail-open");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["resource"], "ingress");
    assert_eq!(
        first["path"],
        "static_resources.listeners[0].filter_chains[0].filters[1].typed_config.config.failure_policy"
    );
    let text = to_text(std::slice::from_ref(&file), &findings);
    assert!(
        text.starts_with(&format!(
            "error[wasm-fail-open] {file}: ingress: static_resources.listeners[0]"
        )),
        "{text}"
    );
    assert!(
        text.contains("\n  fix: failure_policy: FAIL_CLOSED\n"),
        "{text}"
    );
    assert!(text.ends_with("2 errors, 0 warnings in 1 file\n"), "{text}");
    let clean = to_text(std::slice::from_ref(&file), &[]);
    assert_eq!(clean, "1 file: no findings\n");
}

#[test]
fn files_are_one_deployment_and_missing_files_are_findings() {
    // Istio resources across files are one gateway: the wiring in one file, the plugins in
    // another.
    let dir = std::env::temp_dir().join(format!("trustip-lint-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text =
        std::fs::read_to_string(repo().join("tests/data/lint/wasm-fail-open/fixed-istio.yaml"))
            .unwrap();
    let docs: Vec<&str> = text.split("\n---\n").collect();
    assert_eq!(docs.len(), 4);
    let (a, b) = (dir.join("plugins.yaml"), dir.join("wiring.yaml"));
    std::fs::write(&a, docs[..2].join("\n---\n")).unwrap();
    std::fs::write(&b, docs[2..].join("\n---\n")).unwrap();
    let both = lint(&[a.display().to_string(), b.display().to_string()]);
    assert!(both.is_empty(), "{both:#?}");
    let alone = lint(&[a.display().to_string()]);
    assert!(
        ids(&alone, None).contains(&"missing-set-filter-state"),
        "{alone:#?}"
    );
    let missing = lint(&["/nonexistent/trustip.yaml".to_string()]);
    assert_eq!(ids(&missing, None), vec!["unreadable-input"]);
    assert_eq!(exit_code(&missing), 2);
}

fn lint_text(name: &str, text: &str) -> Vec<super::Finding> {
    let dir = std::env::temp_dir().join(format!("trustip-lint-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    lint(&[path.display().to_string()])
}

#[test]
fn an_ecds_filter_is_not_called_undecided() {
    let listener = |filter: &str| {
        format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: l\n  listener_filters:\n  - name: envoy.filters.listener.proxy_protocol\n  filter_chains:\n  - filters:\n    - name: envoy.filters.network.http_connection_manager\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n        http_filters:\n        {filter}\n        - name: envoy.filters.http.router\n"
        )
    };
    let plain = lint_text("plain", &listener("- name: envoy.filters.http.cors"));
    assert_eq!(ids(&plain, None), vec!["proxy-without-trust"]);
    let ecds = lint_text(
        "ecds",
        &listener("- name: trustip\n          config_discovery: {config_source: {ads: {}}}"),
    );
    assert!(ecds.is_empty(), "{ecds:#?}");
}

#[test]
fn arbitrary_shapes_do_not_panic() {
    for text in [
        "static_resources: 3",
        "static_resources: {listeners: [1, null, {filter_chains: 7}], clusters: {a: 1}}",
        "resources: [{\"@type\": x.v3.Listener, listener_filters: [{typed_config: 1}]}]",
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nspec: {configPatches: [1, {applyTo: NETWORK_FILTER, patch: 2}]}",
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyExtensionPolicy\nspec: {wasm: [{rootID: trustip-http, config: [1]}], dynamicModule: 3}",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {annotations: {proxy.istio.io/config: '{{{'}}",
        "- 1\n- [2]\n",
        "? [a]\n: b\n",
    ] {
        let _ = lint_text("shapes", text);
    }
}

/// Envoy's X-Forwarded-For append leaks an unverified address only where the policy lets an
/// unverified PROXY source through (an ignore rule, shadow mode); the error says which. Else
/// the append is the verified client, one hop more: the warning.
#[test]
fn xff_append_is_an_error_only_with_ignore_or_shadow() {
    let runtime = |id: &str, file: &str| -> String {
        let path = repo().join("tests/data/lint").join(id).join(file);
        let findings = check(&path);
        let finding = findings
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("{}: {findings:#?}", path.display()));
        finding.runtime.clone()
    };
    let ignore = runtime("xff-append-not-skipped", "bad.yaml");
    assert!(ignore.contains("rules[1] is an ignore rule,"), "{ignore}");
    assert!(
        ignore.contains("an ignored (or, in shadow mode, refused) PROXY source"),
        "{ignore}"
    );
    let shadow = runtime("xff-append-not-skipped", "bad-shadow.yaml");
    assert!(
        shadow.contains(
            "x_forwarded_for preserve passes the header on; the policy is in shadow mode,"
        ),
        "{shadow}"
    );
    let gateway = runtime("xff-append-not-skipped", "bad-envoy-gateway.yaml");
    assert!(gateway.contains("rules[1] is an ignore rule,"), "{gateway}");
    let twice = runtime("xff-append-extra-hop", "bad-append.yaml");
    assert!(twice.contains("sees the client twice"), "{twice}");
    let hops = runtime("xff-append-extra-hop", "bad.yaml");
    assert!(
        hops.contains("xff.trusted_hops counts Envoy's own hop"),
        "{hops}"
    );
}

/// Without the proxy_protocol listener filter the load balancer's PROXY header is bytes to the
/// HTTP codec (a plain 400, no trustip decision); only its plain requests reach trustip.
#[test]
fn proxy_protocol_filter_missing_says_what_envoy_answers() {
    let dir = repo().join("tests/data/lint/proxy-protocol-filter-missing");
    let http = check(&dir.join("bad-envoy-gateway.yaml"));
    let runtime = &http[0].runtime;
    assert!(
        runtime.contains("Envoy's HTTP codec answers a plain 400")
            && runtime.contains("requests without one are refused 403 missing_proxy"),
        "{runtime}"
    );
    let network = check(&dir.join("bad.yaml"));
    assert_eq!(network.len(), 2, "{network:#?}");
    for finding in &network {
        assert!(
            finding
                .runtime
                .contains("the trustip network filter closes every connection"),
            "{finding:#?}"
        );
    }
}

/// Names from the inputs reach the terminal escaped: an escape sequence or a line break in a
/// listener name (or a file name) neither rewrites the terminal nor forges a finding line.
#[test]
fn text_output_escapes_control_characters() {
    let text =
        std::fs::read_to_string(repo().join("tests/data/lint/underscore-headers-allowed/bad.yaml"))
            .unwrap()
            .replace(
                "- name: ingress\n",
                "- name: \"in\\e[2J\\u202egress\\nerror[forged] x\"\n",
            );
    let findings = lint_text("escapes", &text);
    assert_eq!(
        findings[0].location.resource,
        "in\u{1b}[2J\u{202e}gress\nerror[forged] x"
    );
    let out = to_text(&["config.yaml".to_string()], &findings);
    assert!(
        !out.chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{out:?}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("error[")).count(),
        1,
        "{out}"
    );
    assert!(
        out.contains(": in\\u{1b}[2J\\u{202e}gress\\nerror[forged] x: "),
        "{out}"
    );
}

/// Every typed_config of a value wrapped in a TypedStruct (`type_url` and `value`).
fn wrap_typed_structs(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, item) in object.iter_mut() {
                wrap_typed_structs(item);
                if key == "typed_config" {
                    if let Some(url) = item.as_object_mut().and_then(|o| o.remove("@type")) {
                        *item = serde_json::json!({
                            "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                            "type_url": url,
                            "value": item.take(),
                        });
                    }
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(wrap_typed_structs),
        _ => {}
    }
}

/// A filter configured through a TypedStruct (how Istio patches often write wasm filters) is
/// the same filter: every Envoy fixture gives the same findings with its typed_configs wrapped.
#[test]
fn typed_structs_are_unwrapped() {
    let mut compared = 0;
    for (id, _, _) in RULES {
        for file in fixtures(id) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if !text.contains("static_resources") {
                continue;
            }
            let Ok(mut docs) = super::parse::documents(&text) else {
                continue;
            };
            let mut doc = docs.remove(0).value;
            wrap_typed_structs(&mut doc);
            assert!(doc.to_string().contains("TypedStruct"));
            let wrapped = lint_text("typed-struct", &doc.to_string());
            assert_eq!(
                ids(&wrapped, None),
                ids(&check(&file), None),
                "{}",
                file.display()
            );
            compared += 1;
        }
    }
    assert!(compared > 30, "{compared}");
}

/// File-based xDS keeps listeners (LDS) and clusters (CDS) in two files: a listener whose file
/// has no cluster reaches those of the other Envoy files given.
#[test]
fn lds_reaches_the_clusters_of_its_cds_file() {
    let bad = repo().join("tests/data/lint/upstream-proxy-unverified/bad.yaml");
    let text = std::fs::read_to_string(&bad).unwrap();
    let doc = super::parse::documents(&text).unwrap().remove(0).value;
    let typed = |items: &serde_json::Value, url: &str| -> serde_json::Value {
        let mut items = items.as_array().unwrap().clone();
        for item in &mut items {
            item["@type"] = format!("type.googleapis.com/{url}").into();
        }
        serde_json::json!({ "resources": items })
    };
    let dir = std::env::temp_dir().join(format!("trustip-lint-xds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (lds, cds) = (dir.join("lds.yaml"), dir.join("cds.yaml"));
    let resources = &doc["static_resources"];
    let listeners = typed(&resources["listeners"], "envoy.config.listener.v3.Listener");
    let clusters = typed(&resources["clusters"], "envoy.config.cluster.v3.Cluster");
    std::fs::write(&lds, listeners.to_string()).unwrap();
    std::fs::write(&cds, clusters.to_string()).unwrap();
    let files = [lds.display().to_string(), cds.display().to_string()];
    let findings = lint(&files);
    assert_eq!(
        ids(&findings, None),
        vec!["upstream-proxy-unverified"],
        "{findings:#?}"
    );
    assert!(
        findings[0].runtime.contains(&format!(
            "app ({}: resources[0].transport_socket)",
            files[1]
        )),
        "{findings:#?}"
    );
    assert_eq!(ids(&check(&bad), None), vec!["upstream-proxy-unverified"]);
}

/// Envoy's per-route filter state: the most specific `typed_per_filter_config` entry for the
/// filter's name decides (route, virtual host, route configuration), any entry but a
/// FilterConfig `disabled: true` enables it, and without one the filter's own `disabled` holds.
#[test]
fn a_route_that_enables_a_disabled_filter_is_not_flagged() {
    let bad =
        std::fs::read_to_string(repo().join("tests/data/lint/trustip-filter-disabled/bad.yaml"))
            .unwrap();
    let route = "              - match:\n                  prefix: /\n                route:\n                  cluster: app\n";
    assert!(bad.contains(route));
    let per_route = |disabled: bool| {
        let entry = if disabled {
            "disabled: true"
        } else {
            "config: {}"
        };
        format!("{route}                typed_per_filter_config:\n                  envoy.filters.http.wasm:\n                    '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    {entry}\n")
    };
    // Every route enables it: clean.
    let enabled = lint_text("disabled-enabled", &bad.replace(route, &per_route(false)));
    assert!(enabled.is_empty(), "{enabled:#?}");
    // A second route left at the default: the filter's own disabled: true is reported.
    let two = format!("{}{route}", per_route(false));
    let partly = lint_text("disabled-partly", &bad.replace(route, &two));
    let paths: Vec<&str> = partly.iter().map(|f| f.location.path.as_str()).collect();
    assert_eq!(ids(&partly, None), vec!["trustip-filter-disabled"]);
    assert!(
        paths
            .iter()
            .all(|p| p.ends_with("http_filters[0].disabled")),
        "{paths:?}"
    );
    // Enabled on the filter, disabled on one route of two: that route's entry is reported once.
    let fixed =
        std::fs::read_to_string(repo().join("tests/data/lint/trustip-filter-disabled/fixed.yaml"))
            .unwrap();
    let mixed = format!("{}{route}", per_route(true));
    let routed = lint_text("disabled-route", &fixed.replace(route, &mixed));
    assert_eq!(routed.len(), 1, "{routed:#?}");
    assert!(
        routed[0]
            .location
            .path
            .ends_with("routes[0].typed_per_filter_config.envoy.filters.http.wasm"),
        "{routed:#?}"
    );
    // A route's own entry overrides its virtual host's disable.
    let host = "              name: app\n";
    let host_disabled = "              name: app\n              typed_per_filter_config:\n                envoy.filters.http.wasm:\n                  '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig\n                  disabled: true\n";
    let overridden = lint_text(
        "disabled-host",
        &fixed
            .replace(host, host_disabled)
            .replace(route, &per_route(false)),
    );
    assert!(overridden.is_empty(), "{overridden:#?}");
    let host_only = lint_text("disabled-host-only", &fixed.replace(host, host_disabled));
    assert_eq!(ids(&host_only, None), vec!["trustip-filter-disabled"]);
    assert!(host_only[0]
        .location
        .path
        .ends_with("virtual_hosts[0].typed_per_filter_config.envoy.filters.http.wasm"));
}
