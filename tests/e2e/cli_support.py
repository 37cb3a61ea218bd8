"""Support for the command-line tests (test_cli_*.py, test_matrix.py): the `trustip` binary and
ways to run it, an Envoy that runs a rendered YAML bootstrap exactly as written, `envoy --mode
validate`, and an HAProxy with several frontends (PROXY v2 on or off per frontend).

Built on the suite's harness (imported, not changed). The binary comes from $TRUSTIP_CLI, else
`cargo build -p trustip-cli` builds target/debug/trustip once per session."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness import net
from harness.envoy import ENVOY_BIN, NATIVE, REPO, WASM, Envoy
from harness.haproxy import HAProxy

DEPLOY_COMPOSE = REPO / "deploy" / "compose"
ISTIO_CRDS = REPO / "tests" / "data" / "istio"


@functools.lru_cache(maxsize=None)
def cli_path() -> Path:
    """$TRUSTIP_CLI, or target/debug/trustip built now (cargo is quick when it is up to date)."""
    given = os.environ.get("TRUSTIP_CLI")
    if given:
        path = Path(given)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"TRUSTIP_CLI={given} is not an executable file")
        return path
    build = subprocess.run(
        ["cargo", "build", "--quiet", "-p", "trustip-cli"], cwd=REPO, capture_output=True, text=True
    )
    if build.returncode != 0:
        raise RuntimeError(f"cargo build -p trustip-cli failed:\n{build.stderr}")
    # A private copy: another cargo run sharing target/ cannot swap the binary mid-session.
    copy = Path(tempfile.mkdtemp(prefix="trustip-cli-")) / "trustip"
    shutil.copy2(REPO / "target" / "debug" / "trustip", copy)
    return copy


@dataclass
class Run:
    """One run of the CLI: exit code, stdout, stderr."""

    args: list[str]
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"<trustip {' '.join(self.args)} -> {self.code}\nstdout: {self.out}\nstderr: {self.err}>"


class Cli:
    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, *args: str | Path, expect: int | None = 0, cwd: Path | None = None, timeout: float = 60) -> Run:
        """Runs `trustip ARGS`; asserts the exit code when `expect` is not None."""
        argv = [str(a) for a in args]
        done = subprocess.run(
            [str(self.path), *argv], capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout
        )
        run = Run(argv, done.returncode, done.stdout, done.stderr)
        if expect is not None:
            assert run.code == expect, run
        return run

    def probe(self, port: int, host: str = "127.0.0.1", *extra: str, expect: int | None = None) -> Run:
        return self.run("probe", f"{host}:{port}", "--json", "--timeout", "5", *extra, expect=expect)


@pytest.fixture(scope="session")
def cli() -> Cli:
    """The `trustip` command line (import this fixture into a test module to use it)."""
    return Cli(cli_path())


@pytest.fixture(scope="session")
def native() -> Path:
    """The native build, `cargo build -p trustip --release` (or $TRUSTIP_NATIVE); import this
    fixture into a test module to use it."""
    if not NATIVE.is_file():
        pytest.fail(f"{NATIVE} does not exist: build it with `cargo build -p trustip --release` (or set TRUSTIP_NATIVE)")
    return NATIVE


def write_policy(directory: Path, name: str, policy: dict | str) -> Path:
    path = Path(directory) / f"{name}.json"
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy, indent=2) + "\n")
    return path


# --- Envoy running rendered YAML --------------------------------------------------------


class RenderedEnvoy(Envoy):
    """Envoy started on a YAML bootstrap exactly as given (as `trustip render` printed it, or
    with only addresses and paths substituted). Readiness, logs and stop come from the harness;
    the admin port is read from the YAML."""

    def __init__(self, yaml_text: str, *, name: str = "rendered") -> None:
        config = yaml.safe_load(yaml_text)
        super().__init__(config, name=name)
        self.yaml_text = yaml_text
        self.config_path = self.workdir / f"{name}.yaml"
        self.config_path.write_text(yaml_text)

    def _spawn(self) -> None:
        self.log_path.touch()
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(
            self.command(), stdout=self._stderr, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def listener_port(self, index: int = 0) -> int:
        listener = self.config["static_resources"]["listeners"][index]
        return listener["address"]["socket_address"]["port_value"]


def envoy_validate(config_path: Path) -> subprocess.CompletedProcess:
    """`envoy --mode validate -c FILE`: parses and builds the config without serving."""
    return subprocess.run(
        [str(ENVOY_BIN), "--mode", "validate", "-c", str(config_path), "-l", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def localize(
    config: dict,
    *,
    addresses: dict[tuple[str, int], tuple[str, int]],
    wasm: Path | None = None,
    native: Path | None = None,
    policy_text: list[tuple[str, str]] = (),
) -> dict:
    """A generated configuration made runnable here, changing only addresses and paths: every
    socket address in `addresses` moves to its new (address, port), every wasm module path
    (a wasm filter's vm_config.code) becomes `wasm`, every native module path (a dynamic-module
    filter's dynamic_module_config.module) becomes `native`, and `policy_text` replacements
    apply to the policies' JSON text (wasm `configuration`, native `filter_config`). Each
    address, module kind given and replacement must be used, and no module path of a kind not
    given may be left (a test cannot silently stop substituting)."""
    used: set = set()
    modules = {"code": ("wasm", wasm), "module": ("native", native)}

    def walk(node):
        if isinstance(node, dict):
            socket = node.get("socket_address")
            if isinstance(socket, dict):
                key = (socket["address"], socket["port_value"])
                if key in addresses:
                    used.add(key)
                    socket["address"], socket["port_value"] = addresses[key]
            for holder, (kind, path) in modules.items():
                local = node.get(holder, {}).get("local") if isinstance(node.get(holder), dict) else None
                if isinstance(local, dict) and "filename" in local:
                    assert path is not None, f"a {kind} module in the configuration, but no {kind} path given"
                    used.add(kind)
                    local["filename"] = str(path)
            for key in ("configuration", "filter_config"):
                configuration = node.get(key)
                if isinstance(configuration, dict) and isinstance(configuration.get("value"), str):
                    for old, new in policy_text:
                        if old in configuration["value"]:
                            used.add(old)
                            configuration["value"] = configuration["value"].replace(old, new)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    config = copy.deepcopy(config)
    walk(config)
    kinds = {kind for kind, path in modules.values() if path is not None}
    missing = (set(addresses) | kinds | {old for old, _ in policy_text}) - used
    assert not missing, f"not in the configuration: {missing}"
    return config


def render_envoy(
    cli: Cli, policy: Path, upstream_port: int, *extra: str, wasm: Path = WASM, native: Path | None = None
) -> tuple[str, int]:
    """`trustip render --target envoy` on loopback ports: (yaml, listener port). With `native`,
    the native build (`--build native --module NATIVE`), else the wasm build."""
    port = net.free_port()
    module = ["--build", "native", "--module", native] if native else ["--wasm", wasm]
    run = cli.run(
        "render", "--config", policy, "--target", "envoy", *module,
        "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{net.free_port()}",
        "--upstream", f"127.0.0.1:{upstream_port}", *extra,
    )  # fmt: skip
    return run.out, port


# --- HAProxy with several frontends ------------------------------------------------------


class LoadBalancer(HAProxy):
    """One HAProxy process (`mode tcp`), one frontend per route: `routes` maps a name to
    (backend port on 127.0.0.1, send PROXY v2?). Every frontend listens on `bind_ip` and every
    backend connection leaves from `source_ip`, the direct peer Envoy sees. The harness's HAProxy
    class runs it (start, stop, output); only the configuration differs."""

    def __init__(self, routes: dict[str, tuple[int, bool]], *, bind_ip: str = "127.0.0.5", source_ip: str = "127.0.0.5") -> None:
        first_backend = next(iter(routes.values()))[0]
        super().__init__(first_backend, bind_ip=bind_ip, source_ip=source_ip)
        self.ports = {name: net.free_port(bind_ip) for name in routes}
        self.port = next(iter(self.ports.values()))  # start() waits for this one
        lines = [
            "global",
            "    log stderr format raw local0 info",
            "defaults",
            "    mode tcp",
            "    log global",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
        ]
        for name, (backend_port, send_proxy) in routes.items():
            proxy = " send-proxy-v2" if send_proxy else ""
            lines += [
                f"frontend fe_{name}",
                f"    bind {bind_ip}:{self.ports[name]}",
                f"    default_backend be_{name}",
                f"backend be_{name}",
                f"    server envoy 127.0.0.1:{backend_port}{proxy} source {source_ip}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> "LoadBalancer":
        super().start()
        for port in self.ports.values():
            net.wait_listening(self.bind_ip, port, alive=lambda: self.process.poll() is None)
        return self


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"trustip-{prefix}-"))


class HAProxyFromConfig(HAProxy):
    """HAProxy running a given configuration text (e.g. a rendered haproxy.cfg with addresses
    substituted); `port` on `bind_ip` is where its frontend listens."""

    def __init__(self, config_text: str, *, bind_ip: str, port: int) -> None:
        super().__init__(0, bind_ip=bind_ip)
        self.port = port
        self.config_path.write_text(config_text)


# --- CRD schemas (Istio, Envoy Gateway) --------------------------------------------------


def _closed(schema):
    """A copy of `schema` where every object with `properties` refuses other fields, unless it
    says `x-kubernetes-preserve-unknown-fields`."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in schema
    ):
        result["additionalProperties"] = False
    return result


