"""scripts/soak: a soak test of each build (wasm, then native) under mixed load, through real
Envoy and HAProxy on loopback. docs/soak.md says what it runs and checks; `scripts/soak --help`
the options. Exit status 0 when every build passed, 1 when any check failed (the reasons are
printed), 2 on a usage error."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import names, net  # noqa: E402
from harness import envoy as envoy_mod  # noqa: E402
from harness.envoy import EnvoyWithListeners, Listener  # noqa: E402
from harness.haproxy import HAPROXY_BIN, HAProxyProcess  # noqa: E402

HARNESS = ROOT / "tests" / "e2e" / "harness"
PYTHON = sys.executable
LB = "127.0.0.5"  # HAProxy listens here and connects to Envoy from here (the trusted LB)
CDN = "127.0.0.7"  # a trusted proxy, its X-Forwarded-For walked
VOLUME_CLIENT = "127.0.0.1"  # wrk and h2load connect to HAProxy from here (the kernel's choice)
TRUSTED = [f"{CDN}/32", "10.0.0.0/8"]

# The policy under test: the LB must send PROXY; the CDN's and 10/8's X-Forwarded-For is walked;
# the upstream gets R in every client header trustip writes (X-Forwarded-For and Forwarded as
# the verified chain, x-envoy-external-address and x-real-ip); the default strip list.
POLICY = {
    "rules": [{"from": [f"{LB}/32"], "proxy_protocol": "require"}],
    "xff": {"trusted": TRUSTED},
    "headers": {
        "x_forwarded_for": "overwrite",
        "forwarded": "overwrite",
        "set": ["x-envoy-external-address", "x-real-ip"],
    },
}

# Spoofed headers on every volume request (from an untrusted client through the LB): two are on
# the strip list (x-real-ip, true-client-ip), one has an underscore (Envoy drops it), the
# X-Forwarded-For is overwritten.
VOLUME_HEADERS = [
    "X-Forwarded-For: 203.0.113.30",
    "X-Real-IP: 203.0.113.31",
    "True-Client-IP: 203.0.113.32",
    "X_Forwarded_For: 203.0.113.33",
]
VOLUME_STRIPPED = 2
LOG_PATTERNS = ("panicked", "wasm trap", "Function: proxy_on_", "Segmentation fault", "[critical]", "Caught ")


def say(text: str) -> None:
    print(f"soak: {text}", flush=True)


# --- processes -------------------------------------------------------------------------------


class SoakEnvoy(EnvoyWithListeners):
    """The harness's Envoy, with `--concurrency` workers and warning-level logs (trustip logs
    each rejection at info: hundreds of thousands of lines in a long run)."""

    concurrency = 2

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--concurrency") + 1] = str(self.concurrency)
        command[command.index("-l") + 1] = "warning"
        return command


class SoakHAProxy(HAProxyProcess):
    """HAProxy as the load balancer: mode tcp, send-proxy-v2 from 127.0.0.5, no per-connection
    log, a stats socket for the number of connections it made to Envoy."""

    def __init__(self, backend_port: int, workdir: Path) -> None:
        self.port = net.free_port(LB)
        self.config_path = workdir / "haproxy.cfg"
        self.output_path = workdir / "haproxy.out"
        self.stats_socket = workdir / "haproxy.sock"
        self.config_path.write_text(
            "global\n"
            f"    stats socket {self.stats_socket} level admin\n"
            "    maxconn 4000\n"
            "defaults\n"
            "    mode tcp\n"
            "    timeout connect 5s\n"
            "    timeout client 60s\n"
            "    timeout server 60s\n"
            "frontend lb\n"
            f"    bind {LB}:{self.port}\n"
            "    default_backend envoy\n"
            "backend envoy\n"
            f"    server envoy 127.0.0.1:{backend_port} send-proxy-v2 source {LB}\n"
        )

    def listen_address(self) -> tuple[str, int]:
        return LB, self.port

    def server_stat(self) -> dict[str, str]:
        import csv
        import io
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode(errors="replace").lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == "envoy" and row.get("svname") == "envoy":
                return row
        raise RuntimeError(f"no envoy/envoy row in HAProxy's show stat:\n{text[:2000]}")


def start_upstream(workdir: Path) -> tuple[subprocess.Popen, int]:
    command = [PYTHON, str(HARNESS / "soak_upstream.py"), "--port", str(net.free_port())]
    for block in TRUSTED:
        command += ["--trusted", block]
    out = open(workdir / "upstream.out", "w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=out, stdin=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("listening "):
        raise RuntimeError(f"the soak upstream did not start: {line!r} {(workdir / 'upstream.out').read_text()}")
    return process, int(line.split()[1])


def http_json(url: str, timeout: float = 30.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, IndexError, ValueError):
        return None


def envoy_stats_all(envoy) -> dict[str, int]:
    """Admin /stats (counters and gauges, plain text) as a dict."""
    text = envoy.admin("/stats", timeout=30)
    result = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().isdigit():
            result[name.strip()] = int(value)
    return result


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# --- load generators' reports -----------------------------------------------------------------

_UNITS = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}


def parse_wrk(text: str) -> dict:
    """wrk's summary: requests completed, non-2xx, socket errors."""
    out: dict = {"requests": None, "non_2xx": 0, "socket_errors": {}, "ok": False}
    match = re.search(r"(\d+) requests in", text)
    if match:
        out["requests"] = int(match.group(1))
        out["ok"] = True
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if match:
        out["non_2xx"] = int(match.group(1))
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if match:
        out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, match.groups())))
    return out


