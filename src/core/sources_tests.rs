//! Where the client comes from (issue 10): a count of trusted hops, RFC 7239 `Forwarded` as
//! input, a CDN's client header, and unspecified addresses, through the one verdict.

use crate::core::config::Policy;
use crate::core::decision::{Counter, RejectReason, Role};
use crate::core::inputs::Inputs;
use crate::core::verdict::{evaluate, Action, Outcome, Verdict};
use crate::core::xff::WalkEnd;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// The trusted proxy in front of Envoy (D, no PROXY header).
const PROXY: &str = "10.0.0.5:40000";
/// A client that reaches Envoy directly.
const STRANGER: &str = "203.0.113.66:40000";

fn policy(json: &str) -> Policy {
    match Policy::from_json(json.as_bytes()) {
        Ok(policy) => policy,
        Err(err) => panic!("{json}: {err}"),
    }
}

fn refusal(json: &str) -> String {
    match Policy::from_json(json.as_bytes()) {
        Ok(_) => panic!("{json}: accepted"),
        Err(err) => err.to_string(),
    }
}

/// The verdict for a request from `peer` (no PROXY header) with these headers.
fn request(policy: &Policy, peer: &str, headers: &[(&str, &str)]) -> (Verdict<'static>, Inputs) {
    let policy: &'static Policy = Box::leak(Box::new(policy.clone()));
    let mut host = Inputs::with_peers(peer, peer);
    for (name, value) in headers {
        host.headers.append(name, value.as_bytes());
    }
    let verdict = evaluate(policy, Role::Http, &mut host);
    (verdict, host)
}

fn client(verdict: &Verdict) -> String {
    verdict
        .client
        .map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

/// The request headers after the verdict's plan.
fn after(verdict: &Verdict, host: &Inputs, name: &str) -> Option<String> {
    let mut headers = host.headers.clone();
    headers.apply(&verdict.headers);
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn new_fields_are_refused_with_their_path() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"xff":{"trusted_hops":1}}"#,
            "xff.trusted_hops: needs xff.trusted",
        ),
        (
            r#"{"xff":{"trusted":["10.0.0.0/8"],"trusted_hops":9,"max_entries":8}}"#,
            r#"xff.trusted_hops: "9": more than xff.max_entries"#,
        ),
        (
            r#"{"xff":{"trusted":["10.0.0.0/8"],"trusted_hops":-1}}"#,
            "xff.trusted_hops: invalid type",
        ),
        (
            r#"{"xff":{"source":"x-real-ip"}}"#,
            "xff.source: unknown variant `x-real-ip`, expected one of `x-forwarded-for`, `forwarded`",
        ),
        (
            r#"{"client_header":{"trusted":["173.245.48.0/20"]}}"#,
            "client_header: missing field `name`",
        ),
        (
            r#"{"client_header":{"name":"cf-connecting-ip"}}"#,
            "client_header: missing field `trusted`",
        ),
        (
            r#"{"client_header":{"name":"cf-connecting-ip","trusted":[]}}"#,
            "client_header.trusted: must list",
        ),
        (
            r#"{"client_header":{"name":"cf connecting ip","trusted":["10.0.0.0/8"]}}"#,
            r#"client_header.name: "cf connecting ip": not a valid HTTP header name"#,
        ),
        (
            r#"{"client_header":{"name":"X-Forwarded-For","trusted":["10.0.0.0/8"]}}"#,
            "client_header.name: \"X-Forwarded-For\": this header is written by headers.x_forwarded_for",
        ),
        (
            r#"{"client_header":{"name":"host","trusted":["10.0.0.0/8"]}}"#,
            "client_header.name: \"host\": a framing or hop-by-hop header",
        ),
        (
            r#"{"client_header":{"name":"cf-connecting-ip","trusted":["10.0.0.1/8"]}}"#,
            "client_header.trusted[0]: \"10.0.0.1/8\"",
        ),
        (
            r#"{"client_header":{"name":"cf-connecting-ip","trusted":["10.0.0.0/8"],"fail_closed":"yes"}}"#,
            "client_header.fail_closed: invalid type: a string, expected a boolean",
        ),
        (
            r#"{"client_header":{"name":"cf-connecting-ip","trusted":["10.0.0.0/8"],"fallback":true}}"#,
            "client_header.fallback: unknown field `fallback`",
        ),
        (
            r#"{"headers":{"set":["x-real-ip","true-client-ip"]},"client_header":{"name":"True-Client-IP","trusted":["10.0.0.0/8"]}}"#,
            "client_header.name: \"True-Client-IP\": also written by headers.set",
        ),
        (
            r#"{"headers":{"tlv":{"authority":"x-cdn-ip"}},"client_header":{"name":"x-cdn-ip","trusted":["10.0.0.0/8"]}}"#,
            "client_header.name: \"x-cdn-ip\": also written by headers.tlv",
        ),
    ];
    for (json, want) in cases {
        let err = refusal(json);
        assert!(err.contains(want), "{json}\n  got:  {err}\n  want: {want}");
        assert!(!err.contains('\n'), "{err}");
    }
}

