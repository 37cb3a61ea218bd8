//! Property tests: arbitrary bytes never panic any parser, every verdict keeps the invariants
//! of the decision, and realistic inputs give the client a simple model of the rules gives.
//!
//! [`check`] runs a property like `proptest!` does and hands back what each case reported, so
//! a test can also assert that its generator produced the inputs it claims to cover (a
//! property over inputs that never reach the assertions proves nothing).

use std::cell::RefCell;
use std::net::IpAddr;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::core::addr::{push_ip, Peer};
use crate::core::config::{ForwardedMode, Mode, Policy, ProxyProtocol, XffMode};
use crate::core::decision::{Counter, HeaderUse, Observed, RejectReason, Role, Via};
use crate::core::headers::{forwarded_element, HeaderList};
use crate::core::inputs::{Inputs, Read};
use crate::core::tlv::{decode, TlvKey};
use crate::core::verdict::{evaluate, Action, Outcome, Verdict};
use crate::core::xff::{parse_element, WalkEnd};
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Runs `test` on `cases` inputs drawn from `strategy`; a failure is shrunk and reported as by
/// `proptest!`. Returns what each passing case returned, in order.
pub(crate) fn check<S: Strategy, R>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<R, TestCaseError>,
) -> Vec<R> {
    let seen = RefCell::new(Vec::with_capacity(cases as usize));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&strategy, |value| {
        let result = test(value)?;
        seen.borrow_mut().push(result);
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    seen.into_inner()
}

/// At least `percent` of `total` cases had `what`.
fn assert_share(count: usize, total: usize, percent: usize, what: &str) {
    assert!(
        count * 100 >= total * percent,
        "only {count} of {total} generated cases {what} (wanted {percent}%)"
    );
}

const POLICY: &str = r#"{"mode":"enforce","rules":[
  {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
  {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
  {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
  "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"max_entries":8},
  "headers":{"x_forwarded_for":"append","forwarded":"append","set":["x-real-ip"],
             "tlv":{"aws_vpce_id":"x-amzn-vpce-id","unique_id":"x-unique-id"}}}"#;

/// The same rules in shadow mode, D optional, and the other header modes.
const SHADOW_POLICY: &str = r#"{"mode":"shadow","direct_peer":{"if_missing":"trust_source"},
  "rules":[
  {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
  {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
  {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
  "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"max_entries":4},
  "headers":{"x_forwarded_for":"overwrite","forwarded":"overwrite",
             "set":["x-real-ip","x-envoy-external-address"],
             "tlv":{"aws_vpce_id":"x-amzn-vpce-id","unique_id":"x-unique-id"}}}"#;

/// [`POLICY`]'s rules with the load balancer's health checks admitted on two paths, and Envoy
/// sending PROXY upstream (an `ignore` rule's PROXY header is then refused). The load balancer
/// is also trusted for X-Forwarded-For, which its health checks must not benefit from.
const HEALTH_POLICY: &str = r#"{"mode":"enforce","upstream_proxy_protocol":true,"rules":[
  {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]},
   "health_check_paths":["/healthz/ready","/ping"]},
  {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
  {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
  "xff":{"trusted":["10.0.0.0/8","2001:db8::/32","127.0.0.5"],"max_entries":8},
  "headers":{"x_forwarded_for":"append","forwarded":"append","set":["x-real-ip"],
             "tlv":{"aws_vpce_id":"x-amzn-vpce-id","unique_id":"x-unique-id"}}}"#;

/// [`POLICY`]'s rules with the other sources of R: two trusted hops counted from a trusted C,
/// and a CDN's client header believed from 10/8 and 198.51.100/24.
const SOURCES_POLICY: &str = r#"{"mode":"enforce","rules":[
  {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
  {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
  {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
  "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"trusted_hops":2,"max_entries":8},
  "client_header":{"name":"cf-connecting-ip","trusted":["10.0.0.0/8","198.51.100.0/24"]},
  "headers":{"x_forwarded_for":"overwrite","set":["x-real-ip"]}}"#;

/// RFC 7239 `Forwarded` as the walk's input, in shadow mode, with a fail-closed client header.
const FORWARDED_POLICY: &str = r#"{"mode":"shadow","rules":[
  {"from":["10.0.0.0/8"],"proxy_protocol":"use"}],
  "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"source":"forwarded","max_entries":6},
  "client_header":{"name":"cf-connecting-ip","trusted":["198.51.100.0/24"],"fail_closed":true},
  "headers":{"x_forwarded_for":"append","forwarded":"overwrite","set":["x-real-ip"]}}"#;

/// A `Forwarded` line naming these hops (quoted, bracketed IPv6; now and then `unknown`).
fn forwarded_line() -> impl Strategy<Value = Vec<u8>> {
    xff_lines().prop_flat_map(|(hops, _)| {
        let forms: Vec<_> = hops
            .iter()
            .map(|ip| {
                let ip = *ip;
                prop_oneof![
                    6 => Just(match ip {
                        IpAddr::V4(v4) => format!("for={v4}"),
                        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
                    }),
                    2 => any::<u16>().prop_map(move |p| match ip {
                        IpAddr::V4(v4) => format!("for=\"{v4}:{p}\";proto=https"),
                        IpAddr::V6(v6) => format!("by=x;For=\"[{v6}]:{p}\""),
                    }),
                    1 => Just("for=unknown".to_string()),
                ]
            })
            .collect();
        forms.prop_map(|elements| elements.join(", ").into_bytes())
    })
}

/// A CDN client header's value: an address, or what is not one.
fn client_header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => address().prop_map(text),
        1 => Just(b"0.0.0.0".to_vec()),
        1 => Just(b"203.0.113.9, 198.51.100.1".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

/// Request paths: the health-check ones (with and without a query), near misses, garbage.
fn request_path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"/healthz/ready".to_vec()),
        1 => Just(b"/healthz/ready?full=1".to_vec()),
        1 => Just(b"/ping".to_vec()),
        2 => Just(b"/".to_vec()),
        1 => Just(b"/healthz/ready/".to_vec()),
        1 => Just(b"/healthz".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn policy(json: &str) -> Policy {
    match Policy::from_json(json.as_bytes()) {
        Ok(policy) => policy,
        Err(err) => panic!("test policy: {err}"),
    }
}

/// The stored form of an AWS VPC endpoint id TLV.
fn aws(id: &str) -> Vec<u8> {
    let mut raw = vec![0x01];
    raw.extend_from_slice(id.as_bytes());
    raw
}

fn text(ip: IpAddr) -> Vec<u8> {
    let mut out = Vec::new();
    push_ip(&mut out, ip);
    out
}

fn lossy(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

// --- Generators ----------------------------------------------------------------------------

/// An address in one of the policies' ranges, or outside all of them.
fn address() -> impl Strategy<Value = IpAddr> {
    let v4 = prop_oneof![
        4 => any::<[u8; 3]>().prop_map(|[b, c, d]| [10, b, c, d]),
        1 => any::<[u8; 2]>().prop_map(|[c, d]| [192, 168, c, d]),
        1 => (0u8..8).prop_map(|d| [127, 0, 0, d]),
        3 => any::<[u8; 4]>(),
    ]
    .prop_map(IpAddr::from);
    let v6 = prop_oneof![
        2 => any::<[u16; 2]>().prop_map(|[g6, g7]| [0x2001, 0xdb8, 0, 0, 0, 0, g6, g7]),
        1 => any::<[u16; 8]>(),
        1 => Just([0, 0, 0, 0, 0, 0, 0, 1]),
    ]
    .prop_map(IpAddr::from);
    prop_oneof![3 => v4, 1 => v6]
}

/// `ip:port` or `[ip]:port`, as Envoy writes a peer.
fn peer_text(ip: IpAddr, port: u16) -> String {
    Peer { ip, port }.to_string()
}

/// An X-Forwarded-For element for `ip`, in one of the forms proxies write, with the address it
/// names after canonicalisation.
fn element(ip: IpAddr) -> impl Strategy<Value = String> {
    let plain = ip.to_string();
    let mut forms = vec![
        Just(plain.clone()).boxed(),
        Just(format!(" {plain} ")).boxed(),
    ];
    match ip {
        IpAddr::V4(v4) => {
            forms.push(any::<u16>().prop_map(move |p| format!("{v4}:{p}")).boxed());
            forms.push(Just(format!("::ffff:{v4}")).boxed());
        }
        IpAddr::V6(v6) => {
            forms.push(Just(format!("[{v6}]")).boxed());
            forms.push(
                any::<u16>()
                    .prop_map(move |p| format!("[{v6}]:{p}"))
                    .boxed(),
            );
        }
    }
    proptest::strategy::Union::new(forms)
}

/// Hops of an X-Forwarded-For, spread over one or two header lines.
fn xff_lines() -> impl Strategy<Value = (Vec<IpAddr>, Vec<String>)> {
    // Mixed hops, or a run of trusted proxies (long enough to reach max_entries) after a few
    // mixed ones.
    let trusted = prop_oneof![
        3 => any::<[u8; 3]>().prop_map(|[b, c, d]| IpAddr::from([10, b, c, d])),
        1 => any::<[u16; 2]>()
            .prop_map(|[g6, g7]| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, g6, g7])),
    ];
    let hops = prop_oneof![
        3 => proptest::collection::vec(address(), 0..12),
        2 => (
            proptest::collection::vec(address(), 0..4),
            proptest::collection::vec(trusted, 0..14),
        )
            .prop_map(|(mut hops, trusted)| {
                hops.extend(trusted);
                hops
            }),
    ];
    hops.prop_flat_map(|hops| {
        let elements: Vec<_> = hops.iter().map(|ip| element(*ip)).collect();
        (Just(hops.clone()), elements, 0..=hops.len())
    })
    .prop_map(|(hops, elements, split)| {
        let (first, second) = elements.split_at(split.min(elements.len()));
        let lines = [first.join(","), second.join(", ")]
            .into_iter()
            .filter(|line| !line.is_empty())
            .collect();
        (hops, lines)
    })
}

// --- Invariants ----------------------------------------------------------------------------

/// The request headers the upstream must see after `verdict`'s plan, by the README's rules:
/// strip (when C is not a trusted proxy, or the connection is a health check), X-Forwarded-For, Forwarded, the `set` headers with
/// R, the TLV headers from used PROXY information only; every other header as it came.
fn expected_header(
    policy: &Policy,
    verdict: &Verdict,
    incoming: &HeaderList,
    name: &str,
) -> Option<Vec<u8>> {
    let (Some(r), Some(c), Some(request)) =
        (verdict.client, verdict.connection.client, &verdict.request)
    else {
        return incoming.get(name);
    };
    let rules = &policy.headers;
    let appended = |before: Option<Vec<u8>>, element: &[u8]| {
        let mut value = before
            .filter(|v| !v.trim_ascii().is_empty())
            .map(|mut v| {
                v.extend_from_slice(b", ");
                v
            })
            .unwrap_or_default();
        value.extend_from_slice(element);
        value
    };
    let join = |items: Vec<Vec<u8>>| items.join(&b", "[..]);
    if let Some((key, _)) = rules.tlv.iter().find(|(_, n)| n == name) {
        return verdict.connection.tlv(*key).map(|v| v.as_bytes().to_vec());
    }
    // A CDN's client header: R when R came from it, otherwise never passed on.
    if policy
        .client_header
        .as_ref()
        .is_some_and(|h| h.name == name)
    {
        return (request.client_header == HeaderUse::Used).then(|| text(r));
    }
    if rules.set.iter().any(|n| n == name) {
        return Some(text(r));
    }
    let believed = policy.xff_trusts(c) && verdict.connection.via != Via::HealthCheck;
    let stripped = !believed && rules.strip.iter().any(|n| n == name);
    let after_strip = if stripped { None } else { incoming.get(name) };
    if name == "forwarded" {
        return match rules.forwarded {
            ForwardedMode::None => after_strip,
            ForwardedMode::Overwrite => Some(join(
                request
                    .chain
                    .iter()
                    .map(|ip| forwarded_element(*ip).into_bytes())
                    .collect(),
            )),
            ForwardedMode::Append => Some(appended(after_strip, forwarded_element(c).as_bytes())),
        };
    }
    if name == "x-forwarded-for" {
        return match rules.x_forwarded_for {
            XffMode::Overwrite => Some(join(request.chain.iter().map(|ip| text(*ip)).collect())),
            XffMode::Append => Some(appended(incoming.get(name), &text(c))),
            XffMode::Preserve => after_strip,
            XffMode::Remove => None,
        };
    }
    after_strip
}

/// Every name the request had or the policy writes or strips.
fn header_names(policy: &Policy, incoming: &HeaderList) -> Vec<String> {
    let mut names: Vec<String> = incoming.entries().iter().map(|(n, _)| n.clone()).collect();
    names.extend(policy.headers.set.iter().cloned());
    names.extend(policy.headers.strip.iter().cloned());
    names.extend(policy.headers.tlv.iter().map(|(_, n)| n.clone()));
    names.extend(["x-forwarded-for".to_string(), "forwarded".to_string()]);
    names.extend(policy.client_header.iter().map(|h| h.name.clone()));
    names.sort();
    names.dedup();
    names
}

/// The invariants every verdict keeps, whatever the inputs.
fn check_verdict(
    policy: &Policy,
    role: Role,
    verdict: &Verdict,
    host: &Inputs,
) -> Result<(), TestCaseError> {
    let connection = &verdict.connection;
    prop_assert_eq!(verdict.role, role);
    prop_assert_eq!(verdict.log.is_some(), connection.rejection.is_some());
    if role.per_connection() {
        prop_assert!(
            !host.reads.iter().any(|r| matches!(r, Read::Header(_))),
            "a per-connection role read a header: {:?}",
            host.reads
        );
    }
    if let Outcome::Rejected(reason) = verdict.outcome {
        // An enforced rejection: no client, nothing to publish or rewrite, one counter.
        prop_assert_eq!(verdict.client, None);
        prop_assert_eq!(connection.client, None);
        prop_assert!(verdict.headers.is_empty(), "{:?}", verdict.headers);
        prop_assert!(verdict.request.is_none());
        prop_assert_eq!(&verdict.counters, &vec![(Counter::Reject(reason), 1)]);
        prop_assert_eq!(
            connection.rejection.as_ref().map(|r| r.reason),
            Some(reason)
        );
        let action = match role {
            Role::Network | Role::Listener => Action::Close,
            Role::Http => Action::Respond {
                status: policy.reject_status,
            },
        };
        prop_assert_eq!(verdict.action, action);
        // Shadow mode refuses only when there is no address at all to call the client.
        if policy.mode == Mode::Shadow {
            prop_assert_eq!(reason, RejectReason::NoDirectPeer);
            prop_assert_eq!(connection.source, None);
        }
        return Ok(());
    }

    prop_assert_eq!(verdict.action, Action::Continue);
    let (Some(r), Some(c)) = (verdict.client, connection.client) else {
        return Err(TestCaseError::fail(format!(
            "accepted without a client: {verdict:?}"
        )));
    };
    // C is P (a PROXY header the rule allows) or D (or P standing in for a missing D).
    match connection.via {
        Via::Proxy => {
            prop_assert!(connection.proxy_present);
            prop_assert_eq!(Some(c), connection.source.map(|p| p.ip));
        }
        Via::Direct => match connection.direct_peer {
            Observed::Present(d) => prop_assert_eq!(c, d.ip),
            _ => prop_assert_eq!(Some(c), connection.source.map(|p| p.ip)),
        },
        // A health check: no PROXY information, C = D, from a `require` rule that lists
        // health-check paths; in the HTTP role only for one of them.
        Via::HealthCheck => {
            prop_assert!(!connection.proxy_present);
            prop_assert_eq!(Some(c), connection.direct_peer.peer().map(|d| d.ip));
            let rule = connection.rule.and_then(|i| policy.rules.get(i));
            prop_assert!(rule
                .is_some_and(|r| r.proxy_protocol == ProxyProtocol::Require
                    && !r.health_check_paths.is_empty()));
            if role == Role::Http {
                let path = host.headers.get(":path").unwrap_or_default();
                prop_assert!(rule.is_some_and(|r| r.is_health_check_path(&path)));
                // Its X-Forwarded-For is never walked, whoever trusts the load balancer.
                prop_assert_eq!(r, c);
            }
        }
    }
    // With PROXY sent upstream, an accepted connection that had a PROXY header used it: the
    // upstream receives nothing trustip did not verify.
    if policy.upstream_proxy_protocol && connection.proxy_present {
        prop_assert_eq!(connection.via, Via::Proxy);
    }
    match (&connection.rejection, verdict.outcome) {
        (Some(rejection), Outcome::Shadow(reason)) => {
            prop_assert_eq!(policy.mode, Mode::Shadow);
            prop_assert_eq!(rejection.reason, reason);
        }
        (None, Outcome::Proxy) => prop_assert_eq!(connection.via, Via::Proxy),
        (None, Outcome::Direct) => prop_assert_eq!(connection.via, Via::Direct),
        (None, Outcome::HealthCheck) => prop_assert_eq!(connection.via, Via::HealthCheck),
        (None, Outcome::ClientHeader) => prop_assert_eq!(
            verdict.request.as_ref().map(|q| q.client_header),
            Some(HeaderUse::Used)
        ),
        (None, Outcome::Xff) => prop_assert_ne!(r, c),
        (rejection, outcome) => {
            return Err(TestCaseError::fail(format!(
                "outcome {outcome:?} with rejection {rejection:?}"
            )))
        }
    }
    if connection.rejection.is_none() {
        prop_assert_eq!(
            matches!(verdict.outcome, Outcome::Xff | Outcome::ClientHeader),
            r != c
        );
    }
    // Exactly one accept counter, and the right one.
    let accepts: Vec<Counter> = verdict
        .counters
        .iter()
        .map(|(counter, _)| *counter)
        .filter(|counter| {
            matches!(
                counter,
                Counter::AcceptXff
                    | Counter::AcceptProxy
                    | Counter::AcceptDirect
                    | Counter::AcceptHealthCheck
                    | Counter::AcceptClientHeader
            )
        })
        .collect();
    let used = verdict
        .request
        .as_ref()
        .is_some_and(|q| q.client_header == HeaderUse::Used);
    let accept = match (r != c, connection.via) {
        _ if used => Counter::AcceptClientHeader,
        (true, _) => Counter::AcceptXff,
        (false, Via::Proxy) => Counter::AcceptProxy,
        (false, Via::Direct) => Counter::AcceptDirect,
        (false, Via::HealthCheck) => Counter::AcceptHealthCheck,
    };
    prop_assert_eq!(accepts, vec![accept]);

    match role {
        Role::Network | Role::Listener => {
            prop_assert_eq!(r, c);
            prop_assert!(verdict.headers.is_empty());
            prop_assert!(verdict.request.is_none());
        }
        Role::Http => {
            let Some(request) = &verdict.request else {
                return Err(TestCaseError::fail("HTTP verdict without its walk"));
            };
            let chain = &request.chain;
            // The chain opens with R and ends at C; no address is next to itself.
            prop_assert_eq!(chain.first().copied(), Some(r));
            prop_assert_eq!(chain.last().copied(), Some(c));
            for pair in chain.windows(2) {
                prop_assert_ne!(pair.first(), pair.get(1));
            }
            // A client header's address is R, and the next hop is trusted to send it.
            let used = request.client_header == HeaderUse::Used;
            let walked = if used {
                let edge = chain.get(1).copied().unwrap_or(c);
                prop_assert!(policy
                    .client_header
                    .as_ref()
                    .is_some_and(|h| h.trusted.contains(edge)));
                chain.get(1..).unwrap_or_default()
            } else {
                chain.as_slice()
            };
            if policy.xff_hops > 0 {
                // Counted hops: at most N addresses after C, whatever they are.
                prop_assert!(walked.len() <= policy.xff_hops + 1, "{:?}", chain);
            } else {
                // The CIDR walk: each hop after R (of the walk) is a trusted proxy.
                for hop in walked.iter().skip(1) {
                    prop_assert!(
                        policy.xff_trusts(*hop),
                        "untrusted hop {} in {:?}",
                        hop,
                        chain
                    );
                }
            }
            if !policy.xff_trusts(c) || connection.via == Via::HealthCheck {
                prop_assert_eq!(walked, &[c][..]);
            }
            // The headers the upstream sees.
            let mut after = host.headers.clone();
            after.apply(&verdict.headers);
            for name in header_names(policy, &host.headers) {
                prop_assert_eq!(
                    lossy(after.get(&name).as_deref()),
                    lossy(expected_header(policy, verdict, &host.headers, &name).as_deref()),
                    "header {}",
                    name
                );
            }
        }
    }
    Ok(())
}

/// What a case exercised, for the generators' coverage checks.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    http: bool,
    rejected: bool,
    shadow: bool,
    proxy: bool,
    moved: bool,
    health_check: bool,
    not_forwardable: bool,
    client_header: bool,
    counted: bool,
    /// Under a policy with the other sources of R (a client header, hops or Forwarded).
    sources: bool,
}

impl Seen {
    fn of(verdict: &Verdict) -> Seen {
        Seen {
            http: verdict.role == Role::Http,
            rejected: matches!(verdict.outcome, Outcome::Rejected(_)),
            shadow: matches!(verdict.outcome, Outcome::Shadow(_)),
            proxy: verdict.connection.via == Via::Proxy && verdict.client.is_some(),
            moved: verdict.client.is_some() && verdict.client != verdict.connection.client,
            health_check: verdict.connection.via == Via::HealthCheck && verdict.client.is_some(),
            not_forwardable: verdict.outcome
                == Outcome::Rejected(RejectReason::ProxyNotForwardable),
            client_header: verdict
                .request
                .as_ref()
                .is_some_and(|q| q.client_header == HeaderUse::Used),
            counted: verdict
                .request
                .as_ref()
                .is_some_and(|q| q.walk_end == WalkEnd::Counted),
            sources: false,
        }
    }
}

// --- Tests ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = Peer::parse(&bytes);
        let _ = parse_element(&bytes);
        let _ = Policy::from_json(&bytes);
        for key in TlvKey::ALL {
            let _ = decode(key, &bytes);
        }
    }

    #[test]
    fn json_like_configs_never_panic(text in r#"\{("[a-z_]{1,12}":("[a-z0-9./:]{0,12}"|\[("[0-9./:a-f]{0,20}",?){0,3}\]|[0-9]{1,6}|\{\}),?){0,4}\}"#) {
        let _ = Policy::from_json(text.as_bytes());
    }
}

/// Bytes that are sometimes what Envoy would give and sometimes anything.
fn bytes_or(valid: impl Strategy<Value = Vec<u8>>, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => valid,
        1 => proptest::collection::vec(any::<u8>(), 0..max),
    ]
}

fn peer_bytes() -> impl Strategy<Value = Vec<u8>> {
    (address(), any::<u16>()).prop_map(|(ip, port)| peer_text(ip, port).into_bytes())
}

#[derive(Debug, Clone)]
struct AnyInputs {
    direct_peer: Option<Vec<u8>>,
    source: Option<Vec<u8>>,
    vpce: Option<Vec<u8>>,
    unique_id: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
}

fn any_inputs() -> impl Strategy<Value = AnyInputs> {
    // D alone, D and P (P often equal to D: no PROXY header), or garbage; sometimes absent.
    let direct_peer = proptest::option::weighted(
        0.9,
        prop_oneof![
            2 => peer_bytes(),
            4 => (peer_bytes(), prop_oneof![1 => Just(None), 1 => peer_bytes().prop_map(Some)])
                .prop_map(|(d, p)| {
                    let mut value = d.clone();
                    value.push(b' ');
                    value.extend_from_slice(p.as_deref().unwrap_or(&d));
                    value
                }),
            1 => proptest::collection::vec(any::<u8>(), 0..48),
            // The load balancer of the policies' first rule, its own address as P (no PROXY
            // header): a health check under HEALTH_POLICY.
            2 => (1u16..=u16::MAX).prop_map(|port| {
                let lb = peer_text(IpAddr::from([127, 0, 0, 5]), port);
                format!("{lb} {lb}").into_bytes()
            }),
            // A peer of the `ignore` rule with a PROXY header: refused under HEALTH_POLICY,
            // which says Envoy sends PROXY upstream.
            1 => (any::<[u8; 2]>(), address()).prop_map(|([c, d], claim)| {
                let peer = peer_text(IpAddr::from([192, 168, c, d]), 40000);
                format!("{peer} {}", peer_text(claim, 1234)).into_bytes()
            }),
        ],
    );
    let source = proptest::option::weighted(0.9, bytes_or(peer_bytes(), 48));
    let vpce = proptest::option::of(prop_oneof![
        2 => Just(aws("vpce-1")),
        1 => Just(aws("vpce-2")),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]);
    let unique_id = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40));
    let header = |name: &'static str, value: BoxedStrategy<Vec<u8>>| {
        proptest::option::of(value.prop_map(move |v| (name, v)))
    };
    let xff = bytes_or(
        xff_lines().prop_map(|(_, lines)| lines.join(",").into_bytes()),
        200,
    )
    .boxed();
    let small = || proptest::collection::vec(any::<u8>(), 0..30).boxed();
    let headers = (
        header("x-forwarded-for", xff),
        header("forwarded", bytes_or(forwarded_line(), 60).boxed()),
        proptest::option::weighted(
            0.85,
            client_header_value().prop_map(|v| ("cf-connecting-ip", v)),
        ),
        header("x-real-ip", small()),
        header("true-client-ip", small()),
        header("x-amzn-vpce-id", small()),
        header("x-unique-id", small()),
        header("user-agent", small()),
        // Every HTTP request has a path; absent only now and then (a host that gives none).
        proptest::option::weighted(0.9, request_path().prop_map(|v| (":path", v))),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i)| {
            [a, b, c, d, e, f, g, h, i].into_iter().flatten().collect()
        });
    (direct_peer, source, vpce, unique_id, headers).prop_map(
        |(direct_peer, source, vpce, unique_id, headers)| AnyInputs {
            direct_peer,
            source,
            vpce,
            unique_id,
            headers,
        },
    )
}

