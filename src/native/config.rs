//! A native filter's configuration: its role (from `filter_name`), the compiled policy (from
//! `filter_config`), its counters. Built once on Envoy's main thread and shared, immutable, by
//! every worker thread.

use std::sync::{Arc, Mutex, Weak};

use crate::core::config::Policy;
use crate::core::decision::{Counter, Role};
use crate::core::names;
use crate::core::verdict::Verdict;

pub struct NativeConfig {
    pub role: Role,
    /// Shared with every other filter configuration of the same policy text (a listener and
    /// an HTTP filter usually carry the same policy: with 10,000 CIDRs it is compiled once).
    pub policy: Arc<Policy>,
    /// Names the policy text in the listener's hand-off (`core::handoff`): an HTTP filter
    /// configured with another policy decides again instead of taking the listener's decision.
    pub fingerprint: u64,
    counters: [Option<usize>; Counter::COUNT],
}

/// `filter_name` must name the filter type that loads it (one line otherwise).
fn check_filter_name(expected: Role, name: &[u8]) -> Result<(), String> {
    let wanted = filter_name(expected);
    if name == wanted.as_bytes() {
        return Ok(());
    }
    Err(format!(
        "trustip: invalid configuration: filter_name: {}: must be \"{wanted}\" for the {} filter",
        crate::core::config::quoted(&String::from_utf8_lossy(name)),
        expected.name()
    ))
}

pub fn filter_name(role: Role) -> &'static str {
    match role {
        Role::Listener => names::LISTENER_FILTER_NAME,
        Role::Network => names::NETWORK_FILTER_NAME,
        Role::Http => names::HTTP_FILTER_NAME,
    }
}

/// Policies compiled by live configurations, by their exact text (configurations are created
/// on Envoy's main thread; the lock is never contended).
static COMPILED: Mutex<Vec<(Vec<u8>, Weak<Policy>)>> = Mutex::new(Vec::new());

fn shared_policy(config: &[u8]) -> Result<Arc<Policy>, String> {
    let mut compiled = COMPILED.lock().ok();
    if let Some(compiled) = compiled.as_mut() {
        compiled.retain(|(_, policy)| policy.strong_count() > 0);
        if let Some(policy) = compiled
            .iter()
            .find(|(text, _)| text.as_slice() == config)
            .and_then(|(_, policy)| policy.upgrade())
        {
            return Ok(policy);
        }
    }
    let policy = Arc::new(
        Policy::from_json(config)
            .map_err(|err| format!("trustip: invalid configuration: {err}"))?,
    );
    if let Some(compiled) = compiled.as_mut() {
        compiled.push((config.to_vec(), Arc::downgrade(&policy)));
    }
    Ok(policy)
}

/// FNV-1a over the policy text: the same text gives the same fingerprint in every filter.
fn fingerprint(config: &[u8]) -> u64 {
    config.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl NativeConfig {
    /// Checks `filter_name` against the filter type and compiles the policy; defines the role's
    /// counters through `define` (which returns the counter id).
    pub fn new(
        role: Role,
        name: &[u8],
        config: &[u8],
        mut define: impl FnMut(&str) -> Option<usize>,
    ) -> Result<NativeConfig, String> {
        check_filter_name(role, name)?;
        let policy = shared_policy(config)?;
        let mut counters = [None; Counter::COUNT];
        for counter in Counter::for_role(role) {
            if let Some(slot) = counters.get_mut(counter.index()) {
                *slot = define(&names::native_counter_name(role, counter));
            }
        }
        Ok(NativeConfig {
            role,
            policy,
            fingerprint: fingerprint(config),
            counters,
        })
    }

    pub fn configured_line(&self) -> String {
        format!(
            "trustip: configured {} filter: {} rules, {} trusted XFF blocks",
            self.role.name(),
            self.policy.rules.len(),
            self.policy.xff_trusted_count
        )
    }

    /// Logs and counts a verdict: what every native filter does with it before its action. (The
    /// verdict's hint is about the wasm build's set_filter_state; this build reads D natively.)
    pub fn report(
        &self,
        verdict: &Verdict,
        log: &mut impl FnMut(&str),
        increment: &mut impl FnMut(usize, u64),
    ) {
        if let Some(line) = verdict.log_line(0) {
            log(&line);
        }
        for (counter, by) in &verdict.counters {
            if let Some(id) = self.counters.get(counter.index()).copied().flatten() {
                increment(id, u64::from(*by));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_wrong_filter_name_and_a_bad_policy_in_one_line() {
        let define = |_: &str| Some(0);
        let wrong = NativeConfig::new(Role::Listener, b"trustip-http", b"{}", define)
            .err()
            .unwrap();
        assert_eq!(
            wrong,
            "trustip: invalid configuration: filter_name: \"trustip-http\": must be \"trustip-listener\" for the listener filter"
        );
        let bad = NativeConfig::new(Role::Http, b"trustip-http", br#"{"mode":"audit"}"#, define)
            .err()
            .unwrap();
        // The same text the wasm build logs for the same policy.
        let wasm = Policy::from_json(br#"{"mode":"audit"}"#).unwrap_err();
        assert_eq!(bad, format!("trustip: invalid configuration: {wasm}"));
        let name = NativeConfig::new(Role::Network, b"a\nb", b"{}", define)
            .err()
            .unwrap();
        assert!(!name.contains('\n'), "{name}");
    }

    #[test]
    fn defines_the_counters_of_its_role() {
        let mut defined = Vec::new();
        let config = NativeConfig::new(Role::Listener, b"trustip-listener", b"{}", |name| {
            defined.push(name.to_string());
            Some(defined.len())
        })
        .unwrap();
        assert_eq!(config.role, Role::Listener);
        assert!(defined.contains(&"listener.reject_untrusted_proxy".to_string()));
        assert!(!defined.iter().any(|n| n.ends_with("accept_xff")));
        // A second filter with the same policy shares the compiled policy; another does not.
        let same = NativeConfig::new(Role::Http, b"trustip-http", b"{}", |_| None).unwrap();
        assert!(Arc::ptr_eq(&config.policy, &same.policy));
        let other = NativeConfig::new(Role::Http, b"trustip-http", br#"{"mode":"shadow"}"#, |_| {
            None
        })
        .unwrap();
        assert!(!Arc::ptr_eq(&config.policy, &other.policy));
        assert_eq!(
            config.configured_line(),
            "trustip: configured listener filter: 0 rules, 0 trusted XFF blocks"
        );
    }
}