class CrdSchemas:
    """The spec validators of the CRDs in `directory` (YAML files, one CRD each), by
    (apiVersion, kind), every served version. `namespaced`: a document must name its namespace."""

    def __init__(self, directory: Path, *, namespaced: bool = False) -> None:
        import jsonschema

        self.namespaced = namespaced
        self.validators: dict = {}
        for path in sorted(directory.glob("*.yaml")):
            (crd,) = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            assert crd["kind"] == "CustomResourceDefinition", path
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", False):
                    continue
                spec_schema = _closed(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
                validator_class = jsonschema.validators.validator_for(spec_schema, default=jsonschema.Draft7Validator)
                validator_class.check_schema(spec_schema)
                self.validators[(f"{group}/{version['name']}", kind)] = validator_class(spec_schema)

    def errors(self, document: dict) -> list[str]:
        key = (document.get("apiVersion"), document.get("kind"))
        if key not in self.validators:
            return [f"no served CRD version for apiVersion={key[0]} kind={key[1]} (have {sorted(self.validators)})"]
        problems = []
        metadata = document.get("metadata") or {}
        if self.namespaced and (not metadata.get("name") or not metadata.get("namespace")):
            problems.append("metadata.name or metadata.namespace missing")
        elif not metadata.get("name"):
            problems.append("metadata.name missing")
        unknown_top = set(document) - {"apiVersion", "kind", "metadata", "spec"}
        if unknown_top:
            problems.append(f"unknown top-level fields {sorted(unknown_top)}")
        for error in self.validators[key].iter_errors(document.get("spec")):
            where = ".".join(str(p) for p in error.absolute_path)
            problems.append(f"spec.{where}: {error.message}" if where else f"spec: {error.message}")
        return problems
