//! Table-driven tests of the decision and the header plan, on the issue's examples.

#![allow(clippy::type_complexity)]

use super::*;
use crate::core::headers::HeaderList;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

const LB: &str = "127.0.0.5:40000";
const ATTACKER: &str = "127.0.0.66:40001";

fn peer(s: &str) -> Peer {
    Peer::parse(s.as_bytes()).unwrap()
}

fn policy(json: &str) -> Policy {
    Policy::from_json(json.as_bytes()).unwrap()
}

fn no_tlvs(_: TlvKey) -> Option<Vec<u8>> {
    None
}

fn connection(policy: &Policy, d: Option<&str>, p: &str) -> ConnectionDecision {
    let direct = d.map_or(Observed::Absent, |d| Observed::Present(peer(d)));
    decide_connection(policy, Role::Http, direct, Some(peer(p)), &mut no_tlvs)
}

const WORDS: &str = r#"{"rules":[
  {"from":["127.0.0.1/32"],"proxy_protocol":"require"},
  {"from":["127.0.0.2/32"],"proxy_protocol":"use"},
  {"from":["127.0.0.3/32"],"proxy_protocol":"ignore"},
  {"from":["127.0.0.4/32"],"proxy_protocol":"reject"},
  {"from":["127.0.0.6/32"],"proxy_protocol":"deny"}
]}"#;

#[test]
fn each_proxy_protocol_word_with_and_without_proxy() {
    let policy = policy(WORDS);
    // (direct peer, source, reason, client C)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "127.0.0.1:1000",
            "203.0.113.9:5555",
            "proxy",
            Some("203.0.113.9"),
        ),
        ("127.0.0.1:1000", "127.0.0.1:1000", "missing_proxy", None),
        (
            "127.0.0.2:1000",
            "203.0.113.9:5555",
            "proxy",
            Some("203.0.113.9"),
        ),
        (
            "127.0.0.2:1000",
            "127.0.0.2:1000",
            "direct",
            Some("127.0.0.2"),
        ),
        (
            "127.0.0.3:1000",
            "203.0.113.9:5555",
            "direct",
            Some("127.0.0.3"),
        ),
        (
            "127.0.0.3:1000",
            "127.0.0.3:1000",
            "direct",
            Some("127.0.0.3"),
        ),
        (
            "127.0.0.4:1000",
            "203.0.113.9:5555",
            "untrusted_proxy",
            None,
        ),
        (
            "127.0.0.4:1000",
            "127.0.0.4:1000",
            "direct",
            Some("127.0.0.4"),
        ),
        ("127.0.0.6:1000", "127.0.0.6:1000", "denied", None),
        ("127.0.0.6:1000", "203.0.113.9:5555", "denied", None),
        // Implicit last rule: reject PROXY, accept direct.
        (
            "127.0.0.66:1000",
            "203.0.113.9:5555",
            "untrusted_proxy",
            None,
        ),
        (
            "127.0.0.66:1000",
            "127.0.0.66:1000",
            "direct",
            Some("127.0.0.66"),
        ),
        // Same address, other port: PROXY was used.
        (
            "127.0.0.66:1000",
            "127.0.0.66:1001",
            "untrusted_proxy",
            None,
        ),
        // IPv4-mapped sources are IPv4.
        (
            "[::ffff:127.0.0.2]:1000",
            "[::ffff:203.0.113.9]:5",
            "proxy",
            Some("203.0.113.9"),
        ),
        ("[::1]:1000", "[2001:db8::7]:5", "untrusted_proxy", None),
    ];
    for (d, p, reason, client) in cases {
        let got = connection(&policy, Some(d), p);
        assert_eq!(got.reason(), *reason, "D={d} P={p}");
        assert_eq!(
            got.client,
            client.map(|c| c.parse().unwrap()),
            "D={d} P={p}"
        );
    }
    let ignored = connection(&policy, Some("127.0.0.3:1"), "203.0.113.9:5");
    assert!(ignored.proxy_ignored);
}