#[test]
fn decisions_never_panic() {
    // Anything the host can hand over gives a verdict that keeps the decision's invariants.
    let policies = [
        policy(POLICY),
        policy(SHADOW_POLICY),
        policy(HEALTH_POLICY),
        policy(SOURCES_POLICY),
        policy(FORWARDED_POLICY),
    ];
    let cases = 1500;
    let seen = check(cases, any_inputs(), |inputs| {
        let mut seen = Vec::new();
        for policy in &policies {
            for role in [Role::Http, Role::Network, Role::Listener] {
                let mut host = Inputs {
                    direct_peer: inputs.direct_peer.clone(),
                    source: inputs.source.clone(),
                    ..Inputs::default()
                };
                if let Some(vpce) = &inputs.vpce {
                    host = host.tlv(TlvKey::AwsVpceId, vpce);
                }
                if let Some(unique_id) = &inputs.unique_id {
                    host = host.tlv(TlvKey::UniqueId, unique_id);
                }
                for (name, value) in &inputs.headers {
                    host.headers.append(name, value);
                }
                let verdict = evaluate(policy, role, &mut host);
                check_verdict(policy, role, &verdict, &host)?;
                let mut this = Seen::of(&verdict);
                this.sources = policy.client_header.is_some();
                seen.push(this);
            }
        }
        Ok(seen)
    });
    let all: Vec<Seen> = seen.into_iter().flatten().collect();
    let total = all.len();
    assert_share(
        all.iter().filter(|s| s.rejected).count(),
        total,
        14,
        "were rejected",
    );
    assert_share(
        all.iter().filter(|s| !s.rejected).count(),
        total,
        35,
        "were accepted",
    );
    assert_share(
        all.iter().filter(|s| s.shadow).count(),
        total,
        7,
        "were shadow rejections",
    );
    assert_share(
        all.iter().filter(|s| s.proxy).count(),
        total,
        7,
        "used the PROXY source",
    );
    let http: Vec<&Seen> = all.iter().filter(|s| s.http).collect();
    assert_share(
        http.iter().filter(|s| s.moved).count(),
        http.len(),
        5,
        "of the HTTP role moved past C by XFF",
    );
    assert_share(
        http.iter().filter(|s| s.health_check).count(),
        http.len(),
        1,
        "of the HTTP role were health checks",
    );
    let sources: Vec<&&Seen> = http.iter().filter(|s| s.sources).collect();
    assert_share(
        sources.iter().filter(|s| s.client_header).count(),
        sources.len(),
        1,
        "of the HTTP role under the other sources took R from a client header",
    );
    assert_share(
        sources.iter().filter(|s| s.counted).count(),
        sources.len(),
        1,
        "of the HTTP role under the other sources counted trusted hops",
    );
    assert_share(
        sources
            .iter()
            .filter(|s| s.moved && !s.client_header)
            .count(),
        sources.len(),
        2,
        "of the HTTP role under the other sources moved past C by a walk",
    );
    assert_share(
        all.iter().filter(|s| s.not_forwardable).count(),
        total,
        1,
        "were PROXY headers not forwardable upstream",
    );
}

