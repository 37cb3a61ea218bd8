//! The host-call benchmark module: one kind of proxy-wasm host call, N times per request.
//!
//! The plugin configuration is a plain string, `OPERATION N` (for example `get_property_fs 10`),
//! read once in `on_configure`. In `on_http_request_headers` the HTTP context performs the
//! operation N times and returns Continue. Each operation is exactly one host call (through the
//! SDK's `hostcalls` module, as a filter would make it); `none` makes none, so the difference of
//! Envoy's CPU time per request between `OP 10` and `none 0`, divided by 10, is what one call
//! costs. Results are passed through `black_box` so the calls cannot be optimised away.
//!
//! The first result of each request is checked (a few nanoseconds, the same in every request):
//! if the call did not do what it should (the filter-state entry or the header is missing, a
//! write failed), the request is answered with a 500 instead, so the benchmark's warm-up, which
//! requires all 200s, fails rather than measuring a call that took a shortcut.

use std::hint::black_box;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The filter-state entry `set_filter_state` writes on each connection.
const FILTER_STATE_PATH: [&str; 2] = ["filter_state", "trustip.direct_peer"];
/// The counter `increment_metric` increments (Envoy shows it as `wasmcustom.<name>`).
const METRIC_NAME: &str = "trustip_bench_hostcalls";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    None,
    GetPropertyFs,
    GetPropertySource,
    GetHeaderPresent,
    GetHeaderAbsent,
    SetHeader,
    RemoveHeader,
    SetProperty,
    IncrementMetric,
    GetHeadersMap,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "none" => Op::None,
            "get_property_fs" => Op::GetPropertyFs,
            "get_property_source" => Op::GetPropertySource,
            "get_header_present" => Op::GetHeaderPresent,
            "get_header_absent" => Op::GetHeaderAbsent,
            "set_header" => Op::SetHeader,
            "remove_header" => Op::RemoveHeader,
            "set_property" => Op::SetProperty,
            "increment_metric" => Op::IncrementMetric,
            "get_headers_map" => Op::GetHeadersMap,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy)]
struct Plan {
    op: Op,
    repeat: u32,
    metric: u32,
}

#[derive(Default)]
struct Root {
    plan: Option<Plan>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&config);
        let mut words = text.split_whitespace();
        let op = words.next().and_then(Op::parse);
        let repeat = words.next().and_then(|n| n.parse::<u32>().ok());
        let (Some(op), Some(repeat), None) = (op, repeat, words.next()) else {
            proxy_wasm::hostcalls::log(
                LogLevel::Critical,
                &format!("hostcalls: bad configuration {text:?}, expected `OPERATION N`"),
            )
            .ok();
            return false;
        };
        let metric = if op == Op::IncrementMetric {
            match hostcalls::define_metric(MetricType::Counter, METRIC_NAME) {
                Ok(id) => id,
                Err(_) => return false,
            }
        } else {
            0
        };
        self.plan = Some(Plan { op, repeat, metric });
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plan = self.plan?;
        Some(Box::new(Request { plan }))
    }
}

struct Request {
    plan: Plan,
}

impl Context for Request {}

/// One host call of the given kind; true when it did what it should.
#[inline(always)]
fn call_once(op: Op, metric: u32) -> bool {
    match op {
        Op::None => true,
        Op::GetPropertyFs => {
            let value = black_box(hostcalls::get_property(black_box(
                FILTER_STATE_PATH.to_vec(),
            )));
            matches!(value, Ok(Some(v)) if !v.is_empty())
        }
        Op::GetPropertySource => {
            let value = black_box(hostcalls::get_property(black_box(vec![
                "source", "address",
            ])));
            matches!(value, Ok(Some(v)) if !v.is_empty())
        }
        Op::GetHeaderPresent => {
            let value = black_box(hostcalls::get_map_value_bytes(
                MapType::HttpRequestHeaders,
                black_box("x-forwarded-for"),
            ));
            matches!(value, Ok(Some(v)) if !v.is_empty())
        }
        Op::GetHeaderAbsent => {
            let value = black_box(hostcalls::get_map_value_bytes(
                MapType::HttpRequestHeaders,
                black_box("x-absent"),
            ));
            matches!(value, Ok(None))
        }
        Op::SetHeader => black_box(hostcalls::set_map_value_bytes(
            MapType::HttpRequestHeaders,
            black_box("x-real-ip"),
            Some(black_box(b"203.0.113.7".as_slice())),
        ))
        .is_ok(),
        Op::RemoveHeader => black_box(hostcalls::remove_map_value(
            MapType::HttpRequestHeaders,
            black_box("x-absent"),
        ))
        .is_ok(),
        Op::SetProperty => black_box(hostcalls::set_property(
            black_box(vec!["trustip.reason"]),
            Some(black_box(b"proxy".as_slice())),
        ))
        .is_ok(),
        Op::IncrementMetric => black_box(hostcalls::increment_metric(black_box(metric), 1)).is_ok(),
        Op::GetHeadersMap => {
            let map = black_box(hostcalls::get_map_bytes(MapType::HttpRequestHeaders));
            matches!(map, Ok(m) if m.iter().any(|(k, _)| k == "x-forwarded-for"))
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Plan { op, repeat, metric } = self.plan;
        let mut ok = true;
        for i in 0..black_box(repeat) {
            let done = call_once(op, metric);
            if i == 0 {
                ok = done;
            }
        }
        if !ok {
            // The warm-up of scripts/bench-hostcalls requires every response to be a 200.
            self.send_http_response(500, vec![], Some(b"hostcalls: call failed\n"));
            return Action::Pause;
        }
        Action::Continue
    }
}
