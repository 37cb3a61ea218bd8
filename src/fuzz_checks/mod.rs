//! The fuzz targets' bodies (fuzz/fuzz_targets/*.rs are one-line calls into [`TARGETS`]): each
//! check takes the raw bytes libFuzzer hands over, decodes them into inputs, runs the core (or
//! the native glue) and compares what it did with a reference implementation
//! ([`reference`]) or with the invariants of docs/trust-model.md. A check returns `Err(why)`
//! on a violation (the fuzz target panics with it) and lets a panic of the code under test
//! through.
//!
//! Compiled for `cargo test` (the replay test below runs every file of fuzz/seeds and
//! fuzz/regressions through the same checks) and with the `fuzzing` feature (fuzz/), never in
//! a shipped build.
//!
//! Inputs are byte strings split at `\n` into fields, the first one a few control bytes, so
//! that the committed seeds can be read and written as text (docs/fuzzing.md gives each
//! target's layout).

mod config;
pub(crate) mod decision;
mod forwarded;
pub mod reference;
pub(crate) mod tlv;
mod xff;

/// A target's check: `Err(why)` when the code under test broke a property.
pub type Check = fn(&[u8]) -> Result<(), String>;

/// Every fuzz target: its name (the file in fuzz/fuzz_targets, the folder under fuzz/seeds and
/// fuzz/regressions) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("xff", xff::check),
    ("forwarded", forwarded::check),
    ("config", config::check),
    ("decision", decision::check),
    ("tlv", tlv::check),
    #[cfg(not(target_arch = "wasm32"))]
    ("native", crate::native::fuzz_checks::check),
];

/// Runs the check of the target `name` on `data` (`Err` also for an unknown name).
pub fn run(name: &str, data: &[u8]) -> Result<(), String> {
    match TARGETS.iter().find(|(target, _)| *target == name) {
        Some((_, check)) => check(data),
        None => Err(format!("no fuzz target {name}")),
    }
}

/// For the fuzz targets: runs the check and panics with its message, which libFuzzer reports
/// as a crash (the input is saved under fuzz/artifacts/<target>/).
pub fn fuzz(name: &str, data: &[u8]) {
    if let Err(why) = run(name, data) {
        #[allow(clippy::panic)]
        {
            panic!("fuzz check {name} failed: {why}");
        }
    }
}

/// The fields of an input: the bytes between `\n`s.
pub(crate) fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == b'\n').collect()
}

/// The `i`-th control byte (0 past the end, so a short input means the first choices).
pub(crate) fn byte(control: &[u8], i: usize) -> u8 {
    control.get(i).copied().unwrap_or(0)
}

/// `items[selector % len]`.
pub(crate) fn pick<T: Copy>(items: &[T], selector: u8) -> Option<T> {
    items
        .get(usize::from(selector) % items.len().max(1))
        .copied()
}

/// Bytes as text for a failure message (escaped, on one line).
pub(crate) fn shown(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// `Err` with the message when `ok` is false.
pub(crate) fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod replay;