/// What a realistic case exercised, and where its walk ended.
type SeenWalk = (Seen, Option<WalkEnd>);

#[derive(Debug, Clone)]
struct Realistic {
    direct: (IpAddr, u16),
    /// `None`: no PROXY header (P = D).
    source: Option<(IpAddr, u16)>,
    vpce: Option<&'static str>,
    hops: Vec<IpAddr>,
    lines: Vec<String>,
    path: &'static str,
}

fn realistic() -> impl Strategy<Value = Realistic> {
    let direct = prop_oneof![
        4 => any::<[u8; 3]>().prop_map(|[b, c, d]| IpAddr::from([10, b, c, d])),
        2 => any::<[u8; 2]>().prop_map(|[c, d]| IpAddr::from([192, 168, c, d])),
        3 => Just(IpAddr::from([127, 0, 0, 5])),
        1 => Just("::1".parse::<IpAddr>().unwrap_or(IpAddr::from([0u8; 4]))),
        1 => (0u8..8).prop_map(|d| IpAddr::from([127, 0, 0, d])),
    ];
    (
        direct,
        1u16..=u16::MAX,
        proptest::option::weighted(0.75, (address(), 1u16..=u16::MAX)),
        proptest::option::weighted(
            0.8,
            prop::sample::select(vec!["vpce-1", "vpce-1", "vpce-2"]),
        ),
        xff_lines(),
        prop::sample::select(vec![
            "/healthz/ready",
            "/ping?x=1",
            "/",
            "/api/orders",
            "/healthz",
        ]),
    )
        .prop_map(|(d, port, source, vpce, (hops, lines), path)| Realistic {
            direct: (d, port),
            source,
            vpce,
            hops,
            lines,
            path,
        })
}

