"""Fixtures of the e2e suite: the recording upstream, Envoy and HAProxy launchers, and a hook
that prints the logs of the Envoys (and HAProxies) involved when a test fails."""

from __future__ import annotations

import pytest

from harness import envoy as envoy_mod
from harness import names as shared_names
from harness.envoy import WASM, EnvoyWithListeners, Listener
from harness.haproxy import HAProxy
from harness.upstream import EchoServer

LIVE_HAPROXIES: list[HAProxy] = []
MAX_LOG_CHARS = 20000


@pytest.fixture(scope="session")
def wasm():
    """The module trustip ships, `scripts/build-wasm` (cargo release build, then wasm-opt -Oz):
    scripts/test passes it as $TRUSTIP_WASM, the path the size budget is checked on."""
    if not WASM.is_file():
        pytest.fail(f"{WASM} does not exist: build it with `scripts/build-wasm` (or set TRUSTIP_WASM)")
    return WASM


@pytest.fixture(scope="session")
def echo():
    server = EchoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """`workdir(name)`: a fresh directory for one process's config and logs, under pytest's
    base temp (kept for the last few runs, so logs can be read after a failure)."""
    return lambda name: tmp_path_factory.mktemp(name, numbered=True)


@pytest.fixture(scope="module")
def start_envoy(request, wasm, echo, workdir):
    """Module-scoped factory: `start_envoy(Listener(...), ...)` starts one Envoy carrying those
    listeners (each with its own plugin configuration), stopped after the module."""
    started: list[EnvoyWithListeners] = []

    def start(*listeners: Listener, name: str | None = None) -> EnvoyWithListeners:
        name = name or request.module.__name__.split(".")[-1]
        instance = EnvoyWithListeners(
            list(listeners), upstream_port=echo.port, wasm=wasm, name=name, workdir=workdir(f"envoy-{name}")
        )
        started.append(instance)
        return instance.start()

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture(scope="module")
def start_haproxy(workdir):
    started: list[HAProxy] = []

    def start(backend_port: int, **options) -> HAProxy:
        instance = HAProxy(backend_port, workdir=workdir("haproxy"), **options)
        started.append(instance)
        instance.start()
        LIVE_HAPROXIES.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()
        if instance in LIVE_HAPROXIES:
            LIVE_HAPROXIES.remove(instance)


class Counters:
    """Counter deltas of one Envoy around a test step: `delta()` gives {name: change} for every
    `wasmcustom.*` stat that changed, names without the `wasmcustom.` prefix."""

    def __init__(self, instance) -> None:
        self.instance = instance
        self.before = instance.stats()

    def delta(self) -> dict[str, int]:
        after = self.instance.stats()
        names = set(after) | set(self.before)
        changes = {}
        for name in names:
            change = after.get(name, 0) - self.before.get(name, 0)
            if change:
                changes[name.removeprefix(shared_names.WASM_STATS_PREFIX)] = change
        return changes


@pytest.fixture
def counters():
    """`counters(envoy)` snapshots that Envoy's wasm counters; `.delta()` later."""
    return Counters


# --- logs of failing tests -----------------------------------------------------------------


_offsets_key = pytest.StashKey[dict]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    item.stash[_offsets_key] = {id(e): e.log_size() for e in envoy_mod.LIVE}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when not in ("call", "setup"):
        return
    offsets = item.stash.get(_offsets_key, {})
    for instance in list(envoy_mod.LIVE):
        text = instance.log_text()[offsets.get(id(instance), 0) :]
        if len(text) > MAX_LOG_CHARS:
            text = "...\n" + text[-MAX_LOG_CHARS:]
        report.sections.append((f"Envoy log {instance.name} (during this test) {instance.log_path}", text))
    for instance in LIVE_HAPROXIES:
        report.sections.append((f"HAProxy output {instance.config_path}", instance.output_text()[-MAX_LOG_CHARS:]))