#[test]
fn missing_direct_peer() {
    let strict = policy(r#"{"rules":[{"from":["0.0.0.0/0"],"proxy_protocol":"use"}]}"#);
    let got = connection(&strict, None, "203.0.113.9:5");
    assert_eq!(got.reason(), "no_direct_peer");
    assert!(got.rejected());

    let lenient = policy(
        r#"{"direct_peer":{"if_missing":"trust_source"},"rules":[{"from":["0.0.0.0/0"],"proxy_protocol":"use"}]}"#,
    );
    let got = connection(&lenient, None, "203.0.113.9:5");
    assert_eq!(got.reason(), "direct");
    assert_eq!(got.client, Some("203.0.113.9".parse().unwrap()));

    let malformed = decide_connection(
        &strict,
        Role::Http,
        Observed::from_bytes(Some(b"not-an-address")),
        Some(peer("1.2.3.4:5")),
        &mut no_tlvs,
    );
    assert_eq!(malformed.reason(), "no_direct_peer");
}

#[test]
fn shadow_mode_counts_and_proceeds_with_the_direct_peer() {
    let shadow = policy(r#"{"mode":"shadow"}"#);
    let got = connection(&shadow, Some(ATTACKER), "203.0.113.9:5");
    assert!(!got.rejected());
    assert_eq!(got.reason(), "shadow_untrusted_proxy");
    assert_eq!(got.client, Some("127.0.0.66".parse().unwrap()));
    assert_eq!(got.shadow_rejection(), Some(RejectReason::UntrustedProxy));
}

const TLV_POLICY: &str = r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"require",
  "tlvs":{"aws_vpce_id":["vpce-0a1b2c3d4e5f60718"]}}],
  "headers":{"tlv":{"aws_vpce_id":"x-amzn-vpce-id","authority":"x-proxy-authority"}}}"#;

#[test]
fn tlv_allowlist() {
    let policy = policy(TLV_POLICY);
    let cases: &[(Option<&[u8]>, &str)] = &[
        (Some(b"\x01vpce-0a1b2c3d4e5f60718"), "proxy"),
        (Some(b"\x01vpce-0000000000000000"), "tlv"),
        (Some(b"vpce-0a1b2c3d4e5f60718"), "tlv"),
        (None, "tlv"),
    ];
    for (raw, reason) in cases {
        let mut reads = Vec::new();
        let mut source = |key: TlvKey| {
            reads.push(key);
            match key {
                TlvKey::AwsVpceId => raw.map(<[u8]>::to_vec),
                TlvKey::Authority => Some(b"api.example.com".to_vec()),
                _ => None,
            }
        };
        let got = decide_connection(
            &policy,
            Role::Http,
            Observed::Present(peer(LB)),
            Some(peer("203.0.113.9:5")),
            &mut source,
        );
        assert_eq!(got.reason(), *reason, "{raw:?}");
        if *reason == "proxy" {
            assert_eq!(got.tlv(TlvKey::AwsVpceId), Some("vpce-0a1b2c3d4e5f60718"));
            assert_eq!(got.tlv(TlvKey::Authority), Some("api.example.com"));
            // Each TLV read once.
            assert_eq!(reads, vec![TlvKey::AwsVpceId, TlvKey::Authority]);
        } else {
            assert_eq!(reads, vec![TlvKey::AwsVpceId]);
        }
    }
}

#[test]
fn network_role_reads_only_the_tlvs_it_checks() {
    let policy = policy(TLV_POLICY);
    let mut reads = Vec::new();
    let mut source = |key: TlvKey| {
        reads.push(key);
        Some(b"\x01vpce-0a1b2c3d4e5f60718".to_vec())
    };
    let got = decide_connection(
        &policy,
        Role::Network,
        Observed::Present(peer(LB)),
        Some(peer("203.0.113.9:5")),
        &mut source,
    );
    assert_eq!(got.reason(), "proxy");
    assert_eq!(reads, vec![TlvKey::AwsVpceId]);
}

fn request(
    policy: &Policy,
    d: &str,
    p: &str,
    incoming: &[(&str, &[u8])],
) -> (RequestDecision, HeaderList) {
    let conn = connection(policy, Some(d), p);
    let mut headers = HeaderList::new();
    for (name, value) in incoming {
        headers.append(name, value);
    }
    let decision = plan_and_apply(policy, conn, &mut headers);
    (decision, headers)
}

/// Plans the request's header changes from `headers` and applies them, as the glue does.
pub(crate) fn plan_and_apply(
    policy: &Policy,
    connection: ConnectionDecision,
    headers: &mut HeaderList,
) -> RequestDecision {
    let incoming = headers.clone();
    let mut view = HeaderView::new(|name: &str| incoming.get(name));
    let decision = decide_request(policy, connection, &mut view);
    let ops = view.ops;
    headers.apply(&ops);
    decision
}

fn header(headers: &mut HeaderList, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

const CDN: &str = r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"require"}],
  "xff":{"trusted":["198.51.100.0/24","2001:db8:cd::/48"]},
  "headers":{"set":["x-envoy-external-address","x-real-ip"],"forwarded":"overwrite"}}"#;