/// The client a reader of the README expects for these inputs under [`POLICY`]: the rule of D
/// gives C (or a rejection); from a trusted C, X-Forwarded-For is walked right to left over
/// trusted addresses, at most `max_entries` elements. Returns the outcome and the chain.
fn model(policy: &Policy, case: &Realistic) -> Result<Vec<IpAddr>, RejectReason> {
    let d = case.direct.0;
    let p = case.source.map_or(d, |(ip, _)| ip);
    let proxy = case.source.is_some_and(|source| source != case.direct);
    let in_net = |ip: IpAddr, net: [u8; 4], bits: u32| match ip {
        IpAddr::V4(v4) => (u32::from(v4) ^ u32::from_be_bytes(net)) >> (32 - bits) == 0,
        IpAddr::V6(_) => false,
    };
    // HEALTH_POLICY: health checks on two paths, and PROXY sent upstream.
    let health = policy.upstream_proxy_protocol;
    let health_path =
        ["/healthz/ready", "/ping"].contains(&case.path.split('?').next().unwrap_or(""));
    let c = if d == IpAddr::from([127, 0, 0, 5]) || d.to_string() == "::1" {
        match (proxy, case.vpce) {
            (false, _) if health && health_path => d,
            (false, _) => return Err(RejectReason::MissingProxy),
            (true, Some("vpce-1")) => p,
            (true, _) => return Err(RejectReason::Tlv),
        }
    } else if in_net(d, [10, 0, 0, 0], 8) {
        p
    } else if in_net(d, [192, 168, 0, 0], 16) {
        if proxy && health {
            return Err(RejectReason::ProxyNotForwardable);
        }
        d
    } else if proxy {
        return Err(RejectReason::UntrustedProxy);
    } else {
        d
    };
    let trusted = |ip: IpAddr| match ip {
        IpAddr::V4(_) => {
            in_net(ip, [10, 0, 0, 0], 8) || (health && ip == IpAddr::from([127, 0, 0, 5]))
        }
        IpAddr::V6(v6) => v6.segments().starts_with(&[0x2001, 0xdb8]),
    };
    let health_check =
        health && !proxy && (d == IpAddr::from([127, 0, 0, 5]) || d.to_string() == "::1");
    let mut chain = vec![c];
    if trusted(c) && !health_check {
        for hop in case.hops.iter().rev().take(policy.xff_max_entries) {
            if chain.last() != Some(hop) {
                chain.push(*hop);
            }
            if !trusted(*hop) {
                break;
            }
        }
    }
    chain.reverse();
    Ok(chain)
}

