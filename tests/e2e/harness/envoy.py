"""Envoy for the e2e suite: a bootstrap built in Python and an Envoy subprocess.

`bootstrap()` builds the whole config as a dict from a few options per listener (PROXY protocol
none/optional/strict, TLV rules, set_filter_state on/off, the network and HTTP roles on/off,
the plugin's JSON configuration, an access log; an outbound PROXY socket on a cluster of the
listener's own, TLS passthrough by SNI). One Envoy can carry several listeners, each with its
own plugin configuration, so a test module pays for one Envoy start.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import names, net

REPO = Path(__file__).resolve().parents[3]
ENVOY_BIN = Path(os.environ.get("TRUSTIP_ENVOY", REPO / ".venv" / "bin" / "envoy"))
# The module trustip ships (scripts/build-wasm: cargo release build, then wasm-opt -Oz).
WASM = Path(os.environ.get("TRUSTIP_WASM", REPO / "target" / "trustip.wasm"))
# The native build: the Envoy dynamic module `cargo build --release` writes.
NATIVE = Path(os.environ.get("TRUSTIP_NATIVE", REPO / "target" / "release" / names.NAMES["native_module_file"]))

# Contract: the proxy_protocol listener filter stores these TLVs in filter state under these keys.
WELL_KNOWN_TLVS = {
    234: "aws_vpce_id",  # 0xEA
    238: "azure_link_id",  # 0xEE
    224: "gcp_psc_connection_id",  # 0xE0
    2: "authority",
    5: "unique_id",
}

def _log_formats(client: str, reason: str, connection_client: str, connection_reason: str) -> tuple[str, str]:
    access = (
        f"trustip test_id=%REQ(X-TEST-ID)% client_ip=%FILTER_STATE({client}:PLAIN)% "
        f"reason=%FILTER_STATE({reason}:PLAIN)% direct=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% "
        "source=%DOWNSTREAM_REMOTE_ADDRESS% status=%RESPONSE_CODE%\n"
    )
    connection = (
        f"trustip-connection client_ip=%FILTER_STATE({connection_client}:PLAIN)% "
        f"reason=%FILTER_STATE({connection_reason}:PLAIN)% direct=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% "
        "source=%DOWNSTREAM_REMOTE_ADDRESS% bytes_received=%BYTES_RECEIVED%\n"
    )
    return access, connection


# The wasm build's roles all publish under wasm.trustip.*; the native build's HTTP filter under
# trustip.*, its listener and network filters under trustip.connection.* (see src/core/names.rs).
ACCESS_LOG_FORMAT, CONNECTION_LOG_FORMAT = _log_formats(
    names.CLIENT_IP_FILTER_STATE, names.REASON_FILTER_STATE, names.CLIENT_IP_FILTER_STATE, names.REASON_FILTER_STATE
)
NATIVE_ACCESS_LOG_FORMAT, NATIVE_CONNECTION_LOG_FORMAT = _log_formats(
    names.NAMES["native_client_ip_filter_state"],
    names.NAMES["native_reason_filter_state"],
    names.NAMES["native_connection_client_ip_filter_state"],
    names.NAMES["native_connection_reason_filter_state"],
)


@dataclass
class Listener:
    """One listener and its filter chain. `plugin` is the trustip JSON configuration (a dict,
    or a str sent as is); `network_plugin` defaults to `plugin`."""

    name: str = "main"
    proxy_protocol: str = "optional"  # none | optional | strict
    tlv_rules: dict[int, str] | None = field(default_factory=lambda: dict(WELL_KNOWN_TLVS))
    # The proxy_protocol rules' value_string_encoding (None: Envoy's default, SANITIZED_UTF8).
    tlv_value_encoding: str | None = None
    # Where proxy_protocol keeps the TLVs: FILTER_STATE (both wasm roles can read it), or None for
    # Envoy's default, the connection's dynamic metadata (which the native listener filter reads).
    tlv_location: str | None = "FILTER_STATE"
    set_filter_state: bool = True
    direct_peer_key: str = names.DIRECT_PEER_KEY  # the filter-state object set_filter_state fills
    network_role: bool = False
    http_role: bool = True
    tcp_proxy: bool = False  # network filters end in tcp_proxy instead of the HCM
    skip_xff_append: bool = True  # what trustip's deployments use; False shows Envoy's habit
    use_remote_address: bool = True  # False: the HCM takes the downstream address from XFF
    # What set_filter_state records: D alone (P then comes from source.address), or
    # names.DIRECT_PEER_FORMAT (D and P in one value, as rendered configs do).
    direct_peer_format: str = "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%"
    plugin: dict | str | None = field(default_factory=dict)
    network_plugin: dict | str | None = None
    http_root_id: str = names.HTTP_ROOT_ID
    network_root_id: str = names.NETWORK_ROOT_ID
    # Both wasm filters' failure_policy, and each one's vm_id ("": Envoy's default, every filter
    # loading the same code then shares one VM per worker).
    failure_policy: str = "FAIL_CLOSED"
    http_vm_id: str = ""
    network_vm_id: str = ""
    access_log: Path | None = None  # HCM (or tcp_proxy) access log
    connection_log: Path | None = None  # listener access log: one line per connection
    ipv6: bool = True  # also listen on [::1] at the same port
    # Listen on ::ffff:127.0.0.1 with ipv4_compat instead: IPv4 clients then reach the filters
    # as IPv4-mapped IPv6 peers (D = [::ffff:127.0.0.66]:port).
    dual_stack: bool = False
    port: int = 0  # chosen by the harness when 0
    # The HCM's headers_with_underscores_action: what rendered configs and samples set, so that
    # look-alikes such as x_real_ip never reach the upstream (None: Envoy's default, ALLOW).
    headers_with_underscores_action: str | None = "DROP_HEADER"
    # Which build runs the roles: "wasm" (proxy-wasm filters) or "native" (the dynamic module's
    # filters, named by filter_name; set_filter_state is then unused by trustip). None: the wasm
    # build, or under the suite's `start_envoy` the module's build (conftest's `build` fixture).
    build: str | None = None
    listener_role: bool = False  # native only: trustip-listener after proxy_protocol
    # Outbound PROXY (docs/outbound-proxy.md): "v1" or "v2" gives the listener its own cluster,
    # `upstream-<name>`, whose transport socket is envoy.transport_sockets.upstream_proxy_protocol
    # wrapping raw_buffer (TLS passthrough too: Envoy forwards the TLS bytes as they are).
    upstream_proxy: str | None = None
    # That cluster's port on 127.0.0.1 (a PROXY-reading backend); None: the suite's echo server.
    # Setting it alone also gives the listener its own cluster, without the PROXY socket.
    upstream_port: int | None = None
    # TLV types the proxy_protocol listener filter keeps for the upstream PROXY header
    # (`pass_through_tlvs`, INCLUDE), and those the upstream socket then writes (v2 only).
    # None: the field is left out (Envoy then keeps and writes no TLV).
    proxy_pass_through_tlvs: list[int] | None = None
    upstream_pass_through_tlvs: list[int] | None = None
    # The HCM's add_proxy_protocol_connection_state (None: left out, Envoy's default true: the
    # HCM records the connection's addresses for the upstream PROXY header when no header was
    # parsed; false shows what the socket writes without any record).
    add_proxy_protocol_connection_state: bool | None = None
    # TLS passthrough: tls_inspector after proxy_protocol (and after trustip-listener), one filter
    # chain matched on these SNI names ending in tcp_proxy; no other chain, so a ClientHello
    # naming anything else finds no filter chain and is closed by Envoy.
    tls_server_names: list[str] | None = None

    @property
    def cluster(self) -> str:
        """The cluster the listener routes to: its own when it needs one, else the shared one."""
        return f"upstream-{self.name}" if self.upstream_proxy or self.upstream_port else "upstream"


def _plugin_json(plugin: dict | str) -> str:
    return plugin if isinstance(plugin, str) else json.dumps(plugin)


def wasm_plugin(
    name: str, root_id: str, plugin: dict | str, wasm: Path, *, failure_policy: str = "FAIL_CLOSED", vm_id: str = ""
) -> dict:
    vm_config = {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(wasm)}}}
    if vm_id:
        vm_config = {"vm_id": vm_id, **vm_config}
    return {
        "name": name,
        "root_id": root_id,
        "failure_policy": failure_policy,
        "vm_config": vm_config,
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": _plugin_json(plugin),
        },
    }


def native_filter(kind: str, filter_name: str, plugin: dict | str, native: Path) -> dict:
    """A dynamic-module filter of `kind` (listener | network | http) running trustip's `filter_name`."""
    type_urls = {
        "listener": "envoy.extensions.filters.listener.dynamic_modules.v3.DynamicModuleListenerFilter",
        "network": "envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter",
        "http": "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
    }
    return {
        "@type": f"type.googleapis.com/{type_urls[kind]}",
        "dynamic_module_config": {
            "module": {"local": {"filename": str(native)}},
            "metrics_namespace": names.NAMES["native_metrics_namespace"],
        },
        "filter_name": filter_name,
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": _plugin_json(plugin)},
    }


