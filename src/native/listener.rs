//! `trustip-listener`: decides once per connection from D and P read natively, closes a refused
//! socket, sets the remote address to C and hands the decision on in filter state.

use std::net::IpAddr;

use crate::core::addr::Peer;
use crate::core::decision::Role;
use crate::core::handoff;
use crate::core::names;
use crate::core::tlv::TlvKey;
use crate::core::verdict::{evaluate, Action, Host, Verdict};
use crate::native::config::NativeConfig;
use crate::native::ops::{Address, ConnectionOps, ListenerOps, TlvState};

/// The core's [`Host`] over a per-connection filter: D and P as one value, the TLVs from
/// proxy_protocol's dynamic metadata or, failing that, its filter state (read once).
pub struct ConnectionHost<'a, O: ConnectionOps> {
    pub ops: &'a mut O,
    pub direct: Option<Address>,
    pub remote: Option<Address>,
    tlv_state: TlvState,
}

impl<'a, O: ConnectionOps> ConnectionHost<'a, O> {
    pub fn new(ops: &'a mut O) -> Self {
        let direct = ops.direct_remote();
        let remote = ops.remote();
        ConnectionHost {
            ops,
            direct,
            remote,
            tlv_state: TlvState::default(),
        }
    }
}

impl<O: ConnectionOps> Host for ConnectionHost<'_, O> {
    fn direct_peer(&mut self, _key: &str) -> Option<Vec<u8>> {
        let direct = self.direct.as_ref()?.to_peer_text();
        Some(match &self.remote {
            Some(remote) => format!("{direct} {}", remote.to_peer_text()).into_bytes(),
            None => direct.into_bytes(),
        })
    }

    fn source(&mut self) -> Option<Vec<u8>> {
        self.remote.as_ref().map(|r| r.to_peer_text().into_bytes())
    }

    fn header(&mut self, _name: &str) -> Option<Vec<u8>> {
        None
    }

    fn tlv(&mut self, key: TlvKey) -> Option<Vec<u8>> {
        if let Some(value) = self
            .ops
            .metadata_string(names::PROXY_PROTOCOL_METADATA, key.name())
        {
            return Some(value);
        }
        let ops = &mut self.ops;
        self.tlv_state
            .tlv(key, || ops.filter_state_typed(names::TLV_FILTER_STATE))
    }
}

/// Publishes the decision for the access log (and, from the listener, for the HTTP filter).
/// `handoff`: the fingerprint of the policy, when the decision is also handed to the HTTP filter.
pub fn publish(ops: &mut impl ConnectionOps, verdict: &Verdict, handoff: Option<u64>) {
    ops.set_filter_state(names::CONNECTION_REASON_STATE, verdict.reason().as_bytes());
    if let Some(client) = verdict.client_text() {
        ops.set_filter_state(names::CONNECTION_CLIENT_IP_STATE, &client);
    }
    if let Some(fingerprint) = handoff {
        ops.set_filter_state(
            names::DECISION_FILTER_STATE,
            handoff::encode(&verdict.connection, fingerprint).as_bytes(),
        );
    }
}

/// Decides a connection for a per-connection filter (listener or network): logs and counts,
/// closes a refused connection after publishing its reason, and otherwise returns the verdict
/// with D and P as Envoy reported them.
pub fn decide_connection<'p>(
    config: &'p NativeConfig,
    role: Role,
    ops: &mut impl ConnectionOps,
    log: &mut impl FnMut(&str),
) -> Option<(Verdict<'p>, Option<Address>, Option<Address>)> {
    let mut host = ConnectionHost::new(ops);
    let verdict = evaluate(&config.policy, role, &mut host);
    let (direct, remote) = (host.direct.take(), host.remote.take());
    config.report(&verdict, log, &mut |id, by| ops.increment(id, by));
    if verdict.action != Action::Continue {
        // The reason reaches the connection's access log too (there is no client to publish).
        publish(ops, &verdict, None);
        ops.close(&format!("trustip_{}", verdict.reason()));
        return None;
    }
    Some((verdict, direct, remote))
}

