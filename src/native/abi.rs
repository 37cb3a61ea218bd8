//! Every `unsafe` line of the native build: the Envoy 1.40 dynamic-module ABI ("v0.2.0") as
//! trustip uses it. The `extern "C"` block declares the callbacks imported from Envoy (each
//! checked against the pinned binary by tests/e2e/test_native_module.py with `nm -D`); the
//! `#[no_mangle]` functions are the hooks Envoy calls. Each hook turns Envoy's pointers into the
//! safe traits of [`super::ops`] and calls the filter logic; nothing here decides.
//!
//! Rules kept here: buffers are read with their length and copied before the hook returns;
//! Envoy's enums arrive as plain integers and are matched by value; per-connection and
//! per-stream state lives in the boxes handed to Envoy and freed in the `destroy` hooks; the
//! configuration is an `Arc` shared, immutable, by every worker; the crate is built with
//! `panic = "abort"` and no hook can unwind into Envoy.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_void};
use std::net::IpAddr;
use std::sync::Arc;

use crate::core::decision::Role;
use crate::core::names;
use crate::native::config::NativeConfig;
use crate::native::ops::{Address, ConnectionOps, HttpOps, ListenerOps};
use crate::native::{http, listener, network};

/// Bytes owned by Envoy (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

impl EnvoyBuffer {
    const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// A copy of the bytes; `None` for a null pointer.
    fn to_vec(self) -> Option<Vec<u8>> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: Envoy hands `length` readable bytes at `ptr`, valid until the hook returns;
        // they are copied here, inside the hook.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }.to_vec())
    }
}

/// Bytes owned by the module, read by Envoy during the call (`..._module_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
pub struct ModuleHttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

type EnvoyPtr = *mut c_void;
type ModulePtr = *const c_void;

/// `envoy_dynamic_module_type_log_level_Info` / `_Error`.
const LOG_INFO: u32 = 2;
const LOG_ERROR: u32 = 4;
/// `envoy_dynamic_module_type_http_header_type_RequestHeader`.
const REQUEST_HEADER: u32 = 0;
/// `envoy_dynamic_module_type_attribute_id_SourceAddress` ("source.address").
const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;
/// `envoy_dynamic_module_type_network_connection_close_type_AbortReset`: the client sees a reset.
const CLOSE_ABORT_RESET: u32 = 4;
/// `..._status_Continue` and `..._status_StopIteration` of every hook that returns a status.
const CONTINUE: u32 = 0;
const STOP_ITERATION: u32 = 1;