def _file_log(path: Path, fmt: str) -> dict:
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"text_format_source": {"inline_string": fmt}},
        },
    }


def listener_config(spec: Listener, upstream_port: int, wasm: Path, native: Path = NATIVE) -> dict:
    native_build = spec.build == "native"
    access_format = NATIVE_ACCESS_LOG_FORMAT if native_build else ACCESS_LOG_FORMAT
    connection_format = NATIVE_CONNECTION_LOG_FORMAT if native_build else CONNECTION_LOG_FORMAT
    listener_filters = []
    if spec.proxy_protocol != "none":
        pp = {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol",
            "allow_requests_without_proxy_protocol": spec.proxy_protocol == "optional",
        }
        if spec.tlv_rules:
            if spec.tlv_location:
                pp["tlv_location"] = spec.tlv_location
            encoding = {"value_string_encoding": spec.tlv_value_encoding} if spec.tlv_value_encoding else {}
            pp["rules"] = [
                {"tlv_type": kind, "on_tlv_present": {"key": key, **encoding}} for kind, key in spec.tlv_rules.items()
            ]
        if spec.proxy_pass_through_tlvs is not None:
            pp["pass_through_tlvs"] = {"match_type": "INCLUDE", "tlv_type": list(spec.proxy_pass_through_tlvs)}
        listener_filters.append({"name": "envoy.filters.listener.proxy_protocol", "typed_config": pp})
    if spec.listener_role:
        assert native_build, "the listener role exists in the native build only"
        listener_filters.append(
            {
                "name": names.NAMES["listener_filter_name"],
                "typed_config": native_filter("listener", names.NAMES["listener_filter_name"], spec.plugin, native),
            }
        )
    if spec.tls_server_names:
        # After trustip's listener filter: a refused connection is closed before Envoy waits
        # for its ClientHello.
        listener_filters.append(
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                },
            }
        )

    network_filters = []
    if spec.set_filter_state:
        network_filters.append(
            {
                "name": "envoy.filters.network.set_filter_state",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config",
                    "on_new_connection": [
                        {
                            "object_key": spec.direct_peer_key,
                            "factory_key": "envoy.string",
                            "format_string": {
                                "text_format_source": {"inline_string": spec.direct_peer_format}
                            },
                        }
                    ],
                },
            }
        )
    if spec.network_role and native_build:
        plugin = spec.network_plugin if spec.network_plugin is not None else spec.plugin
        network_filters.append(
            {
                "name": names.NAMES["network_filter_name"],
                "typed_config": native_filter("network", names.NAMES["network_filter_name"], plugin, native),
            }
        )
    elif spec.network_role:
        plugin = spec.network_plugin if spec.network_plugin is not None else spec.plugin
        network_filters.append(
            {
                "name": "envoy.filters.network.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                    "config": wasm_plugin(
                        f"trustip-{spec.name}-network",
                        spec.network_root_id,
                        plugin,
                        wasm,
                        failure_policy=spec.failure_policy,
                        vm_id=spec.network_vm_id,
                    ),
                },
            }
        )
    if spec.tcp_proxy or spec.tls_server_names:
        tcp = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": f"tcp_{spec.name}",
            "cluster": spec.cluster,
        }
        if spec.access_log:
            tcp["access_log"] = [_file_log(spec.access_log, connection_format)]
        network_filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": tcp})
    else:
        http_filters = []
        if spec.http_role and native_build:
            http_filters.append(
                {
                    "name": names.NAMES["http_filter_name"],
                    "typed_config": native_filter("http", names.NAMES["http_filter_name"], spec.plugin, native),
                }
            )
        elif spec.http_role:
            http_filters.append(
                {
                    "name": "envoy.filters.http.wasm",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": wasm_plugin(
                            f"trustip-{spec.name}-http",
                            spec.http_root_id,
                            spec.plugin,
                            wasm,
                            failure_policy=spec.failure_policy,
                            vm_id=spec.http_vm_id,
                        ),
                    },
                }
            )
        http_filters.append(
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        )
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": f"http_{spec.name}",
            # The filter owns X-Forwarded-For: Envoy must use the (PROXY-derived) peer address
            # but not append it to XFF itself.
            "use_remote_address": spec.use_remote_address,
            "skip_xff_append": spec.skip_xff_append,
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": spec.cluster}}],
                    }
                ]
            },
            "http_filters": http_filters,
        }
        if spec.add_proxy_protocol_connection_state is not None:
            hcm["add_proxy_protocol_connection_state"] = spec.add_proxy_protocol_connection_state
        if spec.headers_with_underscores_action:
            hcm["common_http_protocol_options"] = {
                "headers_with_underscores_action": spec.headers_with_underscores_action
            }
        if spec.access_log:
            hcm["access_log"] = [_file_log(spec.access_log, access_format)]
        network_filters.append({"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm})

    address = {"address": "127.0.0.1", "port_value": spec.port}
    if spec.dual_stack:
        address = {"address": "::ffff:127.0.0.1", "port_value": spec.port, "ipv4_compat": True}
    chain: dict = {"filters": network_filters}
    if spec.tls_server_names:
        chain = {"filter_chain_match": {"server_names": list(spec.tls_server_names)}, **chain}
    listener = {
        "name": spec.name,
        "address": {"socket_address": address},
        "listener_filters": listener_filters,
        "filter_chains": [chain],
    }
    if spec.ipv6 and not spec.dual_stack:
        listener["additional_addresses"] = [
            {"address": {"socket_address": {"address": "::1", "port_value": spec.port}}}
        ]
    if spec.connection_log:
        listener["access_log"] = [_file_log(spec.connection_log, connection_format)]
    return listener


def _cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                    ]
                }
            ],
        },
    }