#[test]
fn xff_walk_and_headers() {
    let policy = policy(CDN);
    // (source P, incoming XFF, R, XFF out, Forwarded out, reason)
    let cases: &[(&str, &[u8], &str, &str, &str, &str)] = &[
        // C trusted, one hop.
        (
            "198.51.100.10:1",
            b"1.1.1.1",
            "1.1.1.1",
            "1.1.1.1, 198.51.100.10",
            "for=1.1.1.1, for=198.51.100.10",
            "xff",
        ),
        // Several trusted hops; a spoofed entry left of the client is ignored.
        (
            "198.51.100.10:1",
            b"6.6.6.6, 1.1.1.1, 198.51.100.7",
            "1.1.1.1",
            "1.1.1.1, 198.51.100.7, 198.51.100.10",
            "for=1.1.1.1, for=198.51.100.7, for=198.51.100.10",
            "xff",
        ),
        // C not trusted: its XFF is replaced.
        (
            "203.0.113.9:1",
            b"6.6.6.6",
            "203.0.113.9",
            "203.0.113.9",
            "for=203.0.113.9",
            "proxy",
        ),
        // IPv6 client through an IPv6 CDN hop, with bracket and port.
        (
            "[2001:db8:cd::1]:1",
            b"[2001:db8::7]:443",
            "2001:db8::7",
            "2001:db8::7, 2001:db8:cd::1",
            "for=\"[2001:db8::7]\", for=\"[2001:db8:cd::1]\"",
            "xff",
        ),
        // Malformed element (non-UTF-8) stops the walk at the last address examined.
        (
            "198.51.100.10:1",
            b"1.1.1.1, \xff\xfe, 198.51.100.7",
            "198.51.100.7",
            "198.51.100.7, 198.51.100.10",
            "for=198.51.100.7, for=198.51.100.10",
            "xff",
        ),
    ];
    for (p, xff, r, xff_out, fwd_out, reason) in cases {
        let (decision, mut headers) = request(
            &policy,
            LB,
            p,
            &[
                ("x-forwarded-for", xff),
                ("x-real-ip", b"6.6.6.6"),
                ("forwarded", b"for=6.6.6.6"),
            ],
        );
        assert_eq!(decision.client, Some(r.parse().unwrap()), "{p} {xff:?}");
        assert_eq!(decision.reason(), *reason, "{p} {xff:?}");
        assert_eq!(
            header(&mut headers, "x-forwarded-for").as_deref(),
            Some(*xff_out)
        );
        assert_eq!(header(&mut headers, "forwarded").as_deref(), Some(*fwd_out));
        assert_eq!(header(&mut headers, "x-real-ip").as_deref(), Some(*r));
        assert_eq!(
            header(&mut headers, "x-envoy-external-address").as_deref(),
            Some(*r)
        );
    }
}

#[test]
fn xff_modes_and_strip() {
    let base = r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"use"}],"xff":{"trusted":["198.51.100.0/24"]},"headers":{"x_forwarded_for":"MODE","forwarded":"FWD"}}"#;
    // (mode, forwarded mode, XFF out, Forwarded out) for an untrusted direct client.
    let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        ("overwrite", "none", Some("127.0.0.66"), None),
        ("append", "none", Some("6.6.6.6, 127.0.0.66"), None),
        ("preserve", "none", Some("6.6.6.6"), None),
        ("remove", "none", None, None),
        (
            "overwrite",
            "append",
            Some("127.0.0.66"),
            Some("for=127.0.0.66"),
        ),
        (
            "overwrite",
            "overwrite",
            Some("127.0.0.66"),
            Some("for=127.0.0.66"),
        ),
    ];
    for (mode, fwd, xff_out, fwd_out) in cases {
        let policy = policy(&base.replace("MODE", mode).replace("FWD", fwd));
        let (decision, mut headers) = request(
            &policy,
            ATTACKER,
            ATTACKER,
            &[
                ("x-forwarded-for", b"6.6.6.6"),
                ("forwarded", b"for=6.6.6.6"),
                ("true-client-ip", b"6.6.6.6"),
                ("x-unrelated", b"kept"),
            ],
        );
        assert_eq!(decision.reason(), "direct");
        assert_eq!(decision.stripped, 2, "{mode}");
        assert_eq!(
            header(&mut headers, "x-forwarded-for").as_deref(),
            *xff_out,
            "{mode}"
        );
        assert_eq!(
            header(&mut headers, "forwarded").as_deref(),
            *fwd_out,
            "{mode} {fwd}"
        );
        assert_eq!(header(&mut headers, "true-client-ip"), None);
        assert_eq!(header(&mut headers, "x-unrelated").as_deref(), Some("kept"));
    }
    // A trusted C keeps the strip-list headers, and Forwarded append keeps the chain.
    let policy = policy(&base.replace("MODE", "append").replace("FWD", "append"));
    let (decision, mut headers) = request(
        &policy,
        LB,
        "198.51.100.10:1",
        &[
            ("x-forwarded-for", b"1.1.1.1"),
            ("forwarded", b"for=1.1.1.1"),
            ("true-client-ip", b"1.1.1.1"),
        ],
    );
    assert_eq!(decision.stripped, 0);
    assert_eq!(
        header(&mut headers, "x-forwarded-for").as_deref(),
        Some("1.1.1.1, 198.51.100.10")
    );
    assert_eq!(
        header(&mut headers, "forwarded").as_deref(),
        Some("for=1.1.1.1, for=198.51.100.10")
    );
    assert_eq!(
        header(&mut headers, "true-client-ip").as_deref(),
        Some("1.1.1.1")
    );
}