def parse_h2load(text: str) -> dict:
    """h2load's summary: requests total/started/done/succeeded/failed/errored/timeout, status
    codes."""
    out: dict = {"ok": False}
    match = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    if match:
        keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
        out.update(dict(zip(keys, map(int, match.groups()))))
        out["ok"] = True
    match = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if match:
        out["status"] = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, match.groups())))
    return out


# --- Envoy's counters -------------------------------------------------------------------------

_LISTENER_SCOPE = re.compile(r"^listener\.[^ ]*?\.(?=trustip\.)")


def trustip_counters(stats: dict[str, int], build: str) -> dict[str, int]:
    """trustip's counters by one name per build: `http.<outcome>`, and `conn.<outcome>` for the
    connection decision (wasm: the network role; native: the listener filter, summed over the
    listeners that carry it)."""
    out: dict[str, int] = {}
    for name, value in stats.items():
        name = _LISTENER_SCOPE.sub("", name.removeprefix(names.WASM_STATS_PREFIX))
        if not name.startswith("trustip."):
            continue
        role, _, outcome = name.removeprefix("trustip.").partition(".")
        if role in ("network", "listener"):
            role = "conn"
        key = f"{role}.{outcome}"
        out[key] = out.get(key, 0) + value
    return out


# --- one build ----------------------------------------------------------------------------------


