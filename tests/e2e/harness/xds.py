"""Envoy that reads its listeners from a file (LDS over a `path_config_source`), for live reloads.

`FileLdsEnvoy` runs Envoy with `dynamic_resources.lds_config` naming a file in a directory Envoy
watches (`watched_directory`): a new policy is a new file written next to that directory (same
file system) and renamed over the watched file (`os.replace`, atomic), so Envoy never reads a
half-written file. Envoy reloads the file on every rename into the directory, and only then: a
file rewritten in place is not reloaded. The listeners are the suite's
(`envoy.listener_config`, either build); the clusters stay static. `listener_stats()` reads the
listener manager's counters that show what Envoy made of each update.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from . import net
from .envoy import NATIVE, WASM, Envoy, Listener, _cluster, listener_cluster, listener_config

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"


class FileLdsEnvoy(Envoy):
    """An Envoy whose listeners come from `lds_path` (JSON DiscoveryResponse). `update(specs)`
    writes new listeners and renames them into place; `update_text(text)` does the same with
    any text (a refused update); `wait_for_update(before)` waits until Envoy has applied or
    refused it."""

    def __init__(
        self,
        listeners: list[Listener],
        *,
        upstream_port: int,
        name: str = "envoy",
        wasm: Path = WASM,
        native: Path = NATIVE,
        workdir: Path | None = None,
        drain_time_s: int | None = None,
        drain_strategy: str | None = None,
    ) -> None:
        """`drain_time_s`: Envoy's `--drain-time-s` (None: its default, 600 s), how long a
        replaced listener or filter chain keeps serving the connections it had;
        `drain_strategy`: `--drain-strategy` (None: its default, `gradual`; or `immediate`)."""
        workdir = Path(workdir or tempfile.mkdtemp(prefix=f"trustip-{name}-"))
        self.lds_dir = workdir / "lds"
        self.lds_dir.mkdir(exist_ok=True)
        self.lds_path = self.lds_dir / "listeners.json"
        self.upstream_port = upstream_port
        self.wasm = wasm
        self.native = native
        self.version = 0
        self.drain_time_s = drain_time_s
        self.drain_strategy = drain_strategy
        for spec in listeners:
            if not spec.port:
                spec.port = net.free_port_pair() if spec.ipv6 and not spec.dual_stack else net.free_port()
        self.listeners = {spec.name: spec for spec in listeners}
        own = [listener_cluster(spec, upstream_port) for spec in listeners if spec.cluster != "upstream"]
        config = {
            "node": {"id": name, "cluster": "trustip-e2e"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": net.free_port()}}},
            "dynamic_resources": {
                "lds_config": {
                    "resource_api_version": "V3",
                    "path_config_source": {
                        "path": str(self.lds_path),
                        "watched_directory": {"path": str(self.lds_dir)},
                    },
                }
            },
            "static_resources": {"clusters": [_cluster("upstream", upstream_port), *own]},
        }
        super().__init__(config, name=name, workdir=workdir)
        self.update(listeners)  # the file Envoy starts from

    def command(self) -> list[str]:
        drain = ["--drain-time-s", str(self.drain_time_s)] if self.drain_time_s is not None else []
        if self.drain_strategy:
            drain += ["--drain-strategy", self.drain_strategy]
        return super().command() + drain

    def port(self, name: str = "main") -> int:
        return self.listeners[name].port

    def resources(self, listeners: list[Listener]) -> str:
        """The LDS file for these listeners (ports kept from the first ones of the same name)."""
        for spec in listeners:
            spec.port = spec.port or self.listeners[spec.name].port
        self.version += 1
        resources = [
            {"@type": LISTENER_TYPE, **listener_config(spec, self.upstream_port, self.wasm, self.native)}
            for spec in listeners
        ]
        return json.dumps({"version_info": str(self.version), "resources": resources}, indent=1)

    def update(self, listeners: list[Listener]) -> None:
        self.update_text(self.resources(listeners))

    def update_text(self, text: str) -> None:
        """Writes `text` to a new file next to the watched directory and renames it over
        `lds_path`: Envoy never reads a half-written file, and the rename is what it watches."""
        staging = self.workdir / f"listeners.{self.version}.{time.monotonic_ns()}.tmp"
        staging.write_text(text)
        os.replace(staging, self.lds_path)

    def listener_stats(self) -> dict[str, int]:
        """The listener manager's counters and gauges (`listener_manager.` stripped):
        `lds.update_success`, `lds.update_rejected`, `listener_modified`,
        `listener_in_place_updated`, `total_filter_chains_draining`, `total_listeners_draining`."""
        prefix = "listener_manager."
        return {
            name.removeprefix(prefix): value
            for name, value in self.stats("^listener_manager\\.").items()
            if name.startswith(prefix)
        }

    def wait_for_update(self, before: dict[str, int], timeout: float = 10.0) -> dict[str, int]:
        """Waits until Envoy has taken in an update made after `before` (listener_stats then):
        `lds.update_success` or `lds.update_rejected` went up. Returns the stats at that point."""
        deadline = time.monotonic() + timeout
        keys = ("lds.update_success", "lds.update_rejected")
        while True:
            stats = self.listener_stats()
            if any(stats.get(key, 0) > before.get(key, 0) for key in keys):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"Envoy took in no LDS update after {timeout}s: {stats}")
            time.sleep(0.02)