/// `on_accept`: true to continue the listener filter chain, false when the socket was closed.
pub fn on_accept(
    config: &NativeConfig,
    ops: &mut impl ListenerOps,
    log: &mut impl FnMut(&str),
) -> bool {
    let Some((verdict, direct, remote)) = decide_connection(config, Role::Listener, ops, log)
    else {
        return false;
    };
    if let Some(client) = verdict.client {
        let current = remote.as_ref().and_then(address_ip);
        if current != Some(client) {
            // C is the PROXY source or the peer: keep that address's port.
            let port = [&remote, &direct]
                .into_iter()
                .flatten()
                .find(|a| address_ip(a) == Some(client))
                .map_or(0, |a| a.port);
            if !ops.set_remote(client, port) {
                log("trustip: listener: Envoy refused to set the remote address; closing");
                ops.close("trustip_set_remote_address_failed");
                return false;
            }
        }
    }
    publish(ops, &verdict, Some(config.fingerprint));
    true
}

fn address_ip(address: &Address) -> Option<IpAddr> {
    Peer::parse(address.to_peer_text().as_bytes()).map(|p| p.ip)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::core::decision::Counter;

    /// An in-memory connection: what Envoy would report, and what the filter did.
    #[derive(Default)]
    pub struct FakeConnection {
        pub direct: Option<Address>,
        pub remote: Option<Address>,
        pub metadata: Vec<(String, Vec<u8>)>,
        pub tlv_state: Option<Vec<u8>>,
        pub state: Vec<(String, Vec<u8>)>,
        pub closed: Option<String>,
        pub set_remote: Option<(IpAddr, u32)>,
        pub counters: Vec<(usize, u64)>,
        pub reads: usize,
    }

    pub fn address(ip: &str, port: u32) -> Option<Address> {
        Some(Address {
            ip: ip.to_string(),
            port,
        })
    }

    impl FakeConnection {
        pub fn state(&self, key: &str) -> Option<String> {
            self.state
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        }
    }

    impl ConnectionOps for FakeConnection {
        fn direct_remote(&mut self) -> Option<Address> {
            self.reads += 1;
            self.direct.clone()
        }
        fn remote(&mut self) -> Option<Address> {
            self.reads += 1;
            self.remote.clone()
        }
        fn metadata_string(&mut self, namespace: &str, key: &str) -> Option<Vec<u8>> {
            self.reads += 1;
            assert_eq!(namespace, names::PROXY_PROTOCOL_METADATA);
            self.metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        }
        fn filter_state_typed(&mut self, key: &str) -> Option<Vec<u8>> {
            self.reads += 1;
            assert_eq!(key, names::TLV_FILTER_STATE);
            self.tlv_state.clone()
        }
        fn set_filter_state(&mut self, key: &str, value: &[u8]) {
            self.state.push((key.to_string(), value.to_vec()));
        }
        fn close(&mut self, details: &str) {
            self.closed = Some(details.to_string());
        }
        fn increment(&mut self, counter_id: usize, by: u64) {
            self.counters.push((counter_id, by));
        }
    }

    impl ListenerOps for FakeConnection {
        fn set_remote(&mut self, ip: IpAddr, port: u32) -> bool {
            self.set_remote = Some((ip, port));
            true
        }
    }

    pub fn config(role: Role, policy: &str) -> NativeConfig {
        NativeConfig::new(
            role,
            crate::native::config::filter_name(role).as_bytes(),
            policy.as_bytes(),
            |name| Counter::all().position(|c| names::native_counter_name(role, c) == name),
        )
        .unwrap()
    }

    const POLICY: &str = r#"{"rules":[
        {"from":["127.0.0.5"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
        {"from":["127.0.0.6"],"proxy_protocol":"ignore"}]}"#;

    fn run(connection: &mut FakeConnection, policy: &str) -> (bool, Vec<String>) {
        let config = config(Role::Listener, policy);
        let mut lines = Vec::new();
        let go_on = on_accept(&config, connection, &mut |line: &str| {
            lines.push(line.to_string())
        });
        (go_on, lines)
    }

    fn counter_id(counter: Counter) -> usize {
        counter.index()
    }

    #[test]
    fn an_allowed_proxy_source_becomes_the_remote_address_it_already_is() {
        let mut connection = FakeConnection {
            direct: address("127.0.0.5", 4000),
            remote: address("203.0.113.9", 5555),
            metadata: vec![("aws_vpce_id".to_string(), b"\x01vpce-1".to_vec())],
            ..FakeConnection::default()
        };
        let (go_on, lines) = run(&mut connection, POLICY);
        assert!(go_on);
        assert!(lines.is_empty());
        assert_eq!(connection.closed, None);
        assert_eq!(
            connection.set_remote, None,
            "P is already the remote address"
        );
        assert_eq!(
            connection.state("trustip.connection.client_ip").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            connection.state("trustip.connection.reason").as_deref(),
            Some("proxy")
        );
        assert!(connection
            .state("trustip.decision")
            .unwrap()
            .starts_with("v1 "));
        assert_eq!(
            connection.counters,
            vec![(counter_id(Counter::AcceptProxy), 1)]
        );
    }

    #[test]
    fn tlvs_come_from_filter_state_when_not_in_metadata() {
        let mut connection = FakeConnection {
            direct: address("127.0.0.5", 4000),
            remote: address("203.0.113.9", 5555),
            tlv_state: Some(br#"{"aws_vpce_id":"\u0001vpce-2"}"#.to_vec()),
            ..FakeConnection::default()
        };
        let (go_on, lines) = run(&mut connection, POLICY);
        assert!(!go_on);
        assert_eq!(connection.closed.as_deref(), Some("trustip_tlv"));
        assert!(
            lines[0].contains("reject tlv (aws_vpce_id \"vpce-2\" not allowed)"),
            "{lines:?}"
        );
        assert_eq!(
            connection.counters,
            vec![(
                counter_id(Counter::Reject(crate::core::decision::RejectReason::Tlv)),
                1
            )]
        );
    }

    #[test]
    fn an_ignored_or_untrusted_claim_is_replaced_by_the_peer() {
        for (peer, shadow) in [("127.0.0.6", false), ("127.0.0.66", true)] {
            let mut connection = FakeConnection {
                direct: address(peer, 4000),
                remote: address("203.0.113.9", 5555),
                ..FakeConnection::default()
            };
            let policy = if shadow {
                r#"{"mode":"shadow"}"#
            } else {
                POLICY
            };
            let (go_on, _) = run(&mut connection, policy);
            assert!(go_on);
            assert_eq!(connection.set_remote, Some((peer.parse().unwrap(), 4000)));
            assert_eq!(
                connection.state("trustip.connection.client_ip").as_deref(),
                Some(peer)
            );
        }
    }

    #[test]
    fn a_spoofing_peer_is_closed_and_nothing_is_published() {
        let mut connection = FakeConnection {
            direct: address("127.0.0.66", 4000),
            remote: address("203.0.113.9", 5555),
            ..FakeConnection::default()
        };
        let (go_on, lines) = run(&mut connection, "{}");
        assert!(!go_on);
        assert_eq!(
            connection.closed.as_deref(),
            Some("trustip_untrusted_proxy")
        );
        assert_eq!(connection.set_remote, None);
        // Only the reason is published: no client, no decision for an HTTP filter.
        assert_eq!(
            connection.state("trustip.connection.reason").as_deref(),
            Some("untrusted_proxy")
        );
        assert_eq!(connection.state("trustip.connection.client_ip"), None);
        assert_eq!(connection.state("trustip.decision"), None);
        assert_eq!(
            lines,
            vec!["trustip[listener ctx 0]: reject untrusted_proxy: direct_peer=127.0.0.66:4000 source=203.0.113.9:5555 rule=implicit"]
        );
    }

    #[test]
    fn ipv6_addresses_reach_the_core_bracketed() {
        let mut connection = FakeConnection {
            direct: address("::1", 4000),
            remote: address("2001:db8::9", 5555),
            ..FakeConnection::default()
        };
        let (go_on, _) = run(
            &mut connection,
            r#"{"rules":[{"from":["::1"],"proxy_protocol":"use"}]}"#,
        );
        assert!(go_on);
        assert_eq!(
            connection.state("trustip.connection.client_ip").as_deref(),
            Some("2001:db8::9")
        );
    }
}