class Run:
    """One build's soak: starts the upstream, Envoy (edge and HTTP-only listeners), HAProxy, the
    load generators and the attacker; samples Envoy's RSS; collects every count; checks them
    (`failures`, `checks`) into `report`."""

    def __init__(self, build: str, args, workdir: Path) -> None:
        self.build = build
        self.args = args
        self.workdir = workdir
        self.failures: list[str] = []
        self.report: dict = {"build": build}
        self.processes: list[subprocess.Popen] = []
        self.checks: list[dict] = []

    def fail(self, reason: str) -> None:
        self.failures.append(reason)

    def expect_equal(self, what: str, got, want) -> None:
        self.checks.append({"check": what, "got": got, "expected": f"{want}", "ok": got == want})
        if got != want:
            self.fail(f"{what}: {got}, expected {want}")

    def expect_some(self, what: str, got: int) -> None:
        ok = got > 0
        self.checks.append({"check": what, "got": got, "expected": "> 0", "ok": ok})
        if not ok:
            self.fail(f"{what}: {got}, expected > 0 (no volume)")

    def expect_between(self, what: str, got, low, high, why: str) -> None:
        ok = low <= got <= high
        self.checks.append({"check": what, "got": got, "expected": f"{low}..{high} ({why})", "ok": ok})
        if not ok:
            self.fail(f"{what}: {got}, expected {low}..{high} ({why})")

    def execute(self) -> dict:
        args = self.args
        build = self.build
        seconds = args.seconds
        policy = json.loads(args.policy) if args.policy else POLICY
        upstream, upstream_port = start_upstream(self.workdir)
        self.processes.append(upstream)
        wasm = build == "wasm"
        edge = Listener(
            name="edge",
            build=build,
            proxy_protocol="optional",
            network_role=wasm,
            listener_role=not wasm,
            http_role=True,
            plugin=policy,
            direct_peer_format=names.DIRECT_PEER_FORMAT,
            http_vm_id=names.VM_ID,
            network_vm_id=names.VM_ID,
        )
        http_only = Listener(
            name="http_only",
            build=build,
            proxy_protocol="optional",
            http_role=True,
            plugin=policy,
            direct_peer_format=names.DIRECT_PEER_FORMAT,
            http_vm_id=names.VM_ID,
            ipv6=False,
        )
        SoakEnvoy.concurrency = args.concurrency
        envoy = SoakEnvoy(
            [edge, http_only], upstream_port=upstream_port, wasm=envoy_mod.WASM, name=f"soak-{build}",
            workdir=self.workdir,
        )  # fmt: skip
        self.envoy = envoy
        self.edge_port = edge.port
        envoy.start()
        haproxy = SoakHAProxy(edge.port, self.workdir)
        self.haproxy = haproxy
        haproxy.start()
        pid = envoy.process.pid
        artifact = envoy_mod.WASM if wasm else envoy_mod.NATIVE
        self.report.update(
            {
                "artifact": str(artifact),
                "envoy_pid": pid,
                "workdir": str(self.workdir),
                "policy": policy,
                "seconds": seconds,
                "concurrency": args.concurrency,
                "connections": {"keepalive": args.connections, "close": max(1, args.connections // 2), "h2": "4 x 4 streams"},
                "loadavg_before": os.getloadavg(),
                "nproc": os.cpu_count(),
            }
        )
        say(f"[{build}] Envoy {pid} ({artifact}), HAProxy {LB}:{haproxy.port}, upstream :{upstream_port}; "
            f"{seconds} s of load")  # fmt: skip

        lb_url = f"http://{LB}:{haproxy.port}"
        duration = max(1, round(seconds))
        headers: list[str] = []
        h2_headers: list[str] = []
        for header in VOLUME_HEADERS:
            headers += ["-H", header]
            h2_headers += ["-H", header.lower()]  # HTTP/2 header names are lowercase
        generators = {
            "keepalive": [
                "wrk", "-t1", f"-c{args.connections}", f"-d{duration}s", "--timeout", "10s", *headers,
                f"{lb_url}/soak/keepalive/{VOLUME_CLIENT}",
            ],
            "close": [
                "wrk", "-t1", f"-c{max(1, args.connections // 2)}", f"-d{duration}s", "--timeout", "10s", "-H", "Connection: close",
                *headers, f"{lb_url}/soak/close/{VOLUME_CLIENT}",
            ],
            "h2": [
                "h2load", "-c4", "-m4", "-D", str(duration), *h2_headers, f"{lb_url}/soak/h2/{VOLUME_CLIENT}",
            ],
        }  # fmt: skip
        attacker_config = self.workdir / "attacker.json"
        attacker_out = self.workdir / "attacker-result.json"
        attacker_config.write_text(
            json.dumps(
                {
                    "edge_port": edge.port,
                    "http_only_port": http_only.port,
                    "lb_host": LB,
                    "lb_port": haproxy.port,
                    "seconds": duration,
                    "out": str(attacker_out),
                }
            )
        )
        running: dict[str, tuple[subprocess.Popen, Path]] = {}
        t0 = time.monotonic()
        for name, command in generators.items():
            out = self.workdir / f"{name}.out"
            running[name] = (
                subprocess.Popen(command, stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL),
                out,
            )
        attacker = subprocess.Popen(
            [PYTHON, str(HARNESS / "soak_attacker.py"), str(attacker_config)],
            stdout=open(self.workdir / "attacker.out", "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        running["attacker"] = (attacker, self.workdir / "attacker.out")
        self.processes += [p for p, _ in running.values()]

        # RSS of Envoy once a second; start after the warm-up, middle at half time, end when the
        # load stops.
        warmup = max(3.0, min(30.0, duration * 0.1))
        samples: list[tuple[float, int]] = []
        marks: dict[str, tuple[float, int]] = {}
        died = None
        while any(p.poll() is None for p, _ in running.values()):
            elapsed = time.monotonic() - t0
            if envoy.process.poll() is not None:
                died = f"Envoy exited with {envoy.process.returncode} after {elapsed:.1f} s of load"
                break
            if haproxy.process.poll() is not None:
                died = f"HAProxy exited with {haproxy.process.returncode} after {elapsed:.1f} s of load"
                break
            if elapsed > duration + 60:
                died = f"the load generators did not finish {duration + 60} s after starting"
                break
            value = rss_kib(pid)
            if value is not None and elapsed <= duration:
                samples.append((round(elapsed, 1), value))
                if "start" not in marks and elapsed >= warmup:
                    marks["start"] = samples[-1]
                if "middle" not in marks and elapsed >= duration / 2:
                    marks["middle"] = samples[-1]
                marks["end"] = samples[-1]
            time.sleep(1.0)
        wall = time.monotonic() - t0
        for name, (process, _) in running.items():
            if process.poll() is None:
                process.kill()
                process.wait()
                self.fail(f"{name} was still running and was killed")
        if died:
            self.fail(died)
        time.sleep(1.0)  # let Envoy finish what was in flight when the generators stopped

        # --- collect --------------------------------------------------------------------
        results = {name: out.read_text(errors="replace") for name, (_, out) in running.items()}
        wrk_ka = parse_wrk(results["keepalive"])
        wrk_close = parse_wrk(results["close"])
        h2 = parse_h2load(results["h2"])
        try:
            attack = json.loads(attacker_out.read_text())
        except (OSError, ValueError) as error:
            attack = None
            self.fail(f"attacker wrote no result ({error}): {results['attacker'][-2000:]}")
        alive = envoy.process.poll() is None
        upstream_stats = None
        stats: dict[str, int] = {}
        haproxy_stot = None
        haproxy_row = None
        try:
            upstream_stats = http_json(f"http://127.0.0.1:{upstream_port}/__soak/stats")
        except OSError as error:
            self.fail(f"the upstream did not answer its stats: {error}")
        if alive:
            try:
                stats = envoy_stats_all(envoy)
            except OSError as error:
                self.fail(f"Envoy's /stats did not answer: {error}")
        try:
            haproxy_row = haproxy.server_stat()
            haproxy_stot = int(haproxy_row["stot"])
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            self.fail(f"HAProxy's stats did not answer: {error}")
        rss_idle = rss_kib(pid) if alive else None
        cpu = {"envoy": cpu_seconds(pid), "upstream": cpu_seconds(upstream.pid), "haproxy": cpu_seconds(haproxy.process.pid)}

        self.report.update(
            {
                "wall_seconds": round(wall, 1),
                "loadavg_after": os.getloadavg(),
                "cpu_seconds": cpu,
                "generators": {"keepalive": wrk_ka, "close": wrk_close, "h2": h2},
                "attacker": attack,
                "upstream": upstream_stats,
                "haproxy_connections": haproxy_stot,
                "haproxy_server_stat": haproxy_row,
                "rss_kib": {k: v[1] for k, v in marks.items()} | {"idle_after": rss_idle,
                            "max": max((v for _, v in samples), default=None)},
                "rss_samples": samples,
            }
        )  # fmt: skip
        self.check(alive, wrk_ka, wrk_close, h2, attack, upstream_stats, stats, haproxy_stot, haproxy_row, marks)
        self.report["checks"] = self.checks
        self.report["failures"] = self.failures
        return self.report

    def check(self, alive, wrk_ka, wrk_close, h2, attack, up, stats, haproxy_stot, haproxy_row, marks) -> None:
        build = self.build
        args = self.args
        envoy = self.envoy
        # 1. Envoy alive, its log free of traps, panics and crashes.
        if not alive:
            self.fail(f"Envoy is not running at the end (exit {envoy.process.returncode})")
        log = envoy.log_text() + "\n" + envoy.stdout_text()
        bad_lines = [line for line in log.splitlines() if any(p in line for p in LOG_PATTERNS)]
        error_lines = [line for line in log.splitlines() if "[error]" in line]
        self.report["envoy_log"] = {
            "bad_lines": bad_lines[:20],
            "bad_line_count": len(bad_lines),
            "error_lines": error_lines[:20],
            "error_line_count": len(error_lines),
            "warning_line_count": sum("[warning]" in line for line in log.splitlines()),
        }
        if bad_lines:
            self.fail(f"Envoy's log has {len(bad_lines)} trap/panic/crash lines, e.g. {bad_lines[0][:300]}")
        if error_lines:
            self.fail(f"Envoy's log has {len(error_lines)} error lines, e.g. {error_lines[0][:300]}")

        # 2. The upstream: no spoof, nothing unexpected.
        if up is not None:
            if up["spoofed_total"]:
                self.fail(
                    f"SPOOF: the upstream got {up['spoofed_total']} requests with a client other than the "
                    f"expected one {up['spoofed']}, e.g. {json.dumps(up['examples'][:1])[:800]}"
                )
            if up["unexpected"]:
                self.fail(f"the upstream got {up['unexpected']} requests outside the soak's scenarios")
        served = (up or {}).get("served", {})

        # 2b. Volume: every load generator and every scenario that must reach the upstream was
        #     served at least once (a run that sent nothing, or whose requests all failed, is no
        #     evidence).
        for name in ("keepalive", "close", "h2", *sorted(UPSTREAM_SCENARIOS)):
            self.expect_some(f"upstream served of {name}", served.get(name, 0))

        # 3. The load generators: every response 2xx, no socket error.
        for name, result, conns in (("keepalive", wrk_ka, args.connections),
                                    ("close", wrk_close, max(1, args.connections // 2))):  # fmt: skip
            if not result["ok"]:
                self.fail(f"wrk ({name}) printed no summary")
                continue
            if result["non_2xx"]:
                self.fail(f"wrk ({name}): {result['non_2xx']} responses not 2xx")
            errors = sum(result["socket_errors"].values())
            if errors:
                self.fail(f"wrk ({name}): socket errors {result['socket_errors']}")
            self.expect_between(
                f"upstream served of {name} (wrk completed {result['requests']})", served.get(name, 0),
                result["requests"], result["requests"] + conns, f"+ at most one in flight on each of {conns} connections",
            )  # fmt: skip
        if not h2.get("ok"):
            self.fail("h2load printed no summary")
        else:
            if h2["errored"] or h2["timeout"]:
                self.fail(f"h2load: {h2['errored']} errored, {h2['timeout']} timed out")
            status = h2.get("status", {})
            if status.get("2xx") != h2["succeeded"] or any(status.get(k) for k in ("3xx", "4xx", "5xx")):
                self.fail(f"h2load: status codes {status}, {h2['succeeded']} succeeded")
            self.expect_between(
                f"upstream served of h2 (h2load succeeded {h2['succeeded']}, started {h2['started']})",
                served.get("h2", 0), h2["succeeded"], min(h2["started"], h2["succeeded"] + H2_IN_FLIGHT),
                "up to those h2load started: at most 4 streams on each of 4 connections in flight",
            )  # fmt: skip

        # 4. The attacker and the walks: every scenario ended as the policy says, and every
        #    request that had to reach the upstream did, exactly once.
        if attack is not None:
            if attack["unexpected_total"]:
                self.fail(
                    f"attacker/walks: {attack['unexpected_total']} unexpected outcomes {attack['unexpected']}, "
                    f"e.g. {json.dumps(attack['examples'][:2])[:800]}"
                )
            for scenario, count in attack["sent"].items():
                if scenario in UPSTREAM_SCENARIOS:
                    self.expect_equal(f"upstream served of {scenario} = sent", served.get(scenario, 0), count)

        # 5. trustip's counters against what was sent.
        counters = trustip_counters(stats, build)
        self.report["trustip_counters"] = counters
        envoy_stats = {k: v for k, v in stats.items() if not k.startswith(("wasmcustom.", "trustip."))
                       and "trustip" not in k}  # fmt: skip
        self.report["envoy_stats_nonzero"] = {k: v for k, v in stats.items() if v}
        self.report["envoy_counters"] = {
            k: v
            for k, v in envoy_stats.items()
            if re.search(r"downstream_rq_(total|[1-5]xx)$|downstream_cx_total$|destroy_remote_active_rq$|"
                         r"upstream_rq_(total|completed|[1-5]xx|cancelled)$|dropped_headers_with_underscores$|"
                         r"downstream_rq_rx_reset$", k)
        }  # fmt: skip
        if attack is not None and up is not None and stats:
            self.check_counters(counters, envoy_stats, attack, served, haproxy_stot, haproxy_row)

        # 6. RSS.
        if "start" in marks and "end" in marks:
            growth_kib = marks["end"][1] - marks["start"][1]
            drift = growth_kib * 100.0 / marks["start"][1]
            self.report["rss_drift_percent"] = round(drift, 2)
            self.report["rss_growth_mib"] = round(growth_kib / 1024, 2)
            if drift > args.max_rss_drift:
                self.fail(f"Envoy's RSS grew {drift:.1f}% from the start to the end of the load "
                          f"(limit {args.max_rss_drift}%)")  # fmt: skip
            # The absolute bound (docs/soak.md): a leak of a few dozen bytes per request crosses
            # it within a one-minute run, where the percentage would need minutes.
            if growth_kib > args.max_rss_growth * 1024:
                self.fail(f"Envoy's RSS grew {growth_kib / 1024:.1f} MiB from the start to the end of "
                          f"the load (limit {args.max_rss_growth} MiB)")  # fmt: skip
        else:
            self.fail("no RSS samples after the warm-up (run too short?)")

    def check_counters(self, c, envoy_stats, attack, served, haproxy_stot, haproxy_row) -> None:
        requests = attack["sent"]
        conns = attack["connections"]

        def sent(*scenarios: str) -> int:
            return sum(requests.get(s, 0) for s in scenarios)

        def connections(*scenarios: str) -> int:
            return sum(conns.get(s, 0) for s in scenarios)

        expected_zero = set(c)
        # Connections (edge listener: wasm's network role, native's listener filter).
        want = {
            "conn.reject_untrusted_proxy": (
                connections("attack-pp2", "attack-pp1", "attack-pp2-ipv6", "attack-pp2-from-cdn"),
                "spoofed PROXY connections sent to the edge listener"),
            "conn.accept_direct": (
                connections("attack-xff", "attack-cdn-claim", "walk-cdn", "walk-cdn-chain", "walk-cdn-malformed",
                            "walk-keepalive"),
                "connections without PROXY sent to the edge listener"),
        }  # fmt: skip
        # Every connection the edge listener accepted got one decision (wasm: the network role
        # decides connections Envoy accepted; native: the listener filter decides before, and
        # only the connections it lets through become Envoy connections).
        decided = sum(v for k, v in c.items() if k.startswith("conn."))
        accepted = sum(v for k, v in c.items() if k.startswith("conn.accept_"))
        cx_total = envoy_stats.get(f"listener.127.0.0.1_{self.edge_port}.downstream_cx_total", 0)
        self.expect_equal(
            f"Envoy's connections on the edge listener against trustip's connection decisions "
            f"({'all' if self.build == 'wasm' else 'accepted'})",
            cx_total, decided if self.build == "wasm" else accepted,
        )  # fmt: skip
        # conn.accept_proxy: every connection HAProxy made to Envoy, but those closed before
        # their PROXY header arrived (a load generator's client closing at the end of its run:
        # HAProxy connects as soon as its client does; Envoy counts them as closed by the peer
        # while its listener filters waited).
        accept_proxy_conns = c.get("conn.accept_proxy", 0)
        early = envoy_stats.get(f"listener.127.0.0.1_{self.edge_port}.downstream_listener_filter_remote_close", 0)
        self.report["conn_accept_proxy_vs_haproxy"] = {
            "accept_proxy": accept_proxy_conns, "haproxy_connections": haproxy_stot,
            "closed_before_proxy_header": early,
        }  # fmt: skip
        self.expect_equal(
            f"counter trustip conn.accept_proxy = HAProxy's connections to Envoy ({haproxy_stot}) - those "
            f"closed by HAProxy before sending ({early}, Envoy's downstream_listener_filter_remote_close)",
            accept_proxy_conns, (haproxy_stot or 0) - early,
        )  # fmt: skip
        expected_zero.discard("conn.accept_proxy")
        # Requests (both listeners' HTTP role).
        via_lb_untrusted = sent("attack-lb-xff")
        want |= {
            "http.reject_untrusted_proxy": (sent("attack-pp2-http", "attack-pp1-http"),
                                            "spoofed PROXY requests sent to the HTTP-only listener"),
            "http.accept_direct": (sent("attack-xff", "attack-cdn-claim", "walk-cdn-malformed"),
                                   "requests sent without PROXY whose R is the peer"),
            "http.accept_xff": (sent("walk-cdn", "walk-cdn-chain", "walk-lb", "walk-keepalive"),
                                "walk requests sent by the trusted CDN"),
            "http.xff_malformed": (sent("walk-cdn-malformed"), "walk requests sent with a malformed element"),
        }  # fmt: skip
        for name, (value, label) in want.items():
            self.expect_equal(f"counter trustip {name} = {label}", c.get(name, 0), value)
            expected_zero.discard(name)
        # accept_proxy: every request through the LB from an untrusted client that Envoy decoded.
        # The upstream served them all, except those in flight when a load generator stopped
        # (Envoy counts the connections closed under an active request).
        volume = served.get("keepalive", 0) + served.get("close", 0) + served.get("h2", 0)
        accept_proxy = c.get("http.accept_proxy", 0)
        in_flight = sum(v for k, v in envoy_stats.items() if k.endswith("downstream_cx_destroy_remote_active_rq")
                        and "http_edge" in k)  # fmt: skip
        lost = accept_proxy - volume - via_lb_untrusted
        self.report["accept_proxy_vs_upstream"] = {
            "accept_proxy": accept_proxy,
            "upstream_volume_plus_attack_lb": volume + via_lb_untrusted,
            "not_served": lost,
            "closed_by_client_with_active_request": in_flight,
        }
        self.expect_between(
            f"counter trustip http.accept_proxy (upstream served {volume + via_lb_untrusted} such requests)",
            accept_proxy, volume + via_lb_untrusted, volume + via_lb_untrusted + in_flight,
            f"+ at most the {in_flight} requests whose client closed while they were active",
        )  # fmt: skip
        expected_zero.discard("http.accept_proxy")
        # headers_stripped: 2 per volume request, 7 per spoofing request from an untrusted client.
        stripped = VOLUME_STRIPPED * (accept_proxy - via_lb_untrusted) + attack["spoof_stripped_per_request"] * (
            sent("attack-xff", "attack-lb-xff")
        )
        self.expect_equal(
            f"counter trustip http.headers_stripped = {VOLUME_STRIPPED} per volume request + "
            f"{attack['spoof_stripped_per_request']} per spoofing request from an untrusted client",
            c.get("http.headers_stripped", 0), stripped,
        )  # fmt: skip
        expected_zero.discard("http.headers_stripped")
        others = {name: c.get(name, 0) for name in sorted(expected_zero)}
        self.expect_equal("every other trustip counter", {k: v for k, v in others.items() if v}, {})
        # Envoy's own: no 5xx anywhere; 4xx exactly the intended refusals.
        fives = {k: v for k, v in envoy_stats.items() if re.search(r"(downstream_rq_5xx|upstream_rq_5xx)$", k) and v}
        self.expect_equal("Envoy's 5xx counters (downstream and upstream)", fives, {})
        self.expect_equal(
            "Envoy's 4xx on the HTTP-only listener = spoofed PROXY requests sent there", envoy_stats.get("http.http_http_only.downstream_rq_4xx", 0),
            sent("attack-pp2-http", "attack-pp1-http"),
        )  # fmt: skip
        self.expect_equal(
            "Envoy's 4xx on the edge listener = PROXY headers smuggled through HAProxy", envoy_stats.get("http.http_edge.downstream_rq_4xx", 0),
            sent("smuggle-pp2", "smuggle-pp1"),
        )  # fmt: skip


H2_IN_FLIGHT = 16  # h2load -c4 -m4
UPSTREAM_SCENARIOS = {
    "attack-xff",
    "attack-cdn-claim",
    "attack-lb-xff",
    "walk-cdn",
    "walk-cdn-chain",
    "walk-cdn-malformed",
    "walk-lb",
    "walk-keepalive",
}


# --- report ---------------------------------------------------------------------------------------


def mib(kib) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def table(report: dict) -> str:
    up = report.get("upstream") or {}
    gen = report.get("generators", {})
    attack = report.get("attacker") or {}
    rss = report.get("rss_kib", {})
    c = report.get("trustip_counters", {})
    seconds = report.get("seconds") or 1
    served = up.get("served_total", 0)

    def load(key: str) -> str:
        values = report.get(key)
        return f"{values[0]:.2f}" if values else "?"
    refused = sum(
        attack.get("ok", {}).get(s, 0) for s in attack.get("ok", {}) if s not in UPSTREAM_SCENARIOS
    )
    rows = [
        ("build", f"{report['build']} ({Path(report.get('artifact', '?')).name})"),
        ("load", f"{report.get('seconds')} s, Envoy --concurrency {report.get('concurrency')}; "
                 f"wrk keep-alive {report.get('connections', {}).get('keepalive')} connections, wrk a connection per "
                 f"request {report.get('connections', {}).get('close')} at a time, h2load 4 connections x 4 streams, "
                 f"1 attacker/walk process"),
        ("machine", f"{report.get('nproc')} cores, load average {load('loadavg_before')} before, "
                    f"{load('loadavg_after')} after"),
        ("requests served (upstream, checked)", f"{served:,} ({served / seconds:,.0f}/s)"),
        ("  keep-alive (wrk)", f"{up.get('served', {}).get('keepalive', 0):,}"
                               f"  [wrk completed {gen.get('keepalive', {}).get('requests')}]"),
        ("  connection per request (wrk)", f"{up.get('served', {}).get('close', 0):,}"
                                            f"  [wrk completed {gen.get('close', {}).get('requests')}]"),
        ("  HTTP/2 (h2load)", f"{up.get('served', {}).get('h2', 0):,}  [h2load succeeded {gen.get('h2', {}).get('succeeded')}]"),
        ("  attacker's and walks' served", f"{sum(up.get('served', {}).get(s, 0) for s in UPSTREAM_SCENARIOS):,}"),
        ("CPU seconds used", ", ".join(f"{k} {v}" for k, v in report.get("cpu_seconds", {}).items())
                             + f" (in {report.get('wall_seconds')} s of wall time)"),
        ("attacker's refused as intended", f"{refused:,} (closed, 403 or 400)"),
        ("spoofed addresses delivered", f"{up.get('spoofed_total', '?')}"),
        ("unexpected outcomes (attacker/walks)", f"{attack.get('unexpected_total', '?')}"),
        ("errors beyond the intended refusals",
         f"wrk non-2xx {gen.get('keepalive', {}).get('non_2xx', '?')}+{gen.get('close', {}).get('non_2xx', '?')}, "
         f"socket errors {sum(gen.get('keepalive', {}).get('socket_errors', {}).values())}"
         f"+{sum(gen.get('close', {}).get('socket_errors', {}).values())}, "
         f"h2load failed {gen.get('h2', {}).get('failed', '?')} errored {gen.get('h2', {}).get('errored', '?')}"),
        ("trustip counters (non-zero)", ", ".join(f"{k} {v:,}" for k, v in sorted(c.items()) if v) or "-"),
        ("accept_proxy vs upstream", json.dumps(report.get("accept_proxy_vs_upstream", {}))),
        ("Envoy RSS start / middle / end", f"{mib(rss.get('start'))} / {mib(rss.get('middle'))} / {mib(rss.get('end'))}"
                                           f"  (drift {report.get('rss_drift_percent', '?')}%, +{report.get('rss_growth_mib', '?')} MiB, max {mib(rss.get('max'))})"),
        ("Envoy log", f"{report.get('envoy_log', {}).get('bad_line_count', '?')} trap/panic/crash lines, "
                      f"{report.get('envoy_log', {}).get('error_line_count', '?')} errors, "
                      f"{report.get('envoy_log', {}).get('warning_line_count', '?')} warnings"),
        ("result", "PASS" if not report.get("failures") else f"FAIL ({len(report['failures'])})"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)
    checks = report.get("checks", [])
    if checks:
        text += "\n  counters and counts against what was sent:"
        for check in checks:
            mark = "ok  " if check["ok"] else "FAIL"
            text += f"\n    {mark} {check['check']}: {check['got']} (expected {check['expected']})"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/soak",
        description="Soak test of each trustip build (wasm, then native) under mixed load through real "
        "Envoy and HAProxy; exits 1 on any spoof, trap, crash or unexpected error (docs/soak.md).",
    )
    parser.add_argument("minutes", nargs="?", type=float, default=10.0, help="minutes of load per build (default 10; 0.5 is fine)")
    parser.add_argument("--seconds", type=float, help="seconds of load per build (instead of minutes)")
    parser.add_argument("--builds", default="wasm,native", help="comma-separated, in order (default wasm,native)")
    parser.add_argument("--out", default=str(ROOT / "target" / "soak"), help="where report-<build>.json go (default target/soak)")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections (the per-request wrk gets half)")
    parser.add_argument("--concurrency", type=int, default=2, help="Envoy worker threads (default 2)")
    parser.add_argument("--max-rss-drift", type=float, default=20.0, help="fail above this RSS growth in percent (default 20)")
    parser.add_argument("--max-rss-growth", type=float, default=8.0, help="fail above this RSS growth in MiB, after the warm-up (default 8)")
    parser.add_argument("--policy", help="a different trustip policy (JSON): to prove the soak fails when the policy is wrong")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs, configs, outputs)")
    args = parser.parse_args()  # fmt: skip
    if args.seconds is None:
        args.seconds = args.minutes * 60.0
    if args.seconds < 5:
        parser.error("at least 5 seconds of load per build")
    builds = [b.strip() for b in args.builds.split(",") if b.strip()]
    for build in builds:
        if build not in ("wasm", "native"):
            parser.error(f"unknown build {build!r} (wasm, native)")
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (scripts/setup installs it)")
    if not Path(HAPROXY_BIN).exists():
        parser.error("haproxy is not installed (scripts/setup installs it)")
    artifacts = {"wasm": envoy_mod.WASM, "native": envoy_mod.NATIVE}
    for build in builds:
        if not artifacts[build].is_file():
            say(f"{artifacts[build]} does not exist: build it (scripts/build-wasm, cargo build --release) "
                f"or set TRUSTIP_{build.upper()}")  # fmt: skip
            return 1
    if not envoy_mod.ENVOY_BIN.exists():
        say(f"{envoy_mod.ENVOY_BIN} does not exist: run scripts/setup")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    overall = 0
    started = time.monotonic()
    for build in builds:
        workdir = Path(tempfile.mkdtemp(prefix=f"trustip-soak-{build}-"))
        run = Run(build, args, workdir)
        try:
            report = run.execute()
        except Exception as error:  # noqa: BLE001: report whatever stopped the run, then fail
            run.fail(f"the run stopped: {type(error).__name__}: {error}")
            run.report["failures"] = run.failures
            report = run.report
        finally:
            for process in run.processes:
                net.terminate(process, timeout=5)
            if hasattr(run, "haproxy"):
                run.haproxy.stop()
            if hasattr(run, "envoy"):
                run.envoy.stop()
                if run.envoy.process is not None and run.envoy.process.returncode not in (0, -signal.SIGTERM):
                    if not any("exit" in f for f in run.failures):
                        run.fail(f"Envoy exited with {run.envoy.process.returncode} when stopped")
                        report["failures"] = run.failures
        path = out / f"report-{build}.json"
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nsoak: {build}\n{table(report)}", flush=True)
        if run.failures:
            overall = 1
            for reason in run.failures:
                print(f"  FAIL: {reason}", flush=True)
            print(f"  logs kept in {workdir}", flush=True)
        elif not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"  report: {path}", flush=True)
    say(f"{'PASS' if overall == 0 else 'FAIL'}: {', '.join(builds)} in {time.monotonic() - started:.0f} s wall time")
    return overall


if __name__ == "__main__":
    sys.exit(main())