def upstream_proxy_socket(version: str, pass_through_tlvs: list[int] | None = None) -> dict:
    """envoy.transport_sockets.upstream_proxy_protocol wrapping raw_buffer. The header's
    addresses come from the connection's filter-state record envoy.network.proxy_protocol.options
    (written by the proxy_protocol listener filter from a parsed header, else by the HCM or
    tcp_proxy from the connection's addresses); see docs/outbound-proxy.md."""
    assert version in ("v1", "v2"), version
    config: dict = {"version": version.upper()}
    if pass_through_tlvs is not None:
        config["pass_through_tlvs"] = {"match_type": "INCLUDE", "tlv_type": list(pass_through_tlvs)}
    return {
        "name": "envoy.transport_sockets.upstream_proxy_protocol",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport",
            "config": config,
            "transport_socket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
            },
        },
    }


def listener_cluster(spec: Listener, upstream_port: int) -> dict:
    """The listener's own cluster (`spec.cluster`), to its backend, with the PROXY socket."""
    cluster = _cluster(spec.cluster, spec.upstream_port or upstream_port)
    if spec.upstream_proxy:
        cluster["transport_socket"] = upstream_proxy_socket(spec.upstream_proxy, spec.upstream_pass_through_tlvs)
    return cluster


def bootstrap(listeners: list[Listener], *, admin_port: int, upstream_port: int, wasm: Path = WASM) -> dict:
    own = [listener_cluster(spec, upstream_port) for spec in listeners if spec.cluster != "upstream"]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [listener_config(spec, upstream_port, wasm) for spec in listeners],
            "clusters": [_cluster("upstream", upstream_port), *own],
        },
    }