/// Envoy's HCM with `use_remote_address: true` and `xff_num_trusted_hops: N` (Istio's
/// `numTrustedProxies`): the peer is hop 1, the N-th element from the right is the client, and
/// with fewer elements (or one that is not an address) the client is the peer.
#[test]
fn trusted_hops_take_the_n_th_element_from_the_right() {
    let xff = "x-forwarded-for";
    let cases: &[(usize, &str, &str, WalkEnd)] = &[
        (1, "203.0.113.9", "203.0.113.9", WalkEnd::Counted),
        (1, "6.6.6.6, 203.0.113.9", "203.0.113.9", WalkEnd::Counted),
        (
            2,
            "6.6.6.6, 203.0.113.9, 198.51.100.1",
            "203.0.113.9",
            WalkEnd::Counted,
        ),
        (
            2,
            "203.0.113.9, 198.51.100.1",
            "203.0.113.9",
            WalkEnd::Counted,
        ),
        (2, "198.51.100.1", "10.0.0.5", WalkEnd::Short),
        (3, "203.0.113.9, 198.51.100.1", "10.0.0.5", WalkEnd::Short),
        (2, "bogus, 198.51.100.1", "10.0.0.5", WalkEnd::Malformed),
        (2, "203.0.113.9, 0.0.0.0", "10.0.0.5", WalkEnd::Malformed),
        (
            2,
            "[2001:db8::7]:443, 198.51.100.1:80",
            "2001:db8::7",
            WalkEnd::Counted,
        ),
        (1, "", "10.0.0.5", WalkEnd::Short),
    ];
    for (hops, value, want, end) in cases {
        let policy = policy(&format!(
            r#"{{"xff":{{"trusted":["10.0.0.0/8"],"trusted_hops":{hops}}}}}"#
        ));
        let headers: Vec<(&str, &str)> = if value.is_empty() {
            Vec::new()
        } else {
            vec![(xff, value)]
        };
        let (verdict, host) = request(&policy, PROXY, &headers);
        assert_eq!(client(&verdict), *want, "{hops} hops, {value:?}");
        assert_eq!(
            verdict.request.as_ref().map(|r| r.walk_end),
            Some(*end),
            "{hops} hops, {value:?}"
        );
        // The hops counted are in the chain (X-Forwarded-For overwrite), R first, C last.
        if *end == WalkEnd::Counted {
            let chain = after(&verdict, &host, xff).unwrap_or_default();
            assert!(
                chain.starts_with(want) && chain.ends_with("10.0.0.5"),
                "{chain}"
            );
            assert_eq!(verdict.outcome, Outcome::Xff);
        } else {
            assert_eq!(verdict.outcome, Outcome::Direct);
        }
    }
    // Only from a connection client trusted by address: a stranger's header is not read.
    let policy = policy(r#"{"xff":{"trusted":["10.0.0.0/8"],"trusted_hops":1}}"#);
    let (verdict, host) = request(&policy, STRANGER, &[(xff, "1.2.3.4")]);
    assert_eq!(client(&verdict), "203.0.113.66");
    assert!(host.reads.iter().all(|r| !format!("{r:?}").contains(xff)));
}

#[test]
fn forwarded_for_values_are_walked_when_configured() {
    let policy = policy(
        r#"{"xff":{"trusted":["10.0.0.0/8"],"source":"forwarded"},"headers":{"forwarded":"none"}}"#,
    );
    let cases: &[(&str, &str, WalkEnd)] = &[
        (
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            "192.0.2.60",
            WalkEnd::Untrusted,
        ),
        (
            r#"for="[2001:db8:cafe::17]:4711""#,
            "2001:db8:cafe::17",
            WalkEnd::Untrusted,
        ),
        (
            r#"For="[2001:db8:cafe::17]""#,
            "2001:db8:cafe::17",
            WalkEnd::Untrusted,
        ),
        (
            r#"for="192.0.2.43:47011", for=10.1.1.1"#,
            "192.0.2.43",
            WalkEnd::Untrusted,
        ),
        (
            "for=198.51.100.1, for=10.9.9.9;by=x",
            "198.51.100.1",
            WalkEnd::Untrusted,
        ),
        // unknown and obfuscated identifiers stop the walk: R is the last address examined.
        ("for=unknown, for=10.9.9.9", "10.9.9.9", WalkEnd::Malformed),
        ("for=_hidden", "10.0.0.5", WalkEnd::Malformed),
        ("by=10.0.0.1;proto=https", "10.0.0.5", WalkEnd::Malformed),
        (r#"for="1.2.3.4\"""#, "10.0.0.5", WalkEnd::Malformed),
        ("for=0.0.0.0", "10.0.0.5", WalkEnd::Malformed),
        (r#"for="[::]""#, "10.0.0.5", WalkEnd::Malformed),
        (
            r#"proto=https;host="a,b";for=192.0.2.9"#,
            "192.0.2.9",
            WalkEnd::Untrusted,
        ),
    ];
    for (value, want, end) in cases {
        let (verdict, _) = request(
            &policy,
            PROXY,
            &[("forwarded", value), ("x-forwarded-for", "6.6.6.6")],
        );
        assert_eq!(client(&verdict), *want, "{value}");
        assert_eq!(
            verdict.request.as_ref().map(|r| r.walk_end),
            Some(*end),
            "{value}"
        );
    }
    // X-Forwarded-For is then not believed (6.6.6.6 above never became the client), and two
    // Forwarded lines are one list, the last line nearest.
    let (verdict, _) = request(
        &policy,
        PROXY,
        &[
            ("forwarded", "for=192.0.2.1"),
            ("forwarded", "for=10.2.2.2"),
        ],
    );
    assert_eq!(client(&verdict), "192.0.2.1");
    // With a count of hops.
    let hops =
        self::policy(r#"{"xff":{"trusted":["10.0.0.0/8"],"source":"forwarded","trusted_hops":2}}"#);
    let (verdict, _) = request(
        &hops,
        PROXY,
        &[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::9]", for=198.51.100.2"#,
        )],
    );
    assert_eq!(client(&verdict), "2001:db8::9");
}

const CDN: &str = r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"use"}],
    "xff":{"trusted":["10.0.0.0/8"]},
    "client_header":{"name":"CF-Connecting-IP","trusted":["173.245.48.0/20"]},
    "headers":{"set":["x-envoy-external-address","x-real-ip"]}}"#;