extern "C" {
    // Logging (common).
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    // Listener filter callbacks.
    fn envoy_dynamic_module_callback_listener_filter_get_direct_remote_address(
        filter: EnvoyPtr,
        address_out: *mut EnvoyBuffer,
        port_out: *mut u32,
    ) -> bool;
    fn envoy_dynamic_module_callback_listener_filter_get_remote_address(
        filter: EnvoyPtr,
        address_out: *mut EnvoyBuffer,
        port_out: *mut u32,
    ) -> bool;
    fn envoy_dynamic_module_callback_listener_filter_set_remote_address(
        filter: EnvoyPtr,
        address: ModuleBuffer,
        port: u32,
        is_ipv6: bool,
    ) -> bool;
    fn envoy_dynamic_module_callback_listener_filter_close_socket(
        filter: EnvoyPtr,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_listener_filter_set_filter_state(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_listener_filter_get_filter_state_typed(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        value_out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_listener_filter_get_dynamic_metadata_string(
        filter: EnvoyPtr,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        value_out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_listener_filter_config_define_counter(
        config: EnvoyPtr,
        name: ModuleBuffer,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_listener_filter_increment_counter(
        filter: EnvoyPtr,
        id: usize,
        value: u64,
    ) -> u32;

    // Network filter callbacks.
    fn envoy_dynamic_module_callback_network_filter_get_direct_remote_address(
        filter: EnvoyPtr,
        address_out: *mut EnvoyBuffer,
        port_out: *mut u32,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_get_remote_address(
        filter: EnvoyPtr,
        address_out: *mut EnvoyBuffer,
        port_out: *mut u32,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_close_with_details(
        filter: EnvoyPtr,
        close_type: u32,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_network_set_filter_state_bytes(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_get_filter_state_typed(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        value_out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_get_dynamic_metadata_string(
        filter: EnvoyPtr,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        value_out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_network_filter_config_define_counter(
        config: EnvoyPtr,
        name: ModuleBuffer,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_network_filter_increment_counter(
        filter: EnvoyPtr,
        id: usize,
        value: u64,
    ) -> u32;

    // HTTP filter callbacks.
    fn envoy_dynamic_module_callback_http_get_header(
        filter: EnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        count_out: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: EnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter: EnvoyPtr,
        status: u32,
        headers: *mut ModuleHttpHeader,
        headers_count: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(
        filter: EnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: EnvoyPtr,
        attribute_id: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_typed(
        filter: EnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: EnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_count: usize,
        id_out: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: EnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_count: usize,
        value: u64,
    ) -> u32;
}

/// One line in Envoy's log, under `[dynamic_modules]`.
fn log(level: u32, line: &str) {
    // SAFETY: the message is read during the call only.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::of(line.as_bytes())) }
}

fn log_info(line: &str) {
    log(LOG_INFO, line);
}

/// Reads an out-parameter buffer filled by a getter; `None` when the getter says no.
fn read_buffer(fill: impl FnOnce(*mut EnvoyBuffer) -> bool) -> Option<Vec<u8>> {
    let mut out = EnvoyBuffer::EMPTY;
    if fill(&mut out) {
        out.to_vec()
    } else {
        None
    }
}

fn read_address(fill: impl FnOnce(*mut EnvoyBuffer, *mut u32) -> bool) -> Option<Address> {
    let mut out = EnvoyBuffer::EMPTY;
    let mut port = 0u32;
    if !fill(&mut out, &mut port) {
        return None;
    }
    let ip = String::from_utf8(out.to_vec()?).ok()?;
    Some(Address { ip, port })
}

// ---------------------------------------------------------------------------------------
// Program init.

/// Hook `envoy_dynamic_module_on_program_init`: once per process; returns the ABI version.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    ABI_VERSION.as_ptr()
}

/// A configuration handed to Envoy: one `Arc` per filter config, cloned into every filter.
fn config_new(
    role: Role,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
    define: impl FnMut(&str) -> Option<usize>,
) -> ModulePtr {
    let name = name.to_vec().unwrap_or_default();
    let config = config.to_vec().unwrap_or_default();
    match NativeConfig::new(role, &name, &config, define) {
        Ok(config) => {
            log_info(&config.configured_line());
            Arc::into_raw(Arc::new(config)).cast()
        }
        Err(line) => {
            log(LOG_ERROR, &line);
            std::ptr::null()
        }
    }
}

/// The configuration behind a pointer `config_new` returned, as a new strong reference.
fn config_ref(config: ModulePtr) -> Option<Arc<NativeConfig>> {
    if config.is_null() {
        return None;
    }
    let config = config.cast::<NativeConfig>();
    // SAFETY: `config` came from `Arc::into_raw` in `config_new` and Envoy keeps it alive until
    // `config_destroy`, which runs after every filter using it is gone.
    unsafe {
        Arc::increment_strong_count(config);
        Some(Arc::from_raw(config))
    }
}

fn config_destroy(config: ModulePtr) {
    if !config.is_null() {
        // SAFETY: the `Arc::into_raw` reference of `config_new`, released once.
        drop(unsafe { Arc::from_raw(config.cast::<NativeConfig>()) });
    }
}

/// A per-connection or per-stream object handed to Envoy.
fn boxed<T>(value: T) -> ModulePtr {
    Box::into_raw(Box::new(value)).cast()
}

/// The object behind a pointer `boxed` returned.
fn object<'a, T>(ptr: ModulePtr) -> Option<&'a mut T> {
    // SAFETY: `ptr` came from `boxed::<T>` for this hook family, lives until its `destroy` hook,
    // and Envoy calls one filter's hooks on one thread, one at a time.
    unsafe { ptr.cast::<T>().cast_mut().as_mut() }
}

fn destroy<T>(ptr: ModulePtr) {
    if !ptr.is_null() {
        // SAFETY: the box of `boxed::<T>`, freed once by the `destroy` hook.
        drop(unsafe { Box::from_raw(ptr.cast::<T>().cast_mut()) });
    }
}

// ---------------------------------------------------------------------------------------
// The per-connection filters (listener and network): their reads have the same shapes.

type AddressGetter = unsafe extern "C" fn(EnvoyPtr, *mut EnvoyBuffer, *mut u32) -> bool;
type MetadataGetter =
    unsafe extern "C" fn(EnvoyPtr, ModuleBuffer, ModuleBuffer, *mut EnvoyBuffer) -> bool;
type StateGetter = unsafe extern "C" fn(EnvoyPtr, ModuleBuffer, *mut EnvoyBuffer) -> bool;
type StateSetter = unsafe extern "C" fn(EnvoyPtr, ModuleBuffer, ModuleBuffer) -> bool;
type Incrementer = unsafe extern "C" fn(EnvoyPtr, usize, u64) -> u32;
type CounterDefiner = unsafe extern "C" fn(EnvoyPtr, ModuleBuffer, *mut usize) -> u32;

/// One filter type's callbacks (declared in the `extern` block above).
struct ConnectionAbi {
    direct_remote: AddressGetter,
    remote: AddressGetter,
    metadata_string: MetadataGetter,
    filter_state_typed: StateGetter,
    set_filter_state: StateSetter,
    increment: Incrementer,
    define_counter: CounterDefiner,
    close: fn(EnvoyPtr, &str),
}

impl ConnectionAbi {
    /// Defines a counter while Envoy builds the configuration (`config_new` only).
    fn define(&self, config_envoy: EnvoyPtr, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: the config pointer Envoy passed to `config_new`; `id` is a local.
        let result = unsafe {
            (self.define_counter)(config_envoy, ModuleBuffer::of(name.as_bytes()), &mut id)
        };
        (result == 0).then_some(id)
    }
}

/// A live listener or network filter, during one of its hooks.
struct Connection {
    filter: EnvoyPtr,
    abi: &'static ConnectionAbi,
}

impl ConnectionOps for Connection {
    fn direct_remote(&mut self) -> Option<Address> {
        // SAFETY: a live filter pointer; out-parameters point at locals.
        read_address(|out, port| unsafe { (self.abi.direct_remote)(self.filter, out, port) })
    }

    fn remote(&mut self) -> Option<Address> {
        // SAFETY: as above.
        read_address(|out, port| unsafe { (self.abi.remote)(self.filter, out, port) })
    }

    fn metadata_string(&mut self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        read_buffer(|out| unsafe {
            // SAFETY: as above; the module buffers are read during the call.
            (self.abi.metadata_string)(
                self.filter,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                out,
            )
        })
    }

    fn filter_state_typed(&mut self, key: &str) -> Option<Vec<u8>> {
        read_buffer(|out| unsafe {
            // SAFETY: as above.
            (self.abi.filter_state_typed)(self.filter, ModuleBuffer::of(key.as_bytes()), out)
        })
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        // SAFETY: as above. (An empty value still has a non-null pointer.)
        let done = unsafe {
            (self.abi.set_filter_state)(
                self.filter,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
        if !done {
            log(
                LOG_ERROR,
                &format!("trustip: cannot set filter state {key}"),
            );
        }
    }

    fn close(&mut self, details: &str) {
        (self.abi.close)(self.filter, details);
    }

    fn increment(&mut self, counter_id: usize, by: u64) {
        // SAFETY: as above; the id was defined by this filter's configuration.
        unsafe { (self.abi.increment)(self.filter, counter_id, by) };
    }
}

// ---------------------------------------------------------------------------------------
// Listener filter.

struct ListenerFilter {
    config: Arc<NativeConfig>,
}

/// The listener filter's handle, with the callbacks its connection-level reads share in shape
/// with the network filter's.
const LISTENER: ConnectionAbi = ConnectionAbi {
    direct_remote: envoy_dynamic_module_callback_listener_filter_get_direct_remote_address,
    remote: envoy_dynamic_module_callback_listener_filter_get_remote_address,
    metadata_string: envoy_dynamic_module_callback_listener_filter_get_dynamic_metadata_string,
    filter_state_typed: envoy_dynamic_module_callback_listener_filter_get_filter_state_typed,
    set_filter_state: envoy_dynamic_module_callback_listener_filter_set_filter_state,
    increment: envoy_dynamic_module_callback_listener_filter_increment_counter,
    define_counter: envoy_dynamic_module_callback_listener_filter_config_define_counter,
    close: close_listener_socket,
};

fn close_listener_socket(filter: EnvoyPtr, details: &str) {
    // SAFETY: a live filter pointer; the details are read during the call.
    unsafe {
        envoy_dynamic_module_callback_listener_filter_close_socket(
            filter,
            ModuleBuffer::of(details.as_bytes()),
        )
    }
}

impl ListenerOps for Connection {
    fn set_remote(&mut self, ip: IpAddr, port: u32) -> bool {
        let text = ip.to_string();
        // SAFETY: as above.
        unsafe {
            envoy_dynamic_module_callback_listener_filter_set_remote_address(
                self.filter,
                ModuleBuffer::of(text.as_bytes()),
                port,
                ip.is_ipv6(),
            )
        }
    }
}

/// Hook: a listener filter configuration (main thread). NULL refuses it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_config_new(
    config_envoy: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    config_new(Role::Listener, name, config, |counter| {
        LISTENER.define(config_envoy, counter)
    })
}

/// Hook: the configuration is gone.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_config_destroy(config: ModulePtr) {
    config_destroy(config);
}

/// Hook: an accepted socket.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_new(
    config: ModulePtr,
    _filter_envoy: EnvoyPtr,
) -> ModulePtr {
    match config_ref(config) {
        Some(config) => boxed(ListenerFilter { config }),
        None => std::ptr::null(),
    }
}

/// Hook: decide before any network filter sees the connection.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_on_accept(
    filter_envoy: EnvoyPtr,
    filter: ModulePtr,
) -> u32 {
    // Only the configuration is taken: no reference to the filter object outlives this line.
    let Some(config) = object::<ListenerFilter>(filter).map(|f| Arc::clone(&f.config)) else {
        return STOP_ITERATION;
    };
    if listener::on_accept(
        &config,
        &mut Connection {
            filter: filter_envoy,
            abi: &LISTENER,
        },
        &mut log_info,
    ) {
        CONTINUE
    } else {
        STOP_ITERATION
    }
}

/// Hook: data before the decision (never asked for: `get_max_read_bytes` is 0).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_on_data(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _data_length: usize,
) -> u32 {
    CONTINUE
}

/// Hook: the socket closed while this filter held it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_on_close(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) {
}

/// Hook: how many bytes the filter wants to peek at: none.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_get_max_read_bytes(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) -> usize {
    0
}

/// Hook: the per-connection object is gone.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_destroy(filter: ModulePtr) {
    destroy::<ListenerFilter>(filter);
}

/// Hook: a scheduled event (trustip schedules none).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_listener_filter_scheduled(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _event_id: u64,
) {
}

// ---------------------------------------------------------------------------------------
// Network filter.

struct NetworkFilter {
    config: Arc<NativeConfig>,
    rejected: bool,
}

const NETWORK: ConnectionAbi = ConnectionAbi {
    direct_remote: envoy_dynamic_module_callback_network_filter_get_direct_remote_address,
    remote: envoy_dynamic_module_callback_network_filter_get_remote_address,
    metadata_string: envoy_dynamic_module_callback_network_get_dynamic_metadata_string,
    filter_state_typed: envoy_dynamic_module_callback_network_get_filter_state_typed,
    set_filter_state: envoy_dynamic_module_callback_network_set_filter_state_bytes,
    increment: envoy_dynamic_module_callback_network_filter_increment_counter,
    define_counter: envoy_dynamic_module_callback_network_filter_config_define_counter,
    close: close_network_connection,
};

fn close_network_connection(filter: EnvoyPtr, details: &str) {
    // SAFETY: a live filter pointer; the details are read during the call.
    unsafe {
        envoy_dynamic_module_callback_network_filter_close_with_details(
            filter,
            CLOSE_ABORT_RESET,
            ModuleBuffer::of(details.as_bytes()),
        )
    }
}

/// Hook: a network filter configuration (main thread). NULL refuses it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_config_new(
    config_envoy: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    config_new(Role::Network, name, config, |counter| {
        NETWORK.define(config_envoy, counter)
    })
}

/// Hook: the configuration is gone.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_config_destroy(config: ModulePtr) {
    config_destroy(config);
}

/// Hook: a new connection's filter object.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_new(
    config: ModulePtr,
    _filter_envoy: EnvoyPtr,
) -> ModulePtr {
    match config_ref(config) {
        Some(config) => boxed(NetworkFilter {
            config,
            rejected: false,
        }),
        None => std::ptr::null(),
    }
}

/// Hook: the connection is established: decide.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_new_connection(
    filter_envoy: EnvoyPtr,
    filter: ModulePtr,
) -> u32 {
    // No reference to the filter object is held across the call: closing the connection may
    // re-enter this filter's hooks.
    let Some(config) = object::<NetworkFilter>(filter).map(|f| Arc::clone(&f.config)) else {
        return STOP_ITERATION;
    };
    let go_on = network::on_new_connection(
        &config,
        &mut Connection {
            filter: filter_envoy,
            abi: &NETWORK,
        },
        &mut log_info,
    );
    if go_on {
        return CONTINUE;
    }
    if let Some(filter) = object::<NetworkFilter>(filter) {
        filter.rejected = true;
    }
    STOP_ITERATION
}

/// Hook: bytes from the client: none of a refused connection goes further.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_read(
    _filter_envoy: EnvoyPtr,
    filter: ModulePtr,
    _data_length: usize,
    _end_stream: bool,
) -> u32 {
    match object::<NetworkFilter>(filter) {
        Some(filter) if !filter.rejected => CONTINUE,
        _ => STOP_ITERATION,
    }
}

/// Hook: bytes to the client.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_write(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _data_length: usize,
    _end_stream: bool,
) -> u32 {
    CONTINUE
}

