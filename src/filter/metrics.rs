//! The counters, defined once per VM from the core's [`Counter`] list (Envoy shows them as
//! `wasmcustom.trustip.<role>.<name>` in `/stats`).

use crate::core::decision::{Counter, Role};
use crate::core::names;
use crate::filter::host;

pub struct Metrics {
    ids: [Option<u32>; Counter::COUNT],
}

impl Metrics {
    pub fn define(role: Role) -> Metrics {
        let mut ids = [None; Counter::COUNT];
        for counter in Counter::for_role(role) {
            if let Some(slot) = ids.get_mut(counter.index()) {
                *slot = host::define_counter(&names::metric_name(role, counter));
            }
        }
        Metrics { ids }
    }

    pub fn increment(&self, counters: &[(Counter, u32)]) {
        for (counter, by) in counters {
            host::increment(
                self.ids.get(counter.index()).copied().flatten(),
                i64::from(*by),
            );
        }
    }
}