#[test]
fn a_cdn_client_header_is_believed_from_its_edges_only() {
    let policy = policy(CDN);
    // The load balancer (PROXY) hands over the CDN edge as C: its header names the client.
    let mut host = Inputs::with_peers("10.0.0.5:1", "173.245.48.7:443")
        .header("cf-connecting-ip", b"203.0.113.9")
        .header("x-forwarded-for", b"6.6.6.6");
    let verdict = evaluate(&policy, Role::Http, &mut host);
    assert_eq!(verdict.outcome, Outcome::ClientHeader);
    assert_eq!(client(&verdict), "203.0.113.9");
    assert_eq!(
        verdict.counters,
        vec![
            (Counter::HeadersStripped, 1),
            (Counter::AcceptClientHeader, 1)
        ]
    );
    assert_eq!(
        after(&verdict, &host, "x-forwarded-for").as_deref(),
        Some("203.0.113.9, 173.245.48.7")
    );
    assert_eq!(
        after(&verdict, &host, "cf-connecting-ip").as_deref(),
        Some("203.0.113.9")
    );
    assert_eq!(
        after(&verdict, &host, "x-real-ip").as_deref(),
        Some("203.0.113.9")
    );

    // A trusted proxy between the edge and Envoy: the walk reaches the edge, then the header.
    let (verdict, host) = request(
        &policy,
        PROXY,
        &[
            ("x-forwarded-for", "173.245.48.9"),
            ("cf-connecting-ip", "2001:db8::5"),
        ],
    );
    assert_eq!(client(&verdict), "2001:db8::5");
    assert_eq!(
        after(&verdict, &host, "x-forwarded-for").as_deref(),
        Some("2001:db8::5, 173.245.48.9, 10.0.0.5")
    );

    // Anyone else's header is removed, never believed.
    for (peer, xff) in [(STRANGER, None), (PROXY, Some("198.51.100.7"))] {
        let mut headers = vec![("cf-connecting-ip", "1.2.3.4")];
        headers.extend(xff.map(|v| ("x-forwarded-for", v)));
        let (verdict, host) = request(&policy, peer, &headers);
        assert_ne!(client(&verdict), "1.2.3.4");
        assert_eq!(after(&verdict, &host, "cf-connecting-ip"), None, "{peer}");
        assert!(verdict
            .counters
            .iter()
            .all(|(c, _)| *c != Counter::AcceptClientHeader));
    }
}