/// Hook: a connection event.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_event(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _event: u32,
) {
}

/// Hook: the per-connection object is gone.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_network_filter_destroy(filter: ModulePtr) {
    destroy::<NetworkFilter>(filter);
}

// ---------------------------------------------------------------------------------------
// HTTP filter.

struct HttpFilter {
    config: Arc<NativeConfig>,
}

struct Stream(EnvoyPtr);

impl Stream {
    fn header_value(&mut self, key: &str, index: usize, count: &mut usize) -> Option<Vec<u8>> {
        read_buffer(|out| unsafe {
            // SAFETY: a live filter pointer in its request-headers hook; locals as out-params.
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                REQUEST_HEADER,
                ModuleBuffer::of(key.as_bytes()),
                out,
                index,
                count,
            )
        })
    }
}

impl HttpOps for Stream {
    fn direct_remote(&mut self) -> Option<Vec<u8>> {
        read_buffer(|out| unsafe {
            // SAFETY: as above.
            envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(self.0, out)
        })
    }

    fn source_address(&mut self) -> Option<Vec<u8>> {
        read_buffer(|out| unsafe {
            // SAFETY: as above.
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.0,
                ATTRIBUTE_SOURCE_ADDRESS,
                out,
            )
        })
    }

    /// Every value of the header, joined with `,` as Envoy joins repeated X-Forwarded-For.
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        let mut count = 0usize;
        let mut joined = self.header_value(name, 0, &mut count)?;
        for index in 1..count {
            let mut ignored = 0usize;
            if let Some(value) = self.header_value(name, index, &mut ignored) {
                joined.push(b',');
                joined.extend_from_slice(&value);
            }
        }
        Some(joined)
    }

    fn set_header(&mut self, name: &str, value: &[u8]) {
        // SAFETY: as above; Envoy copies the bytes.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
    }

    fn remove_header(&mut self, name: &str) {
        // SAFETY: as above; a null value removes the header.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer {
                    ptr: std::ptr::null(),
                    length: 0,
                },
            )
        };
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let mut headers: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(key, value)| ModuleHttpHeader {
                key_ptr: key.as_ptr().cast(),
                key_length: key.len(),
                value_ptr: value.as_ptr().cast(),
                value_length: value.len(),
            })
            .collect();
        let details = b"trustip_rejected";
        // SAFETY: as above; the header array and the buffers are read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(details),
            )
        }
    }

    fn filter_state_bytes(&mut self, key: &str) -> Option<Vec<u8>> {
        read_buffer(|out| unsafe {
            // SAFETY: as above.
            envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                out,
            )
        })
    }

    fn filter_state_typed(&mut self, key: &str) -> Option<Vec<u8>> {
        read_buffer(|out| unsafe {
            // SAFETY: as above.
            envoy_dynamic_module_callback_http_get_filter_state_typed(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                out,
            )
        })
    }

    fn set_filter_state(&mut self, key: &str, value: &[u8]) {
        // SAFETY: as above.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value),
            )
        };
    }

    fn increment(&mut self, counter_id: usize, by: u64) {
        // SAFETY: as above; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0,
                counter_id,
                std::ptr::null_mut(),
                0,
                by,
            )
        };
    }
}

