//! The no-op dynamic-module HTTP filter of the benchmark: the floor any Envoy 1.40 dynamic
//! module HTTP filter costs.
//!
//! It exports the ABI version hook and the 20 HTTP filter hooks Envoy 1.40 resolves when it
//! loads a module for an HTTP filter (the list and the signatures of trustip's src/native/abi.rs;
//! listener and network hooks are resolved only for those filter types, so none is here). Every
//! hook returns Continue or does nothing; it imports no callback from Envoy and allocates
//! nothing: the configuration and every per-stream object are the same static byte, which Envoy
//! only hands back. What the benchmark measures for this module is Envoy's dynamic-module path
//! alone (the filter's creation, the hook calls, its destruction).

#![allow(clippy::missing_safety_doc)]

use std::ffi::{c_char, c_void};

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy (unused here).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

type EnvoyPtr = *mut c_void;
type ModulePtr = *const c_void;

/// `..._status_Continue` of every hook that returns a status.
const CONTINUE: u32 = 0;

/// What `config_new` and `new` return: any non-null pointer (NULL would refuse the config or
/// fail the stream); Envoy never reads through it.
static OBJECT: u8 = 0;

fn object() -> ModulePtr {
    std::ptr::addr_of!(OBJECT).cast()
}

/// Hook: once per process; the ABI version Envoy 1.40 expects.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.2.0".as_ptr()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: EnvoyPtr,
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> ModulePtr {
    object()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_config: ModulePtr) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _config: ModulePtr,
    _filter_envoy: EnvoyPtr,
) -> ModulePtr {
    object()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_filter: ModulePtr) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _callout_id: u64,
    _result: u32,
    _headers: *mut c_void,
    _headers_size: usize,
    _body_chunks: *mut c_void,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
    _headers: *mut c_void,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
    _data: *const c_void,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
    _trailers: *mut c_void,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) {
}