#[test]
fn a_missing_or_malformed_client_header_keeps_r_or_fails_closed() {
    let bad: &[Option<&str>] = &[
        None,
        Some(""),
        Some("bogus"),
        Some("203.0.113.9, 198.51.100.1"),
        Some("0.0.0.0"),
        Some("::"),
    ];
    let open = policy(CDN);
    let closed = policy(&CDN.replace(
        r#""trusted":["173.245.48.0/20"]"#,
        r#""trusted":["173.245.48.0/20"],"fail_closed":true"#,
    ));
    let shadow = policy(
        &CDN.replace(r#""rules""#, r#""mode":"shadow","rules""#)
            .replace(
                r#""trusted":["173.245.48.0/20"]"#,
                r#""trusted":["173.245.48.0/20"],"fail_closed":true"#,
            ),
    );
    assert!(closed.client_header.as_ref().is_some_and(|h| h.fail_closed));
    for value in bad {
        let headers: Vec<(&str, &str)> =
            value.map(|v| ("cf-connecting-ip", v)).into_iter().collect();
        let edge = |policy: &Policy| {
            let mut host = Inputs::with_peers("10.0.0.5:1", "173.245.48.7:443");
            for (name, v) in &headers {
                host.headers.append(name, v.as_bytes());
            }
            let verdict = evaluate(Box::leak(Box::new(policy.clone())), Role::Http, &mut host);
            (verdict, host)
        };
        // Kept: R stays the edge, counted, and the bad header does not reach the upstream.
        let (verdict, host) = edge(&open);
        assert_eq!(client(&verdict), "173.245.48.7", "{value:?}");
        assert!(
            verdict
                .counters
                .contains(&(Counter::ClientHeaderInvalid, 1)),
            "{value:?}"
        );
        assert_eq!(after(&verdict, &host, "cf-connecting-ip"), None);
        // fail_closed: refused.
        let (verdict, _) = edge(&closed);
        assert_eq!(
            verdict.outcome,
            Outcome::Rejected(RejectReason::ClientHeader),
            "{value:?}"
        );
        assert_eq!(verdict.action, Action::Respond { status: 403 });
        assert_eq!(
            verdict.counters,
            vec![(Counter::Reject(RejectReason::ClientHeader), 1)]
        );
        // ... counted only, in shadow mode.
        let (verdict, _) = edge(&shadow);
        assert_eq!(
            verdict.outcome,
            Outcome::Shadow(RejectReason::ClientHeader),
            "{value:?}"
        );
        assert_eq!(client(&verdict), "173.245.48.7");
    }
}

#[test]
fn unspecified_addresses_are_never_a_client() {
    // In X-Forwarded-For: malformed, the walk stops.
    let policy = policy(r#"{"xff":{"trusted":["10.0.0.0/8"]}}"#);
    for value in ["0.0.0.0", "::", "::ffff:0.0.0.0", "[::]:80"] {
        let (verdict, _) = request(&policy, PROXY, &[("x-forwarded-for", value)]);
        assert_eq!(client(&verdict), "10.0.0.5", "{value}");
        assert!(verdict.counters.contains(&(Counter::XffMalformed, 1)));
    }
    // As the PROXY source: no client information (P = D).
    let rules = self::policy(
        r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require"},{"from":["192.168.0.0/16"],"proxy_protocol":"use"}]}"#,
    );
    for (direct, want) in [
        ("10.0.0.5:1", Outcome::Rejected(RejectReason::MissingProxy)),
        ("192.168.1.1:1", Outcome::Direct),
    ] {
        for source in ["0.0.0.0:0", "[::]:0", "[::ffff:0.0.0.0]:9"] {
            let mut host = Inputs::with_peers(direct, source);
            let verdict = evaluate(&rules, Role::Network, &mut host);
            assert_eq!(verdict.outcome, want, "{direct} {source}");
            assert_ne!(client(&verdict), "0.0.0.0");
        }
    }
    // As the direct peer: not an address (fail closed).
    let mut host = Inputs::with_peers("0.0.0.0:1", "203.0.113.9:2");
    let verdict = evaluate(&rules, Role::Network, &mut host);
    assert_eq!(
        verdict.outcome,
        Outcome::Rejected(RejectReason::NoDirectPeer)
    );
}

#[test]
fn a_client_cannot_rewrite_the_forwarded_element_a_trusted_proxy_appended() {
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;
    // Whatever the client sent before it (an unclosed quote, a stray escape, `by="`, separators),
    // on the same line or on its own line, the element the trusted proxy appended is read as
    // written: its address is R (it is not a trusted proxy itself).
    let policy: &'static Policy = Box::leak(Box::new(policy(
        r#"{"xff":{"trusted":["10.0.0.0/8"],"source":"forwarded"}}"#,
    )));
    let alphabet: Vec<u8> = b"for=\";,\\ 6.:[]_-byA=x\t".to_vec();
    let cases = (
        proptest::collection::vec(prop::sample::select(alphabet), 0..40),
        any::<u8>(),
        any::<u16>(),
        0u8..3,
        any::<bool>(),
    );
    let mut attacks = 0;
    let outcomes =
        crate::core::proptests::check(3000, cases, |(prefix, last, port, form, own_line)| {
            let (ip, element) = match form {
                0 => {
                    let ip = format!("2001:db8:1::{last:x}");
                    (ip.clone(), format!("for=\"[{ip}]:{port}\""))
                }
                1 => {
                    let ip = format!("203.0.113.{last}");
                    (ip.clone(), format!("for=\"{ip}:{port}\";proto=https"))
                }
                _ => {
                    let ip = format!("198.51.100.{last}");
                    (ip.clone(), format!("by=_edge;for={ip}"))
                }
            };
            let mut host = Inputs::with_peers(PROXY, PROXY);
            if own_line {
                host.headers.append("forwarded", &prefix);
                host.headers.append("forwarded", element.as_bytes());
            } else {
                let mut line = prefix.clone();
                line.extend_from_slice(b", ");
                line.extend_from_slice(element.as_bytes());
                host.headers.append("forwarded", &line);
            }
            let verdict = evaluate(policy, Role::Http, &mut host);
            let ip: std::net::IpAddr = ip.parse().map_err(|_| TestCaseError::fail("bad ip"))?;
            prop_assert_eq!(
                verdict.client,
                Some(ip),
                "{:?}",
                String::from_utf8_lossy(&prefix)
            );
            Ok(prefix.contains(&b'"'))
        });
    attacks += outcomes.iter().filter(|quoted| **quoted).count();
    // The generator tried quotes often (the attack needs one).
    assert!(attacks > 1000, "only {attacks} prefixes held a quote");
}

