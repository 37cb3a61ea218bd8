//! Property tests: arbitrary bytes never panic any parser or the decision, and the CIDR table
//! agrees with a linear scan.

use proptest::prelude::*;

use crate::core::addr::Peer;
use crate::core::config::Policy;
use crate::core::decision::{decide_connection, Observed, Role};
use crate::core::headers::HeaderList;
use crate::core::tlv::{decode, TlvKey};
use crate::core::xff::parse_element;

const POLICY: &str = r#"{"mode":"enforce","rules":[
  {"from":["127.0.0.5","::1"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
  {"from":["10.0.0.0/8"],"proxy_protocol":"use"},
  {"from":["192.168.0.0/16"],"proxy_protocol":"ignore"}],
  "xff":{"trusted":["10.0.0.0/8","2001:db8::/32"],"max_entries":8},
  "headers":{"x_forwarded_for":"append","forwarded":"append","set":["x-real-ip"],
             "tlv":{"aws_vpce_id":"x-amzn-vpce-id","unique_id":"x-unique-id"}}}"#;

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

    #[test]
    fn decisions_never_panic(
        direct in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48)),
        source in proptest::collection::vec(any::<u8>(), 0..48),
        tlv in proptest::collection::vec(any::<u8>(), 0..40),
        xff in proptest::collection::vec(any::<u8>(), 0..200),
        forwarded in proptest::collection::vec(any::<u8>(), 0..60),
    ) {
        let policy = Policy::from_json(POLICY.as_bytes()).unwrap();
        let mut tlvs = |_key: TlvKey| Some(tlv.clone());
        for role in [Role::Http, Role::Network] {
            let connection = decide_connection(
                &policy,
                role,
                Observed::from_bytes(direct.as_deref()),
                Peer::parse(&source),
                &mut tlvs,
            );
            let mut headers = HeaderList::new();
            headers.append("x-forwarded-for", &xff);
            headers.append("forwarded", &forwarded);
            let decision = crate::core::decision::tests::plan_and_apply(&policy, connection, &mut headers);
            // A rejected request has no client; an accepted one always has one.
            prop_assert_eq!(decision.client.is_none(), decision.rejected());
        }
    }

    #[test]
    fn realistic_inputs_keep_the_chain_consistent(
        d in 0u8..8, p in any::<[u8; 4]>(), hops in proptest::collection::vec(any::<[u8; 4]>(), 0..12),
    ) {
        let policy = Policy::from_json(POLICY.as_bytes()).unwrap();
        let direct = Peer::parse(format!("127.0.0.{d}:1000").as_bytes()).unwrap();
        let source = Peer::parse(format!("{}.{}.{}.{}:2000", p[0], p[1], p[2], p[3]).as_bytes()).unwrap();
        let xff: Vec<String> = hops.iter().map(|h| format!("{}.{}.{}.{}", h[0], h[1], h[2], h[3])).collect();
        let connection = decide_connection(&policy, Role::Http, Observed::Present(direct), Some(source), &mut |_| None);
        let mut headers = HeaderList::new();
        headers.append("x-forwarded-for", xff.join(", ").as_bytes());
        let decision = crate::core::decision::tests::plan_and_apply(&policy, connection, &mut headers);
        if let Some(client) = decision.client {
            // R opens the chain and C closes it; every hop after R is trusted.
            prop_assert_eq!(decision.chain.first().copied(), Some(client));
            prop_assert_eq!(decision.chain.last().copied(), decision.connection.client);
            for hop in decision.chain.iter().skip(1).take(decision.chain.len().saturating_sub(2)) {
                prop_assert!(policy.xff_trusts(*hop));
            }
        }
    }
}
