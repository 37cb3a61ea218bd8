//! The verdict as the glue sees it, and the host-call budget: one read per input the policy
//! needs, none for what it does not use.

use super::*;
use crate::core::inputs::{Inputs, Read};
use crate::core::tlv::TlvKey;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

const LB: &str = "127.0.0.5:40000";
const ATTACKER: &str = "127.0.0.66:40001";

fn policy(json: &str) -> Policy {
    Policy::from_json(json.as_bytes()).unwrap()
}

fn header_reads(inputs: &Inputs) -> Vec<String> {
    inputs
        .reads
        .iter()
        .filter_map(|r| match r {
            Read::Header(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn tlv_reads(inputs: &Inputs) -> Vec<TlvKey> {
    inputs
        .reads
        .iter()
        .filter_map(|r| match r {
            Read::Tlv(key) => Some(*key),
            _ => None,
        })
        .collect()
}

const LB_CDN: &str = r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"require",
    "tlvs":{"aws_vpce_id":["vpce-1"]}}],
  "xff":{"trusted":["198.51.100.0/24"]},
  "headers":{"set":["x-envoy-external-address","x-real-ip"],"tlv":{"aws_vpce_id":"x-vpce"}}}"#;

fn aws(id: &str) -> Vec<u8> {
    let mut raw = vec![0x01];
    raw.extend_from_slice(id.as_bytes());
    raw
}

#[test]
fn accepted_request_verdict_carries_plan_counters_and_publish_values() {
    let policy = policy(LB_CDN);
    let mut host = Inputs::with_peers(LB, "198.51.100.7:5555")
        .header("x-forwarded-for", b"203.0.113.9, 198.51.100.8")
        .header("x-real-ip", b"6.6.6.6")
        .tlv(TlvKey::AwsVpceId, &aws("vpce-1"));
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(verdict.outcome, Outcome::Xff);
    assert_eq!(verdict.reason(), "xff");
    assert_eq!(verdict.action, Action::Continue);
    assert_eq!(verdict.client_text().as_deref(), Some(&b"203.0.113.9"[..]));
    assert_eq!(verdict.log, None);
    assert_eq!(verdict.counters, vec![(Counter::AcceptXff, 1)]);
    assert_eq!(
        verdict.counter_names(),
        vec![("trustip.http.accept_xff".to_string(), 1)]
    );
    // C is a trusted proxy: nothing stripped; the plan in order.
    assert_eq!(
        verdict.headers,
        vec![
            HeaderOp::Set(
                "x-forwarded-for",
                b"203.0.113.9, 198.51.100.8, 198.51.100.7".to_vec()
            ),
            HeaderOp::Set("x-envoy-external-address", b"203.0.113.9".to_vec()),
            HeaderOp::Set("x-real-ip", b"203.0.113.9".to_vec()),
            HeaderOp::Set("x-vpce", b"vpce-1".to_vec()),
        ]
    );
    let request = verdict.request.unwrap();
    assert_eq!(request.walk_end, WalkEnd::Untrusted);
}

#[test]
fn rejected_request_verdict_answers_locally_and_plans_nothing() {
    let policy = policy(r#"{"reject_status":429}"#);
    let mut host =
        Inputs::with_peers(ATTACKER, "203.0.113.9:5").header("x-forwarded-for", b"1.1.1.1");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(
        verdict.outcome,
        Outcome::Rejected(RejectReason::UntrustedProxy)
    );
    assert_eq!(verdict.action, Action::Respond { status: 429 });
    assert!(verdict.headers.is_empty());
    assert_eq!(verdict.client, None);
    assert_eq!(
        verdict.counters,
        vec![(Counter::Reject(RejectReason::UntrustedProxy), 1)]
    );
    assert_eq!(
        verdict.log_line(7).as_deref(),
        Some("trustip[http ctx 7]: reject untrusted_proxy: direct_peer=127.0.0.66:40001 source=203.0.113.9:5 rule=implicit")
    );
    assert!(header_reads(&host).is_empty(), "{:?}", host.reads);

    let verdict = evaluate(&policy, Role::Network, &mut host);
    assert_eq!(verdict.action, Action::Close);
    assert_eq!(
        verdict.counter_names(),
        vec![("trustip.network.reject_untrusted_proxy".to_string(), 1)]
    );
}

#[test]
fn shadow_verdict_counts_both_and_proceeds() {
    let policy = policy(r#"{"mode":"shadow","headers":{"x_forwarded_for":"append"}}"#);
    let mut host = Inputs::with_peers(ATTACKER, "203.0.113.9:5")
        .header("x-forwarded-for", b"1.1.1.1")
        .header("x-real-ip", b"1.1.1.1");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(
        verdict.outcome,
        Outcome::Shadow(RejectReason::UntrustedProxy)
    );
    assert_eq!(verdict.reason(), "shadow_untrusted_proxy");
    assert_eq!(verdict.action, Action::Continue);
    assert_eq!(verdict.client_text().as_deref(), Some(&b"127.0.0.66"[..]));
    assert_eq!(
        verdict.counters,
        vec![
            (Counter::Shadow(RejectReason::UntrustedProxy), 1),
            (Counter::HeadersStripped, 1),
            (Counter::AcceptDirect, 1),
        ]
    );
    assert!(verdict
        .log
        .as_deref()
        .unwrap()
        .starts_with("shadow reject (not enforced) untrusted_proxy:"));
    assert!(verdict.headers.contains(&HeaderOp::Set(
        "x-forwarded-for",
        b"1.1.1.1, 127.0.0.66".to_vec()
    )));
}

#[test]
fn missing_direct_peer_gives_the_hint() {
    let policy = policy("{}");
    let mut host = Inputs {
        source: Some(b"203.0.113.9:5".to_vec()),
        ..Inputs::default()
    };
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(
        verdict.outcome,
        Outcome::Rejected(RejectReason::NoDirectPeer)
    );
    assert!(verdict
        .hint
        .as_deref()
        .unwrap()
        .contains(crate::core::names::DIRECT_PEER_FORMAT));
    let mut host = Inputs::with_peers(LB, LB);
    assert_eq!(evaluate(&policy, Role::Http, &mut host).hint, None);
}

#[test]
fn proxy_ignored_is_counted_with_the_accept() {
    let policy = policy(r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"ignore"}]}"#);
    let mut host = Inputs::with_peers(LB, "203.0.113.9:5");
    let verdict = evaluate(&policy, Role::Network, &mut host);
    assert_eq!(verdict.outcome, Outcome::Direct);
    assert_eq!(
        verdict.counters,
        vec![(Counter::ProxyIgnored, 1), (Counter::AcceptDirect, 1)]
    );
}

#[test]
fn forwarded_append_sees_the_stripped_header_as_absent() {
    // `forwarded` is on the default strip list: an untrusted client's Forwarded is removed, and
    // the append mode starts afresh instead of appending to it.
    let policy = policy(
        r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"require"}],"headers":{"forwarded":"append"}}"#,
    );
    let mut host = Inputs::with_peers(LB, "203.0.113.9:5").header("forwarded", b"for=6.6.6.6");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    let mut headers = host.headers.clone();
    headers.apply(&verdict.headers);
    assert_eq!(headers.get("forwarded"), Some(b"for=203.0.113.9".to_vec()));
    assert_eq!(host.count(&Read::Header("forwarded".to_string())), 1);
}