#[test]
fn forwarded_elements_that_are_not_well_formed_stop_the_walk() {
    let policy = policy(r#"{"xff":{"trusted":["10.0.0.0/8"],"source":"forwarded"}}"#);
    for value in [
        // The attack the reviewer found: a quote opened by the client's `by=` used to swallow
        // the proxy's element.
        "for=6.6.6.6;by=\",for=\"198.51.100.7:1234\"",
        // Two for= in one element, an unquoted IPv6 or port (RFC 7239 requires quotes), an
        // empty element, whitespace around '='.
        "for=198.51.100.7;for=6.6.6.6",
        "for=2001:db8::1",
        "for=198.51.100.7:80",
        "for=198.51.100.7,,for=10.1.1.1",
        "for = 198.51.100.7",
    ] {
        let (verdict, _) = request(&policy, PROXY, &[("forwarded", value)]);
        let want = if value.starts_with("for=6.6.6.6;by") {
            "198.51.100.7"
        } else {
            "10.0.0.5"
        };
        // For the attack, the proxy's own element is read; for the others the walk stops at
        // the malformed element: R is the last address examined (C, or the trusted 10.1.1.1
        // right of the empty element).
        let want = if value.contains(",,") {
            "10.1.1.1"
        } else {
            want
        };
        assert_eq!(client(&verdict), want, "{value}");
    }
}

#[test]
fn a_health_check_and_a_shadow_rejection_keep_what_they_were() {
    // The load balancer is also a trusted CDN edge: its health check still brings no client
    // information (R = D), whatever client header it carries, and even fail-closed does not
    // refuse it for a missing one.
    let policy = policy(
        r#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["/healthz"]}],
            "client_header":{"name":"cf-connecting-ip","trusted":["10.0.0.0/8"],"fail_closed":true}}"#,
    );
    for headers in [
        vec![(":path", "/healthz"), ("cf-connecting-ip", "6.6.6.6")],
        vec![(":path", "/healthz")],
    ] {
        let (verdict, host) = request(&policy, PROXY, &headers);
        assert_eq!(verdict.outcome, Outcome::HealthCheck, "{headers:?}");
        assert_eq!(client(&verdict), "10.0.0.5");
        assert_eq!(after(&verdict, &host, "cf-connecting-ip"), None);
        assert!(verdict.counters.contains(&(Counter::AcceptHealthCheck, 1)));
        assert!(verdict
            .counters
            .iter()
            .all(|(c, _)| *c != Counter::AcceptClientHeader
                && *c != Counter::Reject(RejectReason::ClientHeader)));
    }
    // Shadow mode: the connection's would-be rejection (missing_proxy) is the one counted and
    // logged, not the client header's that follows it.
    let shadow = self::policy(
        r#"{"mode":"shadow","rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require"}],
            "client_header":{"name":"cf-connecting-ip","trusted":["10.0.0.0/8"],"fail_closed":true}}"#,
    );
    let (verdict, _) = request(&shadow, PROXY, &[(":path", "/")]);
    assert_eq!(verdict.outcome, Outcome::Shadow(RejectReason::MissingProxy));
    assert!(verdict
        .counters
        .contains(&(Counter::Shadow(RejectReason::MissingProxy), 1)));
    assert!(verdict
        .counters
        .contains(&(Counter::ClientHeaderInvalid, 1)));
    assert!(verdict
        .log
        .as_deref()
        .unwrap_or_default()
        .contains("missing_proxy"));
}
