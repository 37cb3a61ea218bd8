"""Pieces for test_lint_proofs.py: Envoy bootstraps written to a file that is both linted
(`trustip lint --format json FILE`) and run by Envoy exactly as written, the few edits the
harness's `Listener` options do not cover (a wasm module fetched from a server that is down,
listener filters in another order), HAProxy health-checking without a PROXY header, and the
lint report read back as rule ids by severity.

Built on the harness (`envoy.bootstrap`, `listener_config`, `HAProxy`), nothing in it changed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import urllib.error
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from . import net
from .envoy import LIVE, WASM, Envoy, Listener, _cluster, bootstrap
from .haproxy import HAProxy


# --- bootstraps ------------------------------------------------------------------------------


@dataclass
class Bootstrap:
    """An Envoy bootstrap built from Listener specs (ports chosen now), editable as a dict
    before it is written; `port(name)` is a listener's port."""

    config: dict
    listeners: dict[str, Listener]

    def port(self, name: str = "main") -> int:
        return self.listeners[name].port

    def listener(self, name: str = "main") -> dict:
        """The listener's dict in the bootstrap (to edit)."""
        for listener in self.config["static_resources"]["listeners"]:
            if listener["name"] == name:
                return listener
        raise KeyError(name)


def make_bootstrap(*listeners: Listener, build: str, upstream_port: int, wasm: Path = WASM) -> Bootstrap:
    """The harness's bootstrap for `listeners` (IPv4 only; a Listener that names no build gets
    `build`)."""
    for spec in listeners:
        spec.build = spec.build or build
        spec.ipv6 = False
        if not spec.port:
            spec.port = net.free_port()
    config = bootstrap(list(listeners), admin_port=net.free_port(), upstream_port=upstream_port, wasm=wasm)
    return Bootstrap(config, {spec.name: spec for spec in listeners})


def wasm_plugin_configs(node) -> Iterator[dict]:
    """Every proxy-wasm PluginConfig (a dict holding `vm_config`) anywhere in `node`."""
    if isinstance(node, dict):
        if "vm_config" in node and "root_id" in node:
            yield node
        for value in node.values():
            yield from wasm_plugin_configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from wasm_plugin_configs(value)


def fetch_wasm_from(boot: Bootstrap, port: int, wasm: Path = WASM, cluster: str = "wasm_source") -> None:
    """Every wasm filter of `boot` loads the module over HTTP from 127.0.0.1:`port` (a `remote`
    code source pinned by the module's sha256, as a registry-backed deployment does) instead of
    from a local file; adds the cluster it is fetched through. With nothing serving that port,
    the fetch fails when Envoy starts and every such filter is left without a VM."""
    sha256 = hashlib.sha256(Path(wasm).read_bytes()).hexdigest()
    for plugin in wasm_plugin_configs(boot.config):
        plugin["vm_config"]["code"] = {
            "remote": {
                "http_uri": {"uri": f"http://127.0.0.1:{port}/trustip.wasm", "cluster": cluster, "timeout": "1s"},
                "sha256": sha256,
                "retry_policy": {"num_retries": 0},
            }
        }
    boot.config["static_resources"]["clusters"].append(_cluster(cluster, port))


def answer_health_checks(boot: Bootstrap, path: str, listener: str = "main") -> None:
    """Envoy answers `GET path` itself: envoy.filters.http.health_check (200 while live, 503
    while draining) just before the router, after trustip's HTTP filter, as `trustip render
    --health-check-path` places it."""
    for chain in boot.listener(listener)["filter_chains"]:
        for network_filter in chain["filters"]:
            if network_filter["name"] != "envoy.filters.network.http_connection_manager":
                continue
            http_filters = network_filter["typed_config"]["http_filters"]
            http_filters.insert(
                len(http_filters) - 1,
                {
                    "name": "envoy.filters.http.health_check",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
                        "pass_through_mode": False,
                        "headers": [{"name": ":path", "string_match": {"exact": path}}],
                    },
                },
            )