_base_ids = itertools.count((os.getpid() % 4000) * 100 + 10)
LIVE: list["Envoy"] = []  # running instances, for printing their logs when a test fails


class Envoy:
    """An Envoy subprocess: `start()` writes the config, runs Envoy on free ports and waits
    until admin /ready says LIVE; `stop()` ends it. `log_text()` is its log."""

    def __init__(
        self, config: dict | str, *, name: str = "envoy", workdir: Path | None = None, admin_port: int | None = None
    ) -> None:
        """`config` is a bootstrap dict (written as JSON) or YAML text (then give `admin_port`)."""
        self.config = config
        self.name = name
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"trustip-{name}-"))
        suffix = "json" if isinstance(config, dict) else "yaml"
        self.config_path = self.workdir / f"{name}.{suffix}"
        self.log_path = self.workdir / f"{name}.log"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.base_id = next(_base_ids)
        if admin_port is None:
            admin_port = config["admin"]["address"]["socket_address"]["port_value"]
        self.admin_port = admin_port
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            str(ENVOY_BIN),
            "-c", str(self.config_path),
            "--base-id", str(self.base_id),
            "--concurrency", "1",
            "-l", "info",
            "--log-path", str(self.log_path),
            # Logs and access logs reach their files within 50 ms (default: 10 s).
            "--file-flush-interval-msec", "50",
        ]  # fmt: skip

    def _spawn(self) -> None:
        text = json.dumps(self.config, indent=2) if isinstance(self.config, dict) else self.config
        self.config_path.write_text(text)
        self.log_path.touch()
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(self.command(), stdout=self._stderr, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start(self, timeout: float = 30.0) -> "Envoy":
        self._spawn()
        LIVE.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Envoy exited with {self.process.returncode} while starting\n{self.output_text()}"
                )
            try:
                if self.admin("/ready", timeout=1).strip() == "LIVE":
                    return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"Envoy not ready after {timeout}s\n{self.output_text()}")

    def run_to_exit(self, timeout: float = 30.0) -> int:
        """For configurations Envoy must refuse: runs it and returns its exit code (kills it and
        returns None if it is still running after `timeout`)."""
        self._spawn()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return None
        finally:
            self._stderr.close()

    def stop(self) -> None:
        net.terminate(self.process)
        if self in LIVE:
            LIVE.remove(self)
        if hasattr(self, "_stderr") and not self._stderr.closed:
            self._stderr.close()

    def admin(self, path: str, timeout: float = 5.0, method: str = "GET") -> str:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.read().decode("utf-8", "replace")

    def stats(self, filter: str = names.WASM_STATS_PREFIX.rstrip(".")) -> dict[str, int]:
        """Admin `/stats?filter=...` (plain text) as a dict of counters and gauges."""
        text = self.admin(f"/stats?filter={filter}")
        result = {}
        for line in text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                result[name.strip()] = int(value)
        return result

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stdout_text(self) -> str:
        """What Envoy printed (stdout and stderr): stdout access logs, fatal startup errors."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def output_text(self) -> str:
        """Log file and stdout/stderr together (fatal startup errors go to stderr)."""
        try:
            stderr = self.stderr_path.read_text(errors="replace")
        except OSError:
            stderr = ""
        return f"--- log ({self.log_path}) ---\n{self.log_text()}\n--- stdout/stderr ---\n{stderr}"

    def wait_for_log(self, needle: str, timeout: float = 5.0, start: int = 0) -> str:
        """Waits until the log (from byte `start`) holds a line containing `needle`."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[start:]
            for line in text.splitlines():
                if needle in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {needle!r} after {timeout}s")
            time.sleep(0.05)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0