/// Hook: an HTTP filter configuration (main thread). NULL refuses it.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: EnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ModulePtr {
    config_new(Role::Http, name, config, |counter| {
        let mut id = 0usize;
        // SAFETY: the config pointer Envoy passed to this hook; no labels; `id` is a local.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config_envoy,
                ModuleBuffer::of(counter.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (result == 0).then_some(id)
    })
}

/// Hook: the configuration is gone.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ModulePtr) {
    config_destroy(config);
}

/// Hook: a new stream's filter object.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ModulePtr,
    _filter_envoy: EnvoyPtr,
) -> ModulePtr {
    match config_ref(config) {
        Some(config) => boxed(HttpFilter { config }),
        None => std::ptr::null(),
    }
}

/// Hook: the request headers: decide and carry out the verdict.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: EnvoyPtr,
    filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // Only the configuration is taken: no reference to the filter object outlives this line.
    let Some(config) = object::<HttpFilter>(filter).map(|f| Arc::clone(&f.config)) else {
        return STOP_ITERATION;
    };
    if http::on_request_headers(&config, &mut Stream(filter_envoy), &mut log_info) {
        CONTINUE
    } else {
        STOP_ITERATION
    }
}

/// Hook: request body (passed through).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

/// Hook: request trailers (passed through).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) -> u32 {
    CONTINUE
}

