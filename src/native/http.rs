//! `trustip-http`: the request part of the decision (X-Forwarded-For walk, header plan, local
//! reply), from the listener filter's decision on the connection when it ran, deciding the
//! connection itself from D and P when it runs alone.

use crate::core::decision::Role;
use crate::core::handoff;
use crate::core::headers::HeaderOp;
use crate::core::names;
use crate::core::tlv::TlvKey;
use crate::core::verdict::{evaluate, evaluate_request, local_reply_body, Action, Host};
use crate::native::config::NativeConfig;
use crate::native::ops::{HttpOps, TlvState};

struct StreamHost<'a, O: HttpOps> {
    ops: &'a mut O,
    tlv_state: TlvState,
    /// False after the listener filter's decision was refused: the listener has set the remote
    /// address (so `source.address` is its C, or the HCM's X-Forwarded-For-derived address), and
    /// neither may pose as a PROXY source: P is then D.
    trust_source: bool,
}

impl<O: HttpOps> Host for StreamHost<'_, O> {
    /// D, and P with it, from `direct_peer.filter_state` when a set_filter_state network filter
    /// recorded them as the connection opened (as for the wasm build); else D natively, and P
    /// then comes from `source.address`, which the HTTP connection manager derives from
    /// X-Forwarded-For when `use_remote_address` is false: run the listener filter, or keep
    /// `use_remote_address: true`, or record D and P in filter state.
    fn direct_peer(&mut self, key: &str) -> Option<Vec<u8>> {
        if !self.trust_source {
            return self.ops.direct_remote();
        }
        self.ops
            .filter_state_bytes(key)
            .or_else(|| self.ops.direct_remote())
    }

    fn source(&mut self) -> Option<Vec<u8>> {
        if self.trust_source {
            self.ops.source_address()
        } else {
            None
        }
    }

    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.ops.header(name)
    }

    fn tlv(&mut self, key: TlvKey) -> Option<Vec<u8>> {
        let ops = &mut self.ops;
        self.tlv_state
            .tlv(key, || ops.filter_state_typed(names::TLV_FILTER_STATE))
    }
}

