"""The names trustip shares with Envoy configurations and these tests (root ids, VM ids,
filter-state keys, counter names, default header lists), from the core's one definition.

`names.json` beside this file is `trustip names` (src/core/names.rs) written out;
test_names.py checks it against the binary, and that every counter name a test spells out
is one the filter defines."""

from __future__ import annotations

import json
from pathlib import Path

NAMES: dict = json.loads((Path(__file__).with_name("names.json")).read_text())

HTTP_ROOT_ID: str = NAMES["http_root_id"]
NETWORK_ROOT_ID: str = NAMES["network_root_id"]
VM_ID: str = NAMES["vm_id"]
DIRECT_PEER_KEY: str = NAMES["direct_peer_key"]
DIRECT_PEER_FORMAT: str = NAMES["direct_peer_format"]
TLV_FILTER_STATE: str = NAMES["tlv_filter_state"]
CLIENT_IP_FILTER_STATE: str = NAMES["client_ip_filter_state"]
REASON_FILTER_STATE: str = NAMES["reason_filter_state"]
REJECT_HEADER: str = NAMES["reject_header"]
WASM_STATS_PREFIX: str = NAMES["wasm_stats_prefix"]
REJECT_REASONS: tuple[str, ...] = tuple(NAMES["reject_reasons"])
DEFAULT_SET: tuple[str, ...] = tuple(NAMES["default_set"])
DEFAULT_STRIP: tuple[str, ...] = tuple(NAMES["default_strip"])
COUNTERS: dict[str, tuple[str, ...]] = {role: tuple(names) for role, names in NAMES["counters"].items()}


def counter(role: str, outcome: str) -> str:
    """`trustip.<role>.<outcome>`, refusing a counter the filter does not define."""
    name = f"{NAMES['metric_prefix']}.{role}.{outcome}"
    if name not in COUNTERS.get(role, ()):
        raise KeyError(f"{name} is not a trustip counter (see trustip names)")
    return name