def wait_for_line(path: Path, needle: str, timeout: float = 5.0) -> str:
    """Waits until the file at `path` has a line containing `needle` (access logs are flushed
    every 50 ms by the suite's Envoy command line)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no line with {needle!r} in {path} after {timeout}s")
        time.sleep(0.05)


class EnvoyWithListeners(Envoy):
    """An Envoy built from `Listener` specs; `port(name)` finds a listener's port."""

    def __init__(
        self,
        listeners: list[Listener],
        *,
        upstream_port: int,
        name: str = "envoy",
        wasm: Path = WASM,
        workdir: Path | None = None,
    ) -> None:
        workdir = Path(workdir or tempfile.mkdtemp(prefix=f"trustip-{name}-"))
        for spec in listeners:
            if not spec.port:
                spec.port = net.free_port_pair() if spec.ipv6 and not spec.dual_stack else net.free_port()
            if spec.access_log is True:
                spec.access_log = workdir / f"access-{spec.name}.log"
            if spec.connection_log is True:
                spec.connection_log = workdir / f"connections-{spec.name}.log"
        self.listeners = {spec.name: spec for spec in listeners}
        config = bootstrap(listeners, admin_port=net.free_port(), upstream_port=upstream_port, wasm=wasm)
        super().__init__(config, name=name, workdir=workdir)

    def port(self, name: str = "main") -> int:
        return self.listeners[name].port
