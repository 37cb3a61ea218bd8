//! The `tlv` target: its check is trustip::fuzz_checks (tlv), shared with the replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| trustip::fuzz_checks::fuzz("tlv", data));