/// Hook: response headers (passed through).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

/// Hook: response body (passed through).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    CONTINUE
}

/// Hook: response trailers (passed through).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) -> u32 {
    CONTINUE
}

/// Hook: the stream is complete.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) {
}

/// Hook: the per-stream object is gone.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: ModulePtr) {
    destroy::<HttpFilter>(filter);
}

/// Hook: an HTTP callout finished (trustip makes none).
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

/// Hook: headers of an HTTP stream the module opened (none).
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

/// Hook: data of an HTTP stream the module opened (none).
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

/// Hook: trailers of an HTTP stream the module opened (none).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
    _trailers: *mut c_void,
    _trailers_size: usize,
) {
}

/// Hook: an HTTP stream the module opened completed (none).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
) {
}

/// Hook: an HTTP stream the module opened was reset (none).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

/// Hook: a scheduled event (trustip schedules none).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
    _event_id: u64,
) {
}

/// Hook: the downstream write buffer went above its high watermark.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) {
}

/// Hook: the downstream write buffer went below its low watermark.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: EnvoyPtr,
    _filter: ModulePtr,
) {
}

/// The ABI version `on_program_init` reports.
const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";
// It is the one the core names (checked when compiling).
const _: () = assert!(same_bytes(
    ABI_VERSION.to_bytes(),
    names::NATIVE_ABI_VERSION.as_bytes()
));

#[allow(clippy::indexing_slicing)] // compile time only: both indices are below the lengths
const fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