// ---------------------------------------------------------------------------------------
// The host-call budget.

/// Every input is read at most once; this is the budget of each call.
fn assert_each_read_once(host: &Inputs) {
    for (i, read) in host.reads.iter().enumerate() {
        assert!(
            !host.reads[..i].contains(read),
            "{read:?} read twice: {:?}",
            host.reads
        );
    }
}

#[test]
fn budget_one_read_for_both_peers_when_the_value_carries_them() {
    let policy = policy(r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"use"}]}"#);
    let mut host = Inputs::with_peers(LB, "203.0.113.9:5");
    evaluate(&policy, Role::Network, &mut host);
    assert_eq!(host.reads, vec![Read::DirectPeer]);

    // A one-word value (older configs): P from source.address, one more read.
    let mut host = Inputs {
        direct_peer: Some(LB.as_bytes().to_vec()),
        source: Some(b"203.0.113.9:5".to_vec()),
        ..Inputs::default()
    };
    evaluate(&policy, Role::Network, &mut host);
    assert_eq!(host.reads, vec![Read::DirectPeer, Read::Source]);
}

#[test]
fn budget_network_role_reads_no_header_and_only_checked_tlvs() {
    let policy = policy(LB_CDN);
    let mut host = Inputs::with_peers(LB, "203.0.113.9:5")
        .header("x-forwarded-for", b"1.1.1.1")
        .tlv(TlvKey::AwsVpceId, &aws("vpce-1"))
        .tlv(TlvKey::Authority, b"example.com");
    let verdict = evaluate(&policy, Role::Network, &mut host);
    assert_eq!(verdict.outcome, Outcome::Proxy);
    assert!(header_reads(&host).is_empty());
    assert_eq!(tlv_reads(&host), vec![TlvKey::AwsVpceId]);
    assert_each_read_once(&host);
}

