//! The `xff` target: its check is trustip::fuzz_checks (xff), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trustip::fuzz_checks::fuzz("xff", data));
