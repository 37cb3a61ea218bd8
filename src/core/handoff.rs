//! The connection decision as one line of text, so that the native listener filter can hand it
//! to the native HTTP filter through filter state: the HTTP filter then decides each request
//! from the listener's verdict on the connection instead of judging D and P again (after the
//! listener has set the remote address to C, P is no longer the PROXY header's source).
//!
//! `v1 <policy> <direct> <source> <rule> <flags> <rejection> <client> <tlv>x5`, fields
//! separated by one space; `-` for none; TLV values in hex; `<policy>` a fingerprint of the
//! policy the decision was made with (in hex), so that an HTTP filter configured with another
//! policy does not take a decision it would not have made. The rejection's detail is not
//! carried (the listener logged it). Anything else decodes to `None`.

use std::net::IpAddr;
use std::str::FromStr;

use crate::core::addr::Peer;
use crate::core::config::{Mode, Policy};
use crate::core::decision::{ConnectionDecision, Observed, RejectReason, Rejection, Via};
use crate::core::tlv::TlvKey;

const VERSION: &str = "v1";

fn peer_text(peer: Option<Peer>) -> String {
    peer.map_or_else(|| "-".to_string(), |p| p.to_string())
}

fn hex(text: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        for nibble in [byte >> 4, byte & 0x0f] {
            if let Some(digit) = DIGITS.get(usize::from(nibble)) {
                out.push(char::from(*digit));
            }
        }
    }
    out
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = text
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The decision as the listener publishes it, made with the policy `fingerprint` names.
pub fn encode(decision: &ConnectionDecision, fingerprint: u64) -> String {
    let direct = match decision.direct_peer {
        Observed::Present(peer) => peer.to_string(),
        Observed::Absent => "absent".to_string(),
        Observed::Malformed => "malformed".to_string(),
    };
    let flags = [
        if decision.proxy_present { 'P' } else { '-' },
        match decision.via {
            Via::Proxy => 'p',
            Via::Direct => 'd',
            Via::HealthCheck => 'h',
        },
        if decision.proxy_ignored { 'I' } else { '-' },
    ];
    let mut fields = vec![
        VERSION.to_string(),
        format!("{fingerprint:x}"),
        direct,
        peer_text(decision.source),
        decision
            .rule
            .map_or_else(|| "-".to_string(), |r| r.to_string()),
        flags.iter().collect(),
        decision
            .rejection
            .as_ref()
            .map_or_else(|| "-".to_string(), |r| r.reason.name().to_string()),
        decision
            .client
            .map_or_else(|| "-".to_string(), |ip| ip.to_string()),
    ];
    for key in TlvKey::ALL {
        fields.push(decision.tlv(key).map_or_else(|| "-".to_string(), hex));
    }
    fields.join(" ")
}

/// Why a published decision is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not text [`encode`] writes.
    Unreadable,
    /// Made with another policy than the reader's.
    OtherPolicy,
}

/// The decision the listener published, for this policy (its mode and its `fingerprint`).
pub fn decode(
    policy: &Policy,
    fingerprint: u64,
    text: &[u8],
) -> Result<ConnectionDecision, Refused> {
    let text = std::str::from_utf8(text).map_err(|_| Refused::Unreadable)?;
    let mut fields = text.split(' ');
    if fields.next() != Some(VERSION) {
        return Err(Refused::Unreadable);
    }
    match fields.next().map(|f| u64::from_str_radix(f, 16)) {
        Some(Ok(written)) if written == fingerprint => {}
        Some(Ok(_)) => return Err(Refused::OtherPolicy),
        _ => return Err(Refused::Unreadable),
    }
    parse_fields(policy, fields).ok_or(Refused::Unreadable)
}

