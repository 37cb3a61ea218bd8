"""Fixtures of the e2e suite: the recording upstream, Envoy and HAProxy launchers, the build
under test (wasm or native: every module using `start_envoy` runs once per build), counters that
read either build's, and a hook that prints the logs of the Envoys (and HAProxies) involved when
a test fails."""

from __future__ import annotations

import re

import pytest

from harness import envoy as envoy_mod
from harness import names as shared_names
from harness.envoy import NATIVE, WASM, EnvoyWithListeners, Listener
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
def native():
    """The native build, the Envoy dynamic module `cargo build -p trustip --release` writes
    (target/release/libtrustip.so); $TRUSTIP_NATIVE overrides it. Nothing is built here."""
    if not NATIVE.is_file():
        pytest.fail(f"{NATIVE} does not exist: build it with `cargo build -p trustip --release` (or set TRUSTIP_NATIVE)")
    return NATIVE


# --- the build under test ----------------------------------------------------------------

BUILDS = ("wasm", "native")
# Modules that use start_envoy but choose their build themselves (owned elsewhere): they run
# once, with the Listeners they spell out.
SINGLE_BUILD_MODULES = {
    "test_native_module": "native-only tests: every Listener says build='native'",
    "test_cli_probe": "CLI tests choose their own build",
    "test_envoy_facts": "Envoy's own behaviour: no trustip filter is loaded, so there is no build to vary",
}
BUILD_MARKERS = {
    # marker: (the build it is about, the other build's items are skipped)
    "wasm_only": ("wasm", "native"),
    "native_only": ("native", "wasm"),
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "wasm_only(reason): a test (or parametrised case) about the wasm build only; its native "
        "case is skipped with the reason",
    )
    config.addinivalue_line(
        "markers",
        "native_only(reason): a test (or parametrised case) about the native build only; its wasm "
        "case is skipped with the reason",
    )
    config.addinivalue_line(
        "markers",
        "native_bug(reason): a case the native build should pass like the wasm build but does not "
        "(a bug, written down): its native case is xfail(strict=True, reason)",
    )


def pytest_generate_tests(metafunc):
    """Every test that uses `start_envoy` (or `build`) runs once per build, as `[wasm]` and
    `[native]`, both module-scoped: each module starts its Envoys for one build, then the other."""
    if "build" not in metafunc.fixturenames:
        return
    if metafunc.module.__name__.split(".")[-1] in SINGLE_BUILD_MODULES:
        return  # the `build` fixture then says "wasm"; such modules name their build themselves
    metafunc.parametrize("build", BUILDS, ids=BUILDS, indirect=True, scope="module")


def _reason(marker) -> str:
    return marker.args[0] if marker.args else marker.kwargs.get("reason", "")


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        build = callspec.params.get("build") if callspec else None
        if build is None:
            continue
        for name, (about, other) in BUILD_MARKERS.items():
            marker = item.get_closest_marker(name)
            if marker is not None and build == other:
                item.add_marker(pytest.mark.skip(reason=f"{about} build only: {_reason(marker)}"))
        marker = item.get_closest_marker("native_bug")
        if marker is not None and build == "native":
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"native build bug: {_reason(marker)}"))


@pytest.fixture(scope="module")
def build(request):
    """The build under test: "wasm" (proxy-wasm filters chosen by root_id) or "native" (the
    dynamic module's filters chosen by filter_name). Parametrised per module by
    pytest_generate_tests; "wasm" where a module is not parametrised."""
    return getattr(request, "param", "wasm")


class BuildNames:
    """The names one build gives the same thing (docs/native.md, "Names"), for the few tests that
    read /stats themselves; `counters` and the harness's access-log formats (filter-state keys)
    already hide the difference."""

    def __init__(self, build: str) -> None:
        self.build = build
        native = build == "native"
        names = shared_names.NAMES
        # What to give admin /stats?filter= to see trustip's counters.
        self.stats_filter = names["native_metrics_namespace"] if native else shared_names.WASM_STATS_PREFIX.rstrip(".")

    def stat(self, counter: str) -> str:
        """The full /stats name of an HTTP or network counter (`trustip.http.accept_proxy`):
        wasm `wasmcustom.trustip.http.accept_proxy`, native `trustip.http.accept_proxy` (the
        module's metrics_namespace, no other scope)."""
        role = counter.split(".")[1]
        assert role in ("http", "network"), f"{counter}: the listener filter's counters are scoped per listener"
        return counter if self.build == "native" else f"{shared_names.WASM_STATS_PREFIX}{counter}"


@pytest.fixture(scope="module")
def build_names(build) -> BuildNames:
    return BuildNames(build)


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
def start_envoy(request, build, echo, workdir):
    """Module-scoped factory: `start_envoy(Listener(...), ...)` starts one Envoy carrying those
    listeners (each with its own plugin configuration), stopped after the module. A Listener
    that does not name its build gets the module's `build`."""
    started: list[EnvoyWithListeners] = []
    # The artifact of the build under test must exist (fails clearly, builds nothing).
    artifact = request.getfixturevalue(build)
    wasm = artifact if build == "wasm" else WASM

    def start(*listeners: Listener, name: str | None = None) -> EnvoyWithListeners:
        name = name or request.module.__name__.split(".")[-1]
        for spec in listeners:
            if spec.build is None:
                spec.build = build
        instance = EnvoyWithListeners(
            list(listeners), upstream_port=echo.port, wasm=wasm, name=name, workdir=workdir(f"envoy-{name}-{build}")
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


# Envoy scopes a listener filter's counters per listener: listener.<address>.trustip.listener.*
_LISTENER_SCOPE = re.compile(r"^listener\.[^ ]*?\.(?=trustip\.)")


def trustip_counters(instance) -> dict[str, int]:
    """trustip's counters in one Envoy, either build, by one name: `trustip.<role>.<outcome>`.
    wasm: `wasmcustom.trustip.*`, the prefix stripped; native (`metrics_namespace: trustip`):
    `trustip.*`, the listener filter's per-listener `listener.<address>.` scope stripped (summed
    over listeners)."""
    prefix = shared_names.WASM_STATS_PREFIX
    out: dict[str, int] = {}
    for name, value in instance.stats(shared_names.NAMES["metric_prefix"]).items():
        name = _LISTENER_SCOPE.sub("", name.removeprefix(prefix))
        if name.startswith(f"{shared_names.NAMES['metric_prefix']}."):
            out[name] = out.get(name, 0) + value
    return out


class Counters:
    """Counter deltas of one Envoy around a test step: `delta()` gives {name: change} for every
    trustip counter that changed, named `trustip.<role>.<outcome>` whichever build counted it."""

    def __init__(self, instance) -> None:
        self.instance = instance
        self.before = trustip_counters(instance)

    def delta(self) -> dict[str, int]:
        after = trustip_counters(self.instance)
        names = set(after) | set(self.before)
        changes = {}
        for name in names:
            change = after.get(name, 0) - self.before.get(name, 0)
            if change:
                changes[name] = change
        return changes


@pytest.fixture
def counters():
    """`counters(envoy)` snapshots that Envoy's trustip counters (wasm or native); `.delta()` later."""
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