#[test]
fn tlv_headers_come_only_from_used_proxy_information() {
    let policy = policy(
        r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"use"}],"headers":{"tlv":{"authority":"x-proxy-authority"}}}"#,
    );
    let mut source = |_: TlvKey| Some(b"api.example.com".to_vec());
    let conn = decide_connection(
        &policy,
        Role::Http,
        Observed::Present(peer(LB)),
        Some(peer("203.0.113.9:5")),
        &mut source,
    );
    let mut headers = HeaderList::new();
    headers.append("x-proxy-authority", b"evil");
    plan_and_apply(&policy, conn, &mut headers);
    assert_eq!(
        header(&mut headers, "x-proxy-authority").as_deref(),
        Some("api.example.com")
    );

    // A direct client cannot set the header itself.
    let (_, mut headers) = request(
        &policy,
        ATTACKER,
        ATTACKER,
        &[("x-proxy-authority", b"evil")],
    );
    assert_eq!(header(&mut headers, "x-proxy-authority"), None);
}

#[test]
fn rejected_requests_touch_no_headers() {
    let policy = policy("{}");
    let (decision, headers) = request(
        &policy,
        ATTACKER,
        "203.0.113.9:5",
        &[("x-forwarded-for", b"1.1.1.1")],
    );
    assert!(decision.rejected());
    assert_eq!(decision.reason(), "untrusted_proxy");
    assert_eq!(decision.client, None);
    assert_eq!(headers.entries().len(), 1);
}

#[test]
fn xff_entry_limit() {
    let policy = policy(
        r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"use"}],"xff":{"trusted":["10.0.0.0/8"],"max_entries":3}}"#,
    );
    let xff = b"1.1.1.1, 10.0.0.5, 10.0.0.4, 10.0.0.3, 10.0.0.2";
    let (decision, _) = request(&policy, LB, "10.0.0.1:1", &[("x-forwarded-for", xff)]);
    assert_eq!(decision.client, Some("10.0.0.4".parse().unwrap()));
    assert_eq!(decision.walk_end, WalkEnd::Limit);
}

#[test]
fn direct_peer_value_may_carry_the_source() {
    let cases: &[(Option<&[u8]>, Observed<Peer>, Option<&str>)] = &[
        (None, Observed::Absent, None),
        (
            Some(b"127.0.0.5:4000"),
            Observed::Present(peer("127.0.0.5:4000")),
            None,
        ),
        (
            Some(b"127.0.0.5:4000 203.0.113.9:5555"),
            Observed::Present(peer("127.0.0.5:4000")),
            Some("203.0.113.9:5555"),
        ),
        (
            Some(b"[::1]:4000 [::ffff:203.0.113.9]:5555\n"),
            Observed::Present(peer("[::1]:4000")),
            Some("203.0.113.9:5555"),
        ),
        (Some(b"127.0.0.5:4000 garbage"), Observed::Malformed, None),
        (Some(b"garbage 127.0.0.5:4000"), Observed::Malformed, None),
        (Some(b"\xff"), Observed::Malformed, None),
    ];
    for (bytes, direct, source) in cases {
        let (d, p) = split_peers(*bytes);
        assert_eq!(d, *direct, "{bytes:?}");
        assert_eq!(p, source.map(peer), "{bytes:?}");
    }
}