#[test]
fn budget_http_role_reads_each_needed_input_once() {
    let policy = policy(LB_CDN);
    // C untrusted (the PROXY source is not a CDN address): strip list read, XFF not read.
    let mut host = Inputs::with_peers(LB, "203.0.113.9:5")
        .header("x-forwarded-for", b"1.1.1.1")
        .header("x-real-ip", b"1.1.1.1")
        .tlv(TlvKey::AwsVpceId, &aws("vpce-1"));
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(verdict.outcome, Outcome::Proxy);
    assert_each_read_once(&host);
    assert_eq!(header_reads(&host), policy.headers.strip);
    // The allowlist check and the header mapping share one TLV read.
    assert_eq!(tlv_reads(&host), vec![TlvKey::AwsVpceId]);

    // C trusted: XFF read once, nothing stripped, so no strip reads.
    let mut host = Inputs::with_peers(LB, "198.51.100.7:5")
        .header("x-forwarded-for", b"1.1.1.1")
        .tlv(TlvKey::AwsVpceId, &aws("vpce-1"));
    evaluate(&policy, Role::Http, &mut host);
    assert_each_read_once(&host);
    assert_eq!(header_reads(&host), vec!["x-forwarded-for".to_string()]);
}

#[test]
fn budget_no_tlv_read_when_the_proxy_information_is_not_used() {
    let policy = policy(
        r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"ignore"}],"headers":{"tlv":{"authority":"x-authority"}}}"#,
    );
    let mut host = Inputs::with_peers(LB, "203.0.113.9:5").tlv(TlvKey::Authority, b"a.example");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert!(tlv_reads(&host).is_empty());
    assert!(verdict.headers.contains(&HeaderOp::Remove("x-authority")));
}

#[test]
fn budget_strip_and_forwarded_share_one_read_and_xff_append_reads_once() {
    let policy = policy(
        r#"{"headers":{"x_forwarded_for":"append","forwarded":"append","strip":["x-forwarded-for","forwarded"]}}"#,
    );
    let mut host = Inputs::with_peers(LB, LB)
        .header("x-forwarded-for", b"1.1.1.1")
        .header("forwarded", b"for=1.1.1.1");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    // C (the untrusted peer) had both stripped: appending starts afresh, never from the
    // client's own values.
    let mut headers = host.headers.clone();
    headers.apply(&verdict.headers);
    assert_eq!(headers.get("x-forwarded-for"), Some(b"127.0.0.5".to_vec()));
    assert_eq!(headers.get("forwarded"), Some(b"for=127.0.0.5".to_vec()));
    assert_each_read_once(&host);
    assert_eq!(
        header_reads(&host),
        vec!["x-forwarded-for".to_string(), "forwarded".to_string()]
    );
}

