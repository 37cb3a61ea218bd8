//! The pure core: everything that decides, with no proxy-wasm dependency. The filter's two
//! roles and the command-line tools all call [`decision`], so what `explain` prints is what
//! Envoy does.

pub mod addr;
pub mod cidr;
pub mod config;
pub mod decision;
pub mod headers;
pub mod tlv;
pub mod xff;