#[test]
fn realistic_inputs_keep_the_chain_consistent() {
    // Well-formed inputs as a load balancer and proxies send them: the verdict is the one the
    // README's rules give, and the chain runs from R over trusted hops to C.
    let policies = [policy(POLICY), policy(HEALTH_POLICY)];
    let cases = 2000;
    let seen = check(cases, realistic(), |case| {
        let mut seen = Vec::new();
        for policy in &policies {
            let d = peer_text(case.direct.0, case.direct.1);
            let p = case
                .source
                .map_or(d.clone(), |(ip, port)| peer_text(ip, port));
            let mut host = Inputs::with_peers(&d, &p);
            if let Some(id) = case.vpce {
                host = host.tlv(TlvKey::AwsVpceId, &aws(id));
            }
            for line in &case.lines {
                host.headers.append("x-forwarded-for", line.as_bytes());
            }
            host.headers.append(":path", case.path.as_bytes());
            let verdict = evaluate(policy, Role::Http, &mut host);
            check_verdict(policy, Role::Http, &verdict, &host)?;
            match model(policy, &case) {
                Err(reason) => prop_assert_eq!(verdict.outcome, Outcome::Rejected(reason)),
                Ok(chain) => {
                    let request = verdict.request.as_ref().map(|r| &r.chain);
                    prop_assert_eq!(request, Some(&chain));
                    prop_assert_eq!(verdict.client, chain.first().copied());
                    prop_assert_eq!(verdict.connection.client, chain.last().copied());
                }
            }
            seen.push((Seen::of(&verdict), verdict.request.map(|r| r.walk_end)));
        }
        Ok(seen)
    });
    let seen: Vec<SeenWalk> = seen.into_iter().flatten().collect();
    let total = seen.len();
    let count = |f: &dyn Fn(&SeenWalk) -> bool| seen.iter().filter(|s| f(s)).count();
    assert_share(count(&|s| !s.0.rejected), total, 35, "were accepted");
    assert_share(count(&|s| s.0.rejected), total, 15, "were rejected");
    assert_share(count(&|s| s.0.proxy), total, 20, "used the PROXY source");
    assert_share(count(&|s| s.0.moved), total, 12, "moved past C by XFF");
    assert_share(count(&|s| s.0.health_check), total, 1, "were health checks");
    assert_share(
        count(&|s| s.0.not_forwardable),
        total,
        1,
        "were PROXY headers not forwardable upstream",
    );
    assert_share(
        count(&|s| s.1 == Some(WalkEnd::Untrusted)),
        total,
        8,
        "stopped at an untrusted hop",
    );
    assert_share(
        count(&|s| s.1 == Some(WalkEnd::Limit)),
        total,
        2,
        "hit max_entries",
    );
    assert_share(
        count(&|s| s.1 == Some(WalkEnd::AllTrusted)),
        total,
        2,
        "were trusted all along",
    );
    assert_share(
        count(&|s| s.1 == Some(WalkEnd::NotTrusted)),
        total,
        20,
        "had an untrusted C",
    );
}
