//! The pure core: everything that decides, with no proxy-wasm dependency. The filter's two
//! roles and the command-line tools all call [`verdict::evaluate`], so what `explain` prints is
//! what Envoy does.

pub mod addr;
pub mod cidr;
pub mod config;
pub mod decision;
pub mod handoff;
pub mod headers;
pub mod inputs;
pub mod json;
pub mod names;
pub mod tlv;
pub mod verdict;
pub mod xff;

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod target_tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;
    /// The same tests run natively and as 32-bit wasm (Envoy's target); this proves which.
    #[test]
    fn pointer_width_matches_the_target() {
        let expected = if cfg!(target_arch = "wasm32") { 4 } else { 8 };
        assert_eq!(std::mem::size_of::<usize>(), expected);
    }
}
