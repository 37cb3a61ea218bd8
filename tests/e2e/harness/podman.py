"""The docker-compose stack of deploy/compose, run for real with podman and podman-compose (no
Docker engine on the test machine; see docs/compose.md).

- `podman_env()`: the environment every podman command here runs in: CONTAINERS_CONF names
  deploy/compose/containers.conf (runc, cgroupfs, ulimits the sandbox accepts); /etc is not
  touched.
- `build_images()`: deploy/compose/images/build, which assembles FROM scratch stand-ins for the
  compose file's three images from files on this machine and tags them with the names the
  compose file uses (nothing is pulled; an unchanged image is not built again).
- `ComposeStack`: `podman-compose -f docker-compose.yml up -d` / `down` in the compose
  directory, the file as shipped; container lookup by compose labels, logs, Envoy's admin
  counters, and `run_on_network()` for a container of one's own on the stack's network.

Nothing here skips: when podman cannot run, the error says why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import names

REPO = Path(__file__).resolve().parents[3]
# The stack to run: deploy/compose as shipped. TRUSTIP_COMPOSE_DIR points at another copy (for
# trying a changed stack; it must keep the compose file's relative wasm path meaningful).
COMPOSE_DIR = Path(os.environ.get("TRUSTIP_COMPOSE_DIR", REPO / "deploy" / "compose"))
CONTAINERS_CONF = Path(os.environ.get("TRUSTIP_CONTAINERS_CONF", REPO / "deploy" / "compose" / "containers.conf"))
IMAGES_BUILD = REPO / "deploy" / "compose" / "images" / "build"

# podman-compose: the .venv's (PyPI) first, then the system's. Debian 12's podman-compose 1.0.3
# cannot run this compose file: it neither reads a service's `networks: {name: {ipv4_address}}`
# (it stops with "missing networks: trustip") nor creates the network with the ipam subnet.
PODMAN_COMPOSE_CANDIDATES = [
    os.environ.get("TRUSTIP_PODMAN_COMPOSE", ""),
    str(REPO / ".venv" / "bin" / "podman-compose"),
    "podman-compose",
]
MAX_LOG_CHARS = 20000


class PodmanError(RuntimeError):
    pass


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def run(args: list[str], *, cwd: Path | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(args, cwd=cwd, env=podman_env(), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as error:
        raise PodmanError(f"{args[0]} is not installed ({error}); scripts/setup installs podman and podman-compose") from error
    except subprocess.TimeoutExpired as error:
        raise PodmanError(f"timed out after {timeout}s: {' '.join(args)}\n{error.stdout or ''}\n{error.stderr or ''}") from error
    if check and done.returncode != 0:
        raise PodmanError(f"exit {done.returncode}: {' '.join(map(str, args))}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return run(["podman", *args], timeout=timeout, check=check)


def check_podman() -> str:
    """podman runs containers here: `podman info` works with our containers.conf. Returns the
    version; raises with the reason otherwise."""
    if shutil.which("podman") is None:
        raise PodmanError("podman is not installed: scripts/setup installs it (Debian package podman)")
    if not CONTAINERS_CONF.is_file():
        raise PodmanError(f"{CONTAINERS_CONF} is missing")
    info = json.loads(podman("info", "--format", "json").stdout)
    runtime = info["host"]["ociRuntime"]["name"]
    if runtime != "runc":
        raise PodmanError(f"podman uses the runtime {runtime}, not runc: is CONTAINERS_CONF={CONTAINERS_CONF} read?")
    return info["version"]["Version"]


def podman_compose() -> list[str]:
    """The podman-compose command to use (one that can run this compose file)."""
    tried = []
    for candidate in PODMAN_COMPOSE_CANDIDATES:
        if not candidate:
            continue
        path = shutil.which(candidate)
        if path is None:
            tried.append(f"{candidate}: not found")
            continue
        version = run([path, "version"], check=False).stdout
        # Debian's 1.0.3 prints "podman-composer version  1.0.3"; PyPI's "podman-compose version 1.6.0".
        found = re.search(r"podman-composer? version:?\s*(\d+)\.(\d+)\.(\d+)", version)
        if found is None:
            tried.append(f"{path}: cannot tell its version from {version.strip()!r}")
            continue
        if tuple(int(part) for part in found.groups()) < (1, 0, 6):
            tried.append(
                f"{path}: version {'.'.join(found.groups())} cannot run the compose file (no ipv4_address, "
                "no ipam subnet: 'missing networks: trustip')"
            )
            continue
        return [path]
    raise PodmanError(
        "no podman-compose that can run deploy/compose/docker-compose.yml (verified: PyPI podman-compose 1.0.6, "
        "1.1.0 and 1.6.0 can; Debian 12's 1.0.3 cannot):\n  " + "\n  ".join(tried)
    )


def build_images() -> list[str]:
    """deploy/compose/images/build: the compose file's three images, built locally (or kept when
    unchanged). Returns its lines: "SERVICE IMAGE built|unchanged SECONDS"."""
    done = run([str(IMAGES_BUILD)], timeout=300)
    return done.stdout.splitlines()


def wait_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise PodmanError(f"{host}:{port} is not accepting connections after {timeout}s: {error}") from error
            time.sleep(0.2)


@dataclass
class Container:
    service: str
    name: str
    address: str


class ComposeStack:
    """deploy/compose brought up with podman-compose, as shipped."""

    def __init__(self, directory: Path = COMPOSE_DIR) -> None:
        self.directory = directory
        self.file = directory / "docker-compose.yml"
        self.compose = yaml.safe_load(self.file.read_text())
        self.project = self.compose.get("name") or directory.name
        [network] = self.compose["networks"]
        self.network = f"{self.project}_{network}"
        self.subnet = self.compose["networks"][network]["ipam"]["config"][0]["subnet"]
        self.command = podman_compose()
        self.containers: dict[str, Container] = {}

    # --- life cycle ----------------------------------------------------------------------

    def published_ports(self) -> list[tuple[str, int]]:
        ports = []
        for service in self.compose["services"].values():
            for spec in service.get("ports", []):
                host, port, _ = spec.rsplit(":", 2)
                ports.append((host, int(port)))
        return ports

    def compose_run(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.command, "-f", str(self.file), *args], cwd=self.directory, timeout=timeout, check=check)

    def down(self) -> None:
        """Stops and removes the project's containers and network (nothing when none are there);
        the leftovers are removed even when `podman-compose down` fails."""
        try:
            self.compose_run("down", "-t", "5", timeout=120, check=False)
        except PodmanError:
            pass  # timed out: the removals below still run
        leftovers = podman("ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}").stdout.split()
        if leftovers:
            podman("rm", "-f", *leftovers)
        if podman("network", "exists", self.network, check=False).returncode == 0:
            podman("network", "rm", "-f", self.network)

    def up(self, timeout: float = 60) -> None:
        self.down()  # what an earlier, interrupted run left
        busy = [f"{host}:{port}" for host, port in self.published_ports() if _listening(host, port)]
        if busy:
            raise PodmanError(f"ports the compose file publishes are in use on this machine: {', '.join(busy)}")
        self.compose_run("up", "-d")
        for service in self.compose["services"]:
            self.containers[service] = self._container(service)
        wait_port("127.0.0.1", self.admin_port, timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.admin("/ready").strip() == "LIVE":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PodmanError(f"Envoy in the stack is not ready after {timeout}s:\n{self.logs()}")
            time.sleep(0.2)

    def _container(self, service: str) -> Container:
        names_out = podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()
        if len(names_out) != 1:
            raise PodmanError(f"expected one container of the service {service}, found {names_out}\n{self.logs()}")
        [name] = names_out
        inspect = json.loads(podman("inspect", name).stdout)[0]
        if not inspect["State"]["Running"]:
            raise PodmanError(f"the container {name} is not running: {inspect['State']}\n{self.logs()}")
        networks = inspect["NetworkSettings"]["Networks"]
        address = networks[self.network]["IPAddress"] if self.network in networks else ""
        return Container(service, name, address)

    # --- what the stack says -------------------------------------------------------------

    def container_name(self, service: str) -> str:
        container = self.containers.get(service)
        return container.name if container else f"{self.project}_{service}_1"

    def output(self, service: str) -> str:
        """All a service's container printed, its stdout (where Envoy's access logs and
        HAProxy's log go) and stderr (Envoy's own log) together, in order."""
        done = subprocess.run(
            ["podman", "logs", self.container_name(service)],
            env=podman_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
        )
        return done.stdout

    def logs(self, service: str | None = None, tail: int | None = None) -> str:
        """For a reader: the last `tail` lines (and at most MAX_LOG_CHARS) of one service's
        output, or of all three."""
        out = []
        for each in [service] if service else list(self.compose["services"]):
            lines = self.output(each).splitlines()
            text = "\n".join(lines[-tail:] if tail else lines)
            if len(text) > MAX_LOG_CHARS:
                text = "...\n" + text[-MAX_LOG_CHARS:]
            out.append(f"--- podman logs {self.container_name(each)} ---\n{text}")
        return "\n".join(out)

    @property
    def admin_port(self) -> int:
        for spec in self.compose["services"]["envoy"]["ports"]:
            if spec.endswith(":9901"):
                return int(spec.split(":")[1])
        raise PodmanError("the compose file publishes no Envoy admin port 9901")

    def admin(self, path: str, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as response:
            return response.read().decode("utf-8", "replace")

    def stats(self, filter: str = names.WASM_STATS_PREFIX.rstrip(".")) -> dict[str, int]:
        """Envoy's admin `/stats?filter=...` through the published admin port (the same
        interface as harness.envoy.Envoy.stats, so conftest's Counters reads it)."""
        result = {}
        for line in self.admin(f"/stats?filter={filter}").splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                result[name.strip()] = int(value)
        return result

    def run_on_network(self, image: str, *command: str, address: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A container of one's own on the stack's network at `address` (--rm), its exit awaited."""
        return podman("run", "--rm", "--network", self.network, "--ip", address, image, *command, timeout=timeout, check=False)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