def dead_port() -> int:
    """A loopback port nothing listens on (handed out by the harness, never bound)."""
    return net.free_port()


# --- one file, linted and run ----------------------------------------------------------------


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path


class FileEnvoy(Envoy):
    """Envoy on a bootstrap file exactly as it is on disk (the file lint read): nothing is
    rewritten; the admin port is read from the file."""

    def __init__(self, path: Path, *, name: str | None = None) -> None:
        config = yaml.safe_load(Path(path).read_text())
        super().__init__(config, name=name or Path(path).stem, workdir=Path(path).parent / f"{Path(path).stem}.run")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = Path(path)

    def _spawn(self) -> None:
        self.log_path.touch()
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(self.command(), stdout=self._stderr, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def spawn(self) -> None:
        """Starts the process without waiting (`wait_ready` then waits)."""
        self._spawn()
        LIVE.append(self)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits until admin /ready says LIVE, as `Envoy.start` does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Envoy exited with {self.process.returncode} while starting\n{self.output_text()}")
            try:
                if self.admin("/ready", timeout=1).strip() == "LIVE":
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"Envoy not ready after {timeout}s\n{self.output_text()}")


@dataclass
class ConfigFile:
    """A bootstrap written to `path`: what lint reads and Envoy runs."""

    path: Path
    boot: Bootstrap

    def port(self, name: str = "main") -> int:
        return self.boot.port(name)


@contextmanager
def running(*configs: ConfigFile) -> Iterator[list[FileEnvoy]]:
    """Envoy on each file for the block, started side by side (a bad configuration and its fix
    start together; spawned from the calling thread: an Envoy spawned from a worker thread was sent SIGTERM when that thread ended). Each
    is in the suite's list of live Envoys meanwhile; when the block fails, their logs are
    printed (captured with the test's output)."""
    envoys = [FileEnvoy(config.path) for config in configs]
    try:
        for envoy in envoys:
            envoy.spawn()
        for envoy in envoys:
            envoy.wait_ready()
        yield envoys
    except BaseException:
        for envoy in envoys:
            print(f"=== Envoy on {envoy.config_path} ===\n{envoy.output_text()[-20000:]}")
        raise
    finally:
        for envoy in envoys:
            envoy.stop()


# --- lint ------------------------------------------------------------------------------------


@dataclass
class LintReport:
    """`trustip lint --format json FILE`: the exit code and the findings' rule ids by severity."""

    code: int
    report: dict
    raw: str
    errors: set[str] = field(default_factory=set)
    warnings: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, code: int, out: str, err: str) -> "LintReport":
        try:
            report = json.loads(out)
        except json.JSONDecodeError as error:
            raise AssertionError(f"lint printed no JSON (exit {code}): {error}\nstdout: {out}\nstderr: {err}") from None
        result = cls(code, report, out)
        for finding in report.get("findings", []):
            (result.errors if finding.get("severity") == "error" else result.warnings).add(finding.get("id"))
        return result

    def __repr__(self) -> str:
        return f"<lint exit {self.code}: errors {sorted(self.errors)}, warnings {sorted(self.warnings)}\n{self.raw}>"


# --- HAProxy checking without PROXY -----------------------------------------------------------


class PlainCheckHAProxy(HAProxy):
    """HAProxy whose traffic carries PROXY v2 but whose HTTP health checks do not: the server
    line names the check port (`check port N`), which stops HAProxy 2.6 from sending its PROXY
    header on checks (the way a cloud load balancer checks a target without PROXY). Checked by
    test_lint_proofs: the check's first bytes are `GET`."""

    def __init__(self, backend_port: int, **options) -> None:
        super().__init__(backend_port, check_send_proxy=False, **options)
        text = self.config_path.read_text()
        assert " check inter " in text, text
        self.config_path.write_text(text.replace(" check inter ", f" check port {backend_port} inter ", 1))