const HEALTH: &str = r#"{"upstream_proxy_protocol":true,"rules":[
    {"from":["127.0.0.5"],"proxy_protocol":"require","health_check_paths":["/healthz/ready","/healthz/ready","/ping"]},
    {"from":["127.0.0.6"],"proxy_protocol":"ignore"}]}"#;

#[test]
fn a_health_check_is_admitted_with_c_d_on_its_paths_only() {
    let policy = policy(HEALTH);
    // Repeated paths count once.
    assert_eq!(
        policy.rules[0].health_check_paths,
        ["/healthz/ready", "/ping"]
    );
    // No PROXY information from the load balancer (a LOCAL header looks the same), on a
    // health-check path (the query is not compared).
    for path in [&b"/healthz/ready"[..], b"/healthz/ready?full=1", b"/ping"] {
        let mut host = Inputs::with_peers(LB, LB).header(":path", path);
        let verdict = evaluate(&policy, Role::Http, &mut host);
        assert_eq!(verdict.outcome, Outcome::HealthCheck, "{path:?}");
        assert_eq!(verdict.reason(), "health_check");
        assert_eq!(verdict.action, Action::Continue);
        assert_eq!(verdict.client_text().as_deref(), Some(&b"127.0.0.5"[..]));
        assert_eq!(verdict.counters, vec![(Counter::AcceptHealthCheck, 1)]);
    }
    // Any other request on such a connection is what it was without the field.
    for path in [&b"/"[..], b"/healthz/ready/", b"/healthz", b"/PING", b""] {
        let mut host = Inputs::with_peers(LB, LB).header(":path", path);
        let verdict = evaluate(&policy, Role::Http, &mut host);
        assert_eq!(
            verdict.outcome,
            Outcome::Rejected(RejectReason::MissingProxy),
            "{path:?}"
        );
        assert_eq!(verdict.action, Action::Respond { status: 403 });
        assert!(verdict
            .log
            .as_deref()
            .unwrap_or_default()
            .contains("is not a health-check path"));
    }
    // A request without a path at all (the host gave none) is refused too.
    let verdict = evaluate(&policy, Role::Http, &mut Inputs::with_peers(LB, LB));
    assert_eq!(
        verdict.outcome,
        Outcome::Rejected(RejectReason::MissingProxy)
    );
    // The per-connection roles admit the connection; the HTTP role checks each request.
    for role in [Role::Network, Role::Listener] {
        let mut host = Inputs::with_peers(LB, LB);
        let verdict = evaluate(&policy, role, &mut host);
        assert_eq!(verdict.outcome, Outcome::HealthCheck);
        assert_eq!(verdict.action, Action::Continue);
        assert!(header_reads(&host).is_empty());
    }
    // A PROXY header from the load balancer is used as always.
    let mut host = Inputs::with_peers(LB, "198.51.100.7:5555").header(":path", b"/");
    assert_eq!(
        evaluate(&policy, Role::Http, &mut host).outcome,
        Outcome::Proxy
    );
    assert!(!header_reads(&host).contains(&":path".to_string()));
    // Nobody outside the rule gets anything from it.
    let mut host = Inputs::with_peers(ATTACKER, ATTACKER).header(":path", b"/healthz/ready");
    assert_eq!(
        evaluate(&policy, Role::Http, &mut host).outcome,
        Outcome::Direct
    );
}