fn parse_fields<'a>(
    policy: &Policy,
    mut fields: impl Iterator<Item = &'a str>,
) -> Option<ConnectionDecision> {
    let direct_peer = match fields.next()? {
        "absent" => Observed::Absent,
        "malformed" => Observed::Malformed,
        other => Observed::Present(Peer::parse(other.as_bytes())?),
    };
    let source = match fields.next()? {
        "-" => None,
        other => Some(Peer::parse(other.as_bytes())?),
    };
    let rule = match fields.next()? {
        "-" => None,
        other => Some(
            other
                .parse::<usize>()
                .ok()
                .filter(|r| *r < policy.rules.len())?,
        ),
    };
    let (proxy_present, via, proxy_ignored) = match fields.next()?.as_bytes() {
        [present, via, ignored] => (
            match present {
                b'P' => true,
                b'-' => false,
                _ => return None,
            },
            match via {
                b'p' => Via::Proxy,
                b'd' => Via::Direct,
                b'h' => Via::HealthCheck,
                _ => return None,
            },
            match ignored {
                b'I' => true,
                b'-' => false,
                _ => return None,
            },
        ),
        _ => return None,
    };
    // A health check is a `require` rule's peer without PROXY information, admitted as itself.
    if via == Via::HealthCheck
        && (proxy_present
            || rule
                .and_then(|r| policy.rules.get(r))
                .is_none_or(|r| r.health_check_paths.is_empty()))
    {
        return None;
    }
    let rejection = match fields.next()? {
        "-" => None,
        name => Some(Rejection {
            reason: RejectReason::ALL.into_iter().find(|r| r.name() == name)?,
            detail: None,
        }),
    };
    let client = match fields.next()? {
        "-" => None,
        other => Some(IpAddr::from_str(other).ok()?),
    };
    let mut tlvs: [Option<String>; 5] = Default::default();
    for slot in &mut tlvs {
        *slot = match fields.next()? {
            "-" => None,
            other => Some(unhex(other)?),
        };
    }
    if fields.next().is_some() {
        return None;
    }
    // What decide_connection never writes: a rejection let through in enforce mode, a health
    // check with a rejection or another client than D.
    let enforced_yet_admitted =
        rejection.is_some() && client.is_some() && policy.mode == Mode::Enforce;
    let odd_health_check = via == Via::HealthCheck
        && (rejection.is_some() || client.is_none() || client != direct_peer.peer().map(|d| d.ip));
    if enforced_yet_admitted || odd_health_check {
        return None;
    }
    Some(ConnectionDecision {
        mode: policy.mode,
        direct_peer,
        source,
        rule,
        proxy_present,
        rejection,
        client,
        via,
        proxy_ignored,
        tlvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::{decide_connection, Role};
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const POLICY: &str = r#"{"mode":"shadow","rules":[
        {"from":["127.0.0.5"],"proxy_protocol":"require","tlvs":{"aws_vpce_id":["vpce-1"]}},
        {"from":["127.0.0.6"],"proxy_protocol":"ignore"},
        {"from":["::1"],"proxy_protocol":"use"}],
      "headers":{"tlv":{"aws_vpce_id":"x-vpce","authority":"x-authority"}}}"#;

    fn peer(text: &str) -> Option<Peer> {
        Peer::parse(text.as_bytes())
    }

    #[test]
    fn every_decision_survives_the_handoff() {
        let policy = Policy::from_json(POLICY.as_bytes()).unwrap();
        let mut aws = b"\x01vpce-1".to_vec();
        let authority = b"api.example.com".to_vec();
        let inputs: &[(Observed<Peer>, Option<Peer>, bool)] = &[
            (
                Observed::Present(peer("127.0.0.5:1").unwrap()),
                peer("203.0.113.9:5"),
                true,
            ),
            (
                Observed::Present(peer("127.0.0.5:1").unwrap()),
                peer("203.0.113.9:5"),
                false,
            ),
            (
                Observed::Present(peer("127.0.0.5:1").unwrap()),
                peer("127.0.0.5:1"),
                true,
            ),
            (
                Observed::Present(peer("127.0.0.6:1").unwrap()),
                peer("203.0.113.9:5"),
                true,
            ),
            (
                Observed::Present(peer("127.0.0.66:1").unwrap()),
                peer("203.0.113.9:5"),
                true,
            ),
            (
                Observed::Present(peer("[::1]:1").unwrap()),
                peer("[2001:db8::9]:5"),
                true,
            ),
            (Observed::Absent, peer("203.0.113.9:5"), true),
            (Observed::Malformed, None, true),
        ];
        let mut seen_tlv = false;
        for (direct, source, good_tlv) in inputs {
            if !good_tlv {
                aws = b"\x01vpce-2".to_vec();
            }
            let mut tlvs = |key: TlvKey| match key {
                TlvKey::AwsVpceId => Some(aws.clone()),
                TlvKey::Authority => Some(authority.clone()),
                _ => None,
            };
            let decision = decide_connection(&policy, Role::Listener, *direct, *source, &mut tlvs);
            seen_tlv |= decision.tlv(TlvKey::Authority).is_some();
            let text = encode(&decision, 0xfeed);
            assert!(!text.contains('\n'), "{text}");
            let back = decode(&policy, 0xfeed, text.as_bytes()).unwrap();
            let mut expected = decision.clone();
            if let Some(rejection) = &mut expected.rejection {
                rejection.detail = None;
            }
            assert_eq!(back, expected, "{text}");
        }
        assert!(seen_tlv, "no case carried a TLV value");
    }

    #[test]
    fn health_checks_and_unforwardable_headers_survive_the_handoff() {
        let policy = Policy::from_json(
            br#"{"upstream_proxy_protocol":true,"rules":[
                {"from":["127.0.0.5"],"proxy_protocol":"require","health_check_paths":["/healthz"]},
                {"from":["127.0.0.6"],"proxy_protocol":"ignore"}]}"#,
        )
        .unwrap();
        let mut none = |_: TlvKey| None;
        for (direct, source, via, reason) in [
            ("127.0.0.5:1", "127.0.0.5:1", Via::HealthCheck, None),
            (
                "127.0.0.6:1",
                "203.0.113.9:5",
                Via::Direct,
                Some(RejectReason::ProxyNotForwardable),
            ),
        ] {
            let decision = decide_connection(
                &policy,
                Role::Listener,
                Observed::Present(peer(direct).unwrap()),
                peer(source),
                &mut none,
            );
            assert_eq!(decision.via, via);
            assert_eq!(decision.rejection.as_ref().map(|r| r.reason), reason);
            let text = encode(&decision, 7);
            let mut expected = decision.clone();
            if let Some(rejection) = &mut expected.rejection {
                rejection.detail = None;
            }
            assert_eq!(decode(&policy, 7, text.as_bytes()), Ok(expected), "{text}");
        }
    }

    #[test]
    fn decisions_the_listener_never_writes_are_refused() {
        let enforce = Policy::from_json(
            br#"{"rules":[{"from":["10.0.0.0/8"],"proxy_protocol":"require","health_check_paths":["/h"]},
                          {"from":["192.168.0.0/16"],"proxy_protocol":"require"}]}"#,
        )
        .unwrap();
        let tail = "- - - - -";
        for text in [
            // A health check with a PROXY header, another client than D, a rejection, or a
            // rule without health-check paths.
            format!("v1 9 10.0.0.5:1 203.0.113.9:2 0 Ph- - 203.0.113.9 {tail}"),
            format!("v1 9 10.0.0.5:1 10.0.0.5:1 0 -h- - 198.51.100.1 {tail}"),
            format!("v1 9 10.0.0.5:1 10.0.0.5:1 0 -h- missing_proxy 10.0.0.5 {tail}"),
            format!("v1 9 192.168.0.5:1 192.168.0.5:1 1 -h- - 192.168.0.5 {tail}"),
            format!("v1 9 10.0.0.5:1 10.0.0.5:1 - -h- - 10.0.0.5 {tail}"),
            // A rejection with a client, in enforce mode.
            format!("v1 9 10.0.0.5:1 10.0.0.5:1 0 -d- missing_proxy 10.0.0.5 {tail}"),
        ] {
            assert_eq!(
                decode(&enforce, 9, text.as_bytes()),
                Err(Refused::Unreadable),
                "{text}"
            );
        }
        // The genuine health check decodes.
        let good = format!("v1 9 10.0.0.5:1 10.0.0.5:1 0 -h- - 10.0.0.5 {tail}");
        assert!(decode(&enforce, 9, good.as_bytes()).is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        let policy = Policy::from_json(POLICY.as_bytes()).unwrap();
        let good = "v1 2a 127.0.0.5:1 203.0.113.9:5 0 Pp- - 203.0.113.9 - - - - -";
        assert!(decode(&policy, 42, good.as_bytes()).is_ok());
        // The same decision, made with another policy.
        assert_eq!(
            decode(&policy, 43, good.as_bytes()),
            Err(Refused::OtherPolicy)
        );
        for bad in [
            "",
            "v2 2a 127.0.0.5:1 203.0.113.9:5 0 Pp- - 203.0.113.9 - - - - -",
            "v1 zz 127.0.0.5:1 203.0.113.9:5 0 Pp- - 203.0.113.9 - - - - -",
            "v1 2a 127.0.0.5:1 203.0.113.9:5 3 Pp- - 203.0.113.9 - - - - -", // no rule 3
            "v1 2a 127.0.0.5:1 203.0.113.9:5 0 Px- - 203.0.113.9 - - - - -",
            "v1 2a 127.0.0.5:1 203.0.113.9:5 0 Pp- nope 203.0.113.9 - - - - -",
            "v1 2a 127.0.0.5:1 203.0.113.9:5 0 Pp- - 203.0.113.999 - - - - -",
            "v1 2a 127.0.0.5:1 203.0.113.9:5 0 Pp- - 203.0.113.9 - - - - abc",
            "v1 2a 127.0.0.5:1 203.0.113.9:5 0 Pp- - 203.0.113.9 - - - - - extra",
            "v1 2a 127.0.0.5:1 203.0.113.9:5 0 Pp- - 203.0.113.9 - - - -",
        ] {
            assert_eq!(
                decode(&policy, 42, bad.as_bytes()),
                Err(Refused::Unreadable),
                "{bad}"
            );
        }
        assert_eq!(decode(&policy, 42, b"v1 2a \xff"), Err(Refused::Unreadable));
    }
}