/// `on_request_headers`: true to continue, false when the request was answered locally.
pub fn on_request_headers(
    config: &NativeConfig,
    ops: &mut impl HttpOps,
    log: &mut impl FnMut(&str),
) -> bool {
    let policy = &config.policy;
    let prior = ops.filter_state_bytes(names::DECISION_FILTER_STATE);
    let mut host = StreamHost {
        ops,
        tlv_state: TlvState::default(),
        trust_source: true,
    };
    let prior = prior
        .as_deref()
        .map(|bytes| handoff::decode(policy, config.fingerprint, bytes));
    let verdict = match prior {
        Some(Ok(connection)) => evaluate_request(policy, connection, &mut host),
        Some(Err(why)) => {
            log(match why {
                handoff::Refused::OtherPolicy => {
                    "trustip: http: the listener filter decided with another policy than this \
                     filter's; deciding again from the TCP peer alone (give both filters the \
                     same policy text)"
                }
                handoff::Refused::Unreadable => {
                    "trustip: http: the listener filter's decision is unreadable; deciding again \
                     from the TCP peer alone"
                }
            });
            host.trust_source = false;
            evaluate(policy, Role::Http, &mut host)
        }
        None => evaluate(policy, Role::Http, &mut host),
    };
    config.report(&verdict, log, &mut |id, by| ops.increment(id, by));
    for op in &verdict.headers {
        match op {
            HeaderOp::Set(name, value) if !value.is_empty() => ops.set_header(name, value),
            // Envoy's set_header removes a header given an empty value: say so explicitly.
            HeaderOp::Set(name, _) | HeaderOp::Remove(name) => ops.remove_header(name),
        }
    }
    ops.set_filter_state(names::REASON_PROPERTY, verdict.reason().as_bytes());
    if let Some(client) = verdict.client_text() {
        ops.set_filter_state(names::CLIENT_IP_PROPERTY, &client);
    }
    match verdict.action {
        Action::Continue => true,
        Action::Respond { status } => {
            let reason = verdict.reason();
            ops.send_response(
                status,
                &[
                    ("content-type", "text/plain"),
                    (names::REJECT_HEADER, reason),
                ],
                local_reply_body(reason).as_bytes(),
            );
            false
        }
        Action::Close => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::Counter;
    use crate::native::fuzz_checks::FakeStream;
    use crate::native::listener::on_accept;
    use crate::native::listener::tests::{address, config, FakeConnection};

    const POLICY: &str = r#"{"mode":"shadow","xff":{"trusted":["10.0.0.0/8"]},
        "headers":{"set":["x-envoy-external-address","x-real-ip"]}}"#;

    #[test]
    fn alone_it_decides_the_connection_and_rejects_locally() {
        let config = config(Role::Http, r#"{"reject_status":429}"#);
        let mut stream = FakeStream {
            direct: Some(b"127.0.0.66:1".to_vec()),
            source: Some(b"203.0.113.9:2".to_vec()),
            ..FakeStream::default()
        };
        stream.headers.append("x-forwarded-for", b"1.1.1.1");
        assert!(!on_request_headers(&config, &mut stream, &mut |_: &str| {}));
        let (status, headers, body) = stream.response.unwrap();
        assert_eq!(status, 429);
        assert!(headers.contains(&(
            "x-trustip-reject".to_string(),
            "untrusted_proxy".to_string()
        )));
        assert_eq!(body, b"trustip: rejected (untrusted_proxy)\n");
        assert_eq!(
            stream.headers.get("x-forwarded-for"),
            Some(b"1.1.1.1".to_vec())
        );
    }

    #[test]
    fn after_the_listener_it_keeps_the_listener_s_shadow_decision() {
        // The listener saw an untrusted PROXY claim in shadow mode and set the remote address
        // back to the peer: alone, the HTTP filter would see no PROXY at all.
        let listener = config(Role::Listener, POLICY);
        let mut connection = FakeConnection {
            direct: address("10.1.2.3", 1),
            remote: address("203.0.113.9", 2),
            ..FakeConnection::default()
        };
        assert!(on_accept(&listener, &mut connection, &mut |_: &str| {}));
        let config = config(Role::Http, POLICY);
        let mut stream = FakeStream {
            direct: Some(b"10.1.2.3:1".to_vec()),
            source: Some(b"10.1.2.3:1".to_vec()),
            state: connection.state.clone(),
            ..FakeStream::default()
        };
        stream.headers.append("x-forwarded-for", b"198.51.100.7");
        stream.headers.append("x-real-ip", b"6.6.6.6");
        assert!(on_request_headers(&config, &mut stream, &mut |_: &str| {}));
        assert_eq!(
            stream.filter_state_bytes("trustip.reason").as_deref(),
            Some(&b"shadow_untrusted_proxy"[..])
        );
        // C = the peer 10.1.2.3 is trusted: the walk reaches 198.51.100.7.
        assert_eq!(
            stream.headers.get("x-real-ip"),
            Some(b"198.51.100.7".to_vec())
        );
        assert_eq!(
            stream.headers.get("x-forwarded-for"),
            Some(b"198.51.100.7, 10.1.2.3".to_vec())
        );
        assert_eq!(
            stream.counters,
            vec![
                (
                    Counter::Shadow(crate::core::decision::RejectReason::UntrustedProxy).index(),
                    1
                ),
                (Counter::AcceptXff.index(), 1)
            ]
        );
    }

    #[test]
    fn a_health_check_handed_over_by_the_listener_passes_on_its_paths_only() {
        let policy = r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"require","health_check_paths":["/healthz/ready"]}]}"#;
        let listener = config(Role::Listener, policy);
        let mut connection = FakeConnection {
            direct: address("127.0.0.5", 1),
            remote: address("127.0.0.5", 1),
            ..FakeConnection::default()
        };
        assert!(on_accept(&listener, &mut connection, &mut |_: &str| {}));
        let config = config(Role::Http, policy);
        for (path, passes) in [(&b"/healthz/ready?x=1"[..], true), (b"/admin", false)] {
            let mut stream = FakeStream {
                direct: Some(b"127.0.0.5:1".to_vec()),
                source: Some(b"127.0.0.5:1".to_vec()),
                state: connection.state.clone(),
                ..FakeStream::default()
            };
            stream.headers.append(":path", path);
            assert_eq!(
                on_request_headers(&config, &mut stream, &mut |_: &str| {}),
                passes
            );
            let reason = stream.filter_state_bytes("trustip.reason");
            if passes {
                assert_eq!(reason.as_deref(), Some(&b"health_check"[..]));
                assert_eq!(
                    stream.counters,
                    vec![(Counter::AcceptHealthCheck.index(), 1)]
                );
                assert!(stream.response.is_none());
            } else {
                assert_eq!(reason.as_deref(), Some(&b"missing_proxy"[..]));
                assert_eq!(stream.response.map(|r| r.0), Some(403));
            }
        }
    }

    #[test]
    fn a_decision_made_with_another_policy_is_not_taken() {
        // The listener and the HTTP filter both let everyone use PROXY, but their policy texts
        // differ (spacing): the listener's decision is refused, and the HTTP filter decides again
        // from the TCP peer alone: neither the address the listener set nor the HCM's
        // X-Forwarded-For-derived `source.address` may pose as a PROXY source.
        let listener = config(
            Role::Listener,
            r#"{"rules":[{"from":["0.0.0.0/0"],"proxy_protocol":"use"}]}"#,
        );
        let mut connection = FakeConnection {
            direct: address("127.0.0.66", 1),
            remote: address("203.0.113.9", 2),
            ..FakeConnection::default()
        };
        assert!(on_accept(&listener, &mut connection, &mut |_: &str| {}));
        let config = config(
            Role::Http,
            r#"{"rules": [{"from": ["0.0.0.0/0"], "proxy_protocol": "use"}]}"#,
        );
        let mut stream = FakeStream {
            direct: Some(b"127.0.0.66:1".to_vec()),
            source: Some(b"6.6.6.6:2".to_vec()),
            state: connection.state.clone(),
            ..FakeStream::default()
        };
        let mut lines = Vec::new();
        assert!(on_request_headers(&config, &mut stream, &mut |l: &str| {
            lines.push(l.to_string())
        }));
        assert!(lines[0].contains("another policy"), "{lines:?}");
        assert_eq!(
            stream.filter_state_bytes("trustip.client_ip").as_deref(),
            Some(&b"127.0.0.66"[..])
        );
        assert_eq!(
            stream.headers.get("x-envoy-external-address"),
            Some(b"127.0.0.66".to_vec())
        );
    }

    #[test]
    fn an_unreadable_handoff_is_logged_and_decided_again() {
        let config = config(Role::Http, "{}");
        let mut stream = FakeStream {
            direct: Some(b"127.0.0.66:1".to_vec()),
            source: Some(b"127.0.0.66:1".to_vec()),
            ..FakeStream::default()
        };
        stream.set_filter_state("trustip.decision", b"garbage");
        let mut lines = Vec::new();
        assert!(on_request_headers(&config, &mut stream, &mut |l: &str| {
            lines.push(l.to_string())
        }));
        assert!(lines[0].contains("unreadable"));
    }
}