#[test]
fn a_health_check_brings_no_client_information_even_from_a_trusted_proxy() {
    // The load balancer is also trusted for X-Forwarded-For: its health check's own XFF and
    // client headers are still not believed (R = C = D), and the counter agrees.
    let policy = policy(
        r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["/healthz/ready"]}],
            "xff":{"trusted":["10.0.0.0/8"]},"headers":{"set":["x-envoy-external-address","x-real-ip"]}}"#,
    );
    let mut host = Inputs::with_peers("10.0.0.5:4000", "10.0.0.5:4000")
        .header(":path", b"/healthz/ready")
        .header("x-forwarded-for", b"203.0.113.9")
        .header("x-real-ip", b"203.0.113.9");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(verdict.outcome, Outcome::HealthCheck);
    assert_eq!(verdict.client_text().as_deref(), Some(&b"10.0.0.5"[..]));
    assert!(verdict.counters.contains(&(Counter::AcceptHealthCheck, 1)));
    let mut after = host.headers.clone();
    after.apply(&verdict.headers);
    assert_eq!(
        after.get("x-forwarded-for").as_deref(),
        Some(&b"10.0.0.5"[..])
    );
    assert_eq!(after.get("x-real-ip").as_deref(), Some(&b"10.0.0.5"[..]));
    assert_eq!(
        after.get("x-envoy-external-address").as_deref(),
        Some(&b"10.0.0.5"[..])
    );
}

#[test]
fn no_health_check_without_an_observed_direct_peer() {
    // With `if_missing: trust_source` and D absent, D is P, which a client may choose: such a
    // connection is never taken for the load balancer's health check.
    let policy = policy(
        r#"{"direct_peer":{"if_missing":"trust_source"},
            "rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["/healthz/ready"]}]}"#,
    );
    let mut host = Inputs::default().header(":path", b"/healthz/ready");
    host.source = Some(b"10.0.0.5:4000".to_vec());
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(
        verdict.outcome,
        Outcome::Rejected(RejectReason::MissingProxy)
    );
}

#[test]
fn shadow_mode_lets_a_non_health_request_through_as_direct() {
    let policy = policy(
        r#"{"mode":"shadow","rules":[{"from":["127.0.0.5"],"proxy_protocol":"require","health_check_paths":["/healthz"]}]}"#,
    );
    let mut host = Inputs::with_peers(LB, LB).header(":path", b"/orders");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(verdict.outcome, Outcome::Shadow(RejectReason::MissingProxy));
    assert_eq!(verdict.client_text().as_deref(), Some(&b"127.0.0.5"[..]));
    assert_eq!(
        verdict.counters,
        vec![
            (Counter::Shadow(RejectReason::MissingProxy), 1),
            (Counter::AcceptDirect, 1)
        ]
    );
}

#[test]
fn an_ignored_proxy_header_is_refused_when_envoy_sends_proxy_upstream() {
    let policy = policy(HEALTH);
    for role in [Role::Http, Role::Network, Role::Listener] {
        let mut host = Inputs::with_peers("127.0.0.6:40000", "203.0.113.9:1234");
        let verdict = evaluate(&policy, role, &mut host);
        assert_eq!(
            verdict.outcome,
            Outcome::Rejected(RejectReason::ProxyNotForwardable)
        );
        assert_eq!(
            verdict.counters,
            vec![(Counter::Reject(RejectReason::ProxyNotForwardable), 1)]
        );
        // Without a PROXY header the ignore rule's peer is its own client.
        let mut host = Inputs::with_peers("127.0.0.6:40000", "127.0.0.6:40000");
        assert_eq!(evaluate(&policy, role, &mut host).outcome, Outcome::Direct);
    }
    // Without upstream_proxy_protocol the header is dropped as before.
    let policy = self::policy(r#"{"rules":[{"from":["127.0.0.6"],"proxy_protocol":"ignore"}]}"#);
    let mut host = Inputs::with_peers("127.0.0.6:40000", "203.0.113.9:1234");
    let verdict = evaluate(&policy, Role::Network, &mut host);
    assert_eq!(verdict.outcome, Outcome::Direct);
    assert_eq!(
        verdict.counters,
        vec![(Counter::ProxyIgnored, 1), (Counter::AcceptDirect, 1)]
    );
}
