//! `trustip-network`: the listener filter's decision as a network filter (for chains where a
//! listener filter cannot be added): closes a refused connection before any byte goes on.

use crate::core::decision::Role;
use crate::native::config::NativeConfig;
use crate::native::listener::{decide_connection, publish};
use crate::native::ops::ConnectionOps;

/// `on_new_connection`: true to go on, false when the connection was closed.
pub fn on_new_connection(
    config: &NativeConfig,
    ops: &mut impl ConnectionOps,
    log: &mut impl FnMut(&str),
) -> bool {
    match decide_connection(config, Role::Network, ops, log) {
        Some((verdict, _, _)) => {
            publish(ops, &verdict, None);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::listener::tests::{address, config, FakeConnection};

    #[test]
    fn refuses_a_spoofing_peer_and_accepts_the_load_balancer() {
        let config = config(
            Role::Network,
            r#"{"rules":[{"from":["127.0.0.5"],"proxy_protocol":"require"}]}"#,
        );
        let mut lines = Vec::new();
        let mut attacker = FakeConnection {
            direct: address("127.0.0.66", 1),
            remote: address("203.0.113.9", 2),
            ..FakeConnection::default()
        };
        assert!(!on_new_connection(
            &config,
            &mut attacker,
            &mut |l: &str| lines.push(l.to_string())
        ));
        assert_eq!(attacker.closed.as_deref(), Some("trustip_untrusted_proxy"));
        assert!(lines[0].starts_with("trustip[network ctx 0]: reject untrusted_proxy"));

        let mut lb = FakeConnection {
            direct: address("127.0.0.5", 1),
            remote: address("203.0.113.9", 2),
            ..FakeConnection::default()
        };
        assert!(on_new_connection(&config, &mut lb, &mut |_: &str| {}));
        assert_eq!(lb.closed, None);
        assert_eq!(
            lb.state("trustip.connection.client_ip").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(lb.state("trustip.decision"), None);
    }
}
