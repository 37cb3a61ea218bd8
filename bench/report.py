#!/usr/bin/env python3
"""Reads what one `scripts/bench` run measured and writes the Markdown report.

  report.py check --work DIR --phase warmup
      Fails (exit 1, one line per bad run) unless every wrk run of the phase got only 2xx
      responses and no socket errors: a rejected request would be cheaper than a served one and
      make a variant look fast.
  report.py write --work DIR --out FILE
      Writes the report of every measured run in DIR so far (scripts/bench calls it after each
      round, and once more if the run fails; meta.env's `status` says which): settings and
      machine, the targets of issue 8 (native build) and issue 4 (wasm build) met or missed, the
      two builds side by side against Envoy alone, one table of cells (median requests/s,
      p50/p99 latency, Envoy's CPU share and CPU time per request, CPU other processes took from
      Envoy's core), the ratios pair by pair (per round, then the median) by requests/s and by
      Envoy CPU per request, the module sizes, Envoy's RSS, what each variant adds and what each
      load exercises, and Envoy's request counters and trustip's counters (where fetched).

Python standard library only. Inputs (from scripts/bench and bench/prepare.py): DIR/plan.json,
DIR/runs.tsv (one line per wrk run), the wrk outputs, DIR/meta.env, DIR/stats-VARIANT.txt
(optional).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

KIB = 1024

# The targets that are not ratios (the ratio thresholds are in ratio_targets()).
WASM_TARGET = 200 * KIB  # issue 4: trustip.wasm after wasm-opt
RSS_TARGET_KIB = 5 * 1024  # issue 4: trustip-wasm <= noop-wasm + 5 MiB per worker (one worker
# here); issue 8: trustip-native-large <= envoy + 5 MiB in total


def parse_duration_us(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]


def parse_wrk(path: Path) -> dict:
    text = path.read_text(errors="replace")
    result: dict = {"file": str(path)}
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    result["rps"] = float(match.group(1)) if match else None
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        result[f"p{pct}"] = parse_duration_us(match.group(1)) if match else None
    match = re.search(r"(\d+) requests in", text)
    result["requests"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["socket_errors"] = sum(int(g) for g in match.groups()) if match else 0
    result["socket_errors_text"] = match.group(0) if match else ""
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result["non2xx"] = int(match.group(1)) if match else 0
    return result


def read_runs(work: Path) -> list[dict]:
    lines = (work / "runs.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    runs = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t")))
        run = parse_wrk(Path(row["file"]))
        run.update(phase=row["phase"], round=int(row["round"]), load=row["load"],
                   variant=row["variant"], cpu_ticks=int(row["cpu_ticks"]),
                   core_ticks=int(row["core_ticks"]), wall_s=float(row["wall_s"]))
        runs.append(run)
    return runs


def read_env(path: Path) -> dict:
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            name, _, value = line.partition("=")
            env[name] = value
    return env


def bad_runs(runs: list[dict]) -> list[str]:
    problems = []
    for run in runs:
        what = f"{run['load']}/{run['variant']} ({run['phase']} {run['round']})"
        if run["rps"] is None or run["requests"] == 0:
            problems.append(f"{what}: no requests completed; see {run['file']}")
        elif run["non2xx"]:
            problems.append(f"{what}: {run['non2xx']} non-2xx responses of {run['requests']}")
        elif run["socket_errors"]:
            problems.append(f"{what}: {run['socket_errors_text']}")
    return problems


def check(work: Path, phase: str) -> None:
    problems = bad_runs([r for r in read_runs(work) if r["phase"] == phase])
    for problem in problems:
        print(f"bench: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)


# --- the report ---------------------------------------------------------------------------

def fmt_rps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} µs"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_ratio(values: list[float]) -> str:
    """Median, and the range over the rounds when there are several."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} ({min(values):.2f}–{max(values):.2f})"


def verdict(value: float | None, threshold: float, direction: str) -> str:
    if value is None:
        return "-"
    met = value >= threshold if direction == ">=" else value <= threshold
    return "met" if met else "**missed**"


# The comparisons the report makes (a/b), in its order: each build's floor against Envoy
# alone, trustip against Envoy alone and against its build's floor.
PAIRS = [
    ("noop-wasm", "envoy"),
    ("trustip-wasm", "envoy"),
    ("trustip-wasm", "noop-wasm"),
    ("trustip-wasm-large", "noop-wasm"),
    ("noop-native", "envoy"),
    ("trustip-native", "envoy"),
    ("trustip-native", "noop-native"),
    ("trustip-native-listener", "envoy"),
    ("trustip-native-large", "envoy"),
]
# The builds side by side: each variant against Envoy alone.
SIDE_BY_SIDE = [
    ("wasm", ["noop-wasm", "trustip-wasm", "trustip-wasm-large"]),
    ("native", ["noop-native", "trustip-native", "trustip-native-listener",
                "trustip-native-large"]),
]


def ratio_targets(load: str, keepalive: bool) -> list[tuple[str, str, str, str, float, str]]:
    """(issue, variant, baseline, key, threshold, direction) of every ratio target of a load.
    Issue 8: the native build against Envoy alone and against the no-op module. Issue 4: the
    wasm build against the no-op wasm module."""
    targets = []
    if keepalive:
        targets += [
            ("8", "trustip-native", "envoy", "rps", 0.93, ">="),
            ("8", "trustip-native", "noop-native", "rps", 0.95, ">="),
        ]
    else:
        targets.append(("8", "trustip-native", "envoy", "rps", 0.95, ">="))
    targets.append(("8", "trustip-native-listener", "envoy", "rps", 0.98, ">="))
    targets.append(("4", "trustip-wasm", "noop-wasm", "rps", 0.95 if keepalive else 0.90, ">="))
    if keepalive:
        targets.append(("4", "trustip-wasm", "noop-wasm", "p99", 1.10, "<="))
    targets.append(("4", "trustip-wasm-large", "noop-wasm", "rps", 0.90, ">="))
    return targets


def write(work: Path, out: Path) -> None:
    plan = json.loads((work / "plan.json").read_text())
    meta = read_env(work / "meta.env")
    clk_tck = int(meta.get("clk_tck", "100"))
    runs = [r for r in read_runs(work) if r["phase"] == "measure"]
    variants, loads = plan["variants"], plan["loads"]
    info = plan.get("variant_info", {})
    rounds = sorted({r["round"] for r in runs})
    problems = bad_runs(runs)
    for run in runs:
        ticks_per_s = clk_tck * run["wall_s"] if run["wall_s"] else 0
        run["cpu_share"] = run["cpu_ticks"] / ticks_per_s if ticks_per_s else None
        run["others_share"] = (
            max(0, run["core_ticks"] - run["cpu_ticks"]) / ticks_per_s if ticks_per_s else None
        )
        run["cpu_per_rq"] = (
            run["cpu_ticks"] / clk_tck * 1e6 / run["requests"] if run["requests"] else None
        )
    cell = {(r["load"], r["variant"], r["round"]): r for r in runs}

    def values(load: str, variant: str, key: str) -> list[float]:
        found = (cell.get((load, variant, n)) for n in rounds)
        return [run[key] for run in found if run and run[key] is not None]

    def ratios(load: str, a: str, b: str, key: str, inverse: bool = False) -> list[float]:
        """a/b pair by pair within each round (b/a with inverse: for CPU per request, where
        less is faster, so that every ratio reads like a requests/s ratio)."""
        result = []
        for n in rounds:
            x, y = cell.get((load, a, n)), cell.get((load, b, n))
            if x and y and x[key] and y[key]:
                result.append(y[key] / x[key] if inverse else x[key] / y[key])
        return result

    def differences(load: str, a: str, b: str, key: str) -> list[float]:
        result = []
        for n in rounds:
            x, y = cell.get((load, a, n)), cell.get((load, b, n))
            if x and y and x[key] is not None and y[key] is not None:
                result.append(x[key] - y[key])
        return result

    def fmt_add(v: list[float]) -> str:
        return f"{median(v):+.1f} µs" if v else "-"

    def rss(kind: str, variant: str) -> int | None:
        value = meta.get(f"rss_{kind}_{variant.replace('-', '_')}")
        return int(value) if value else None

    def rss_above(variant: str, baseline: str) -> int | None:
        a, b = rss("peak", variant), rss("peak", baseline)
        return None if a is None or b is None else a - b

    def fmt_mib(kib: int | None, sign: bool = False) -> str:
        if kib is None:
            return "-"
        return f"{kib / 1024:+.1f} MiB" if sign else f"{kib / 1024:.1f} MiB"

    md: list[str] = []
    status = meta.get("status", "complete")
    upstream = ("`direct_response` route: Envoy answers itself, no upstream connection"
                if plan["upstream"] == "direct"
                else "router to a second listener of the same Envoy (direct_response)")
    md += [
        "# trustip benchmark results",
        "",
        f"Written by `scripts/bench{' --quick' if meta.get('quick') == '1' else ''}` on "
        f"{meta.get('date', '?')} (commit {meta.get('commit', '?')}); the whole run took "
        f"{meta.get('duration', '?')} s.",
        "",
    ]
    if status != "complete":
        md += [f"**Incomplete run ({status}).** This report holds the {len(rounds)} round(s) "
               f"measured of the {meta.get('rounds', '?')} planned; a cell of an unfinished "
               "round counts only where its pair was measured too.", ""]
    if meta.get("quick") == "1":
        md += ["**Smoke run (`--quick`)**: one short round; the numbers only show that every "
               "variant and load runs, not what anything costs.", ""]
    md += [
        "| | |",
        "|---|---|",
        f"| Machine | {meta.get('nproc', '?')} cores, {meta.get('cpu_model', '?')}, "
        f"{meta.get('kernel', '?')} |",
        f"| Envoy | {meta.get('envoy_version', '?')}, V8 runtime for wasm, `--concurrency 1`, "
        "one process per variant, all pinned to core 0 |",
        f"| Load | wrk {meta.get('wrk_version', '?')} (1 thread, {meta.get('connections', '?')} "
        f"connections) and HAProxy {meta.get('haproxy_version', '?')} (1 thread), both pinned "
        f"to core 1; Envoy, wrk and HAProxy at nice {meta.get('nice', '?')} |",
        f"| Runs | {meta.get('warmup', '?')} s warm-up per cell, then rounds of "
        f"{meta.get('seconds', '?')} s per cell ({len(rounds)} measured); within a round each "
        "load runs on every variant back to back, the variant order rotating from round to round |",
        f"| Upstream | {upstream} |",
        f"| Load average | {meta.get('loadavg_start', '?')} at start, "
        f"{meta.get('loadavg_end', '?')} at end |",
        "",
        "How to read it: requests/s ratios are what the targets name, and they equal the "
        "ratio of Envoy's capacities only while Envoy's core is saturated (Envoy CPU near 100%). "
        "Where it is not (with 2 cores, wrk and HAProxy saturate core 1 first in the loads "
        "through HAProxy with a new connection per request), the requests/s ratio understates "
        "what the filter costs; the ratio of Envoy CPU time per request (\"by CPU\", written "
        "baseline/variant so that it reads like a requests/s ratio) is then the better estimate. "
        "\"Others on core 0\" is CPU time other processes took from Envoy's core during the "
        "runs: this machine may be shared, and such runs are noisy.",
        "",
    ]
    if problems:
        md += ["**Some measured runs had errors; their numbers are not trustworthy:**", ""]
        md += [f"- {p}" for p in problems] + [""]

    # --- targets first
    summary = {"8": [], "4": []}
    for load in loads:
        keepalive = plan["load_info"][load]["keepalive"]
        for issue, a, b, key, threshold, direction in ratio_targets(load, keepalive):
            if a not in variants or b not in variants:
                continue
            what = "p99" if key == "p99" else ""
            by_rps = ratios(load, a, b, key)
            row = (f"| {load}: {a} {what + ' ' if what else ''}{direction} {threshold:.2f}x "
                   f"{b} | {fmt_ratio(by_rps)} {verdict(median(by_rps), threshold, direction)} |")
            if key == "rps":
                by_cpu = ratios(load, a, b, "cpu_per_rq", inverse=True)
                row += f" {fmt_ratio(by_cpu)} {verdict(median(by_cpu), threshold, direction)} |"
            else:
                row += " |"
            summary[issue].append(row)
    above = rss_above("trustip-native-large", "envoy")
    summary["8"].append(f"| Envoy peak RSS trustip-native-large <= envoy + 5 MiB (in total) | "
                        f"{fmt_mib(above, sign=True)} {verdict(above, RSS_TARGET_KIB, '<=')} | |")
    size = int(meta.get("size_trustip", "0"))
    opt = int(meta["size_trustip_opt"]) if meta.get("size_trustip_opt") else None
    best = min(size, opt) if opt else size
    summary["4"].append(f"| trustip.wasm <= 200 KiB (release profile, then wasm-opt) | "
                        f"{best / KIB:.0f} KiB {verdict(best, WASM_TARGET, '<=')} | |")
    for variant in ("trustip-wasm", "trustip-wasm-large"):
        above = rss_above(variant, "noop-wasm")
        summary["4"].append(f"| Envoy peak RSS {variant} <= noop-wasm + 5 MiB (1 worker) | "
                            f"{fmt_mib(above, sign=True)} "
                            f"{verdict(above, RSS_TARGET_KIB, '<=')} | |")
    md += ["## Targets", "",
           "Issue 8, the native build (listener only: against Envoy alone in every load):", "",
           "| Target | by requests/s | by Envoy CPU per request |", "|---|---|---|"]
    md += summary["8"]
    md += ["", "Issue 4, the wasm build:", "",
           "| Target | by requests/s | by Envoy CPU per request |", "|---|---|---|"]
    md += summary["4"]
    md += ["", "Ratios: median over the rounds of the pair-by-pair ratios (range in brackets). "
           "Not measured by this command: the native micro-benchmark of the core decision and "
           "the host calls per request.", ""]

    # --- the two builds side by side
    columns = [v for _, group in SIDE_BY_SIDE for v in group if v in variants]
    md += ["## The two builds side by side", "",
           "Each variant against Envoy alone (`envoy`), median over the rounds: requests/s "
           "ratio, then Envoy CPU time per request added.", "",
           "| Load | envoy req/s | " + " | ".join(columns) + " |",
           "|---|---:|" + "---:|" * len(columns)]
    for load in loads:
        row = [load, fmt_rps(median(values(load, "envoy", "rps")))]
        for variant in columns:
            r = ratios(load, variant, "envoy", "rps")
            row.append(f"{median(r):.3f}" if r else "-")
        md.append("| " + " | ".join(row) + " |")
    for load in loads:
        row = [f"{load}: +CPU/request", "-"]
        for variant in columns:
            row.append(fmt_add(differences(load, variant, "envoy", "cpu_per_rq")))
        md.append("| " + " | ".join(row) + " |")
    row = ["peak RSS - envoy's", fmt_mib(rss("peak", "envoy"))]
    row += [fmt_mib(rss_above(v, "envoy"), sign=True) for v in columns]
    md.append("| " + " | ".join(row) + " |")
    md.append("")

    # --- cells
    md += [
        "## Cells",
        "",
        "Medians over the rounds. Envoy CPU: Envoy's CPU time (all threads, including the "
        "kernel's work on its sockets) over the wall time of the run, and per request.",
        "",
        "| Load | Variant | Requests/s | p50 | p99 | Envoy CPU | Envoy CPU / request | Others on core 0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for load in loads:
        for variant in variants:
            if not values(load, variant, "requests"):
                continue
            share = median(values(load, variant, "cpu_share"))
            others = values(load, variant, "others_share")
            per_rq = median(values(load, variant, "cpu_per_rq"))
            others_text = (f"{median(others) * 100:.0f}% (max {max(others) * 100:.0f}%)"
                           if others else "-")
            md.append(
                f"| {load} | {variant} | {fmt_rps(median(values(load, variant, 'rps')))} | "
                f"{fmt_us(median(values(load, variant, 'p50')))} | "
                f"{fmt_us(median(values(load, variant, 'p99')))} | "
                f"{'-' if share is None else f'{share * 100:.0f}%'} | "
                f"{'-' if per_rq is None else f'{per_rq:.1f} µs'} | {others_text} |")
    md.append("")

    pairs = [(a, b) for a, b in PAIRS if a in variants and b in variants]
    md += [
        "## Ratios",
        "",
        "a/b pair by pair within a round, median over the rounds (range in brackets); "
        "\"+µs\": Envoy CPU time per request that a adds to b.",
        "",
        "| Load | a / b | req/s | by CPU | a - b, CPU per request | p99 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for load in loads:
        for a, b in pairs:
            md.append(
                f"| {load} | {a} / {b} | {fmt_ratio(ratios(load, a, b, 'rps'))} | "
                f"{fmt_ratio(ratios(load, a, b, 'cpu_per_rq', inverse=True))} | "
                f"{fmt_add(differences(load, a, b, 'cpu_per_rq'))} | "
                f"{fmt_ratio(ratios(load, a, b, 'p99'))} |")
    md.append("")

    md += ["Per round (req/s ratio, by-CPU ratio):", "",
           "| Load | Round | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |",
           "|---|---:|" + "---|" * len(pairs)]
    for load in loads:
        for n in rounds:
            row = []
            for a, b in pairs:
                x, y = cell.get((load, a, n)), cell.get((load, b, n))
                if x and y and x["rps"] and y["rps"] and x["cpu_per_rq"] and y["cpu_per_rq"]:
                    row.append(f"{x['rps'] / y['rps']:.3f}, {y['cpu_per_rq'] / x['cpu_per_rq']:.3f}")
                else:
                    row.append("-")
            md.append(f"| {load} | {n} | {' | '.join(row)} |")
    md.append("")

    # --- sizes
    md += ["## Module sizes", "", "| Module | cargo release artifact | after `wasm-opt -Oz` |",
           "|---|---:|---:|"]
    for name, label in (("trustip", "trustip.wasm"), ("noop", "bench/noop (.wasm)")):
        size = int(meta.get(f"size_{name}", "0"))
        opt_text = meta.get(f"size_{name}_opt")
        opt_cell = (f"{int(opt_text):,} B ({int(opt_text) / KIB:.0f} KiB)" if opt_text
                    else "wasm-opt not installed")
        md.append(f"| {label} | {size:,} B ({size / KIB:.0f} KiB) | {opt_cell} |")
    for name, label in (("trustip_native", "libtrustip.so"),
                        ("noop_native", "bench/noop-native (.so)")):
        size = int(meta.get(f"size_{name}", "0"))
        md.append(f"| {label} | {size:,} B ({size / KIB:.0f} KiB) | |")
    md += ["", f"Envoy loads the cargo artifacts. {meta.get('wasm_opt_version', '')}", ""]

    # --- memory
    md += ["## Envoy memory", "",
           "One Envoy process per variant, one worker (wasm: one VM per role on the worker, plus "
           "the main thread's; native: one compiled policy per filter configuration, shared by "
           "every worker): peak = VmHWM after all of that variant's loads, idle = VmRSS right "
           "after start.", "",
           "| Variant | idle RSS | peak RSS (VmHWM) | peak - envoy's | peak - its build's no-op |",
           "|---|---:|---:|---:|---:|"]
    for variant in variants:
        build = info.get(variant, {}).get("build", "-")
        noop = {"wasm": "noop-wasm", "native": "noop-native"}.get(build)
        md.append(f"| {variant} | {fmt_mib(rss('idle', variant))} | "
                  f"{fmt_mib(rss('peak', variant))} | "
                  f"{fmt_mib(rss_above(variant, 'envoy'), sign=True)} | "
                  f"{fmt_mib(rss_above(variant, noop), sign=True) if noop else '-'} |")
    md.append("")

    # --- variants and loads
    md += ["## Variants", "", "One Envoy bootstrap, the one `trustip render --target envoy` "
           "prints, edited by bench/prepare.py; what each variant adds to it:", "",
           "| Variant | Build | What it adds |", "|---|---|---|"]
    for variant in variants:
        v = info.get(variant, {})
        md.append(f"| {variant} | {v.get('build', '?')} | {v.get('adds', '?')} |")
    md.append("")
    md += ["## What the loads exercise", "",
           f"Every request of every load and variant carries the same "
           f"{len(plan['xff'].split(','))}-entry X-Forwarded-For: client 203.0.113.7, 17 "
           "addresses (IPv4 and IPv6) trusted only by the large policy, 10.1.2.3, 127.0.0.9. "
           f"trustip walks 3 entries of it, the -large variants all 20 ({plan['large_count']:,} "
           f"trusted CIDRs: {plan['large_v4']:,} IPv4, {plan['large_v6']:,} IPv6). The small "
           f"policy trusts {', '.join(plan['small_trusted'])}; wrk's address and every PROXY "
           "source are in 127.0.0.0/28, so the walk runs in every load and trustip rewrites "
           "X-Forwarded-For, x-envoy-external-address and x-real-ip on every request "
           "(trustip-native-listener does no walk: it decides per connection, and the HCM "
           "appends the address it sets).", "",
           "| Load | What it is | What trustip does |", "|---|---|---|"]
    for load in loads:
        load_info = plan["load_info"][load]
        md.append(f"| {load} | {load_info['title']} | {load_info['exercises']} |")
    md += ["", "Decisions checked before the run with `trustip explain` (the filters' own "
           "decision function):", ""]
    for key, d in sorted(plan["decisions"].items()):
        md.append(f"- {key}: reason `{d['reason']}`, rule {d['rule']}, client {d['client_ip']}")
    md.append("")

    # --- counters
    md += ["## Envoy counters after the run", ""]
    for variant in variants:
        path = work / f"stats-{variant}.txt"
        if not path.exists():
            md.append(f"- {variant}: not fetched")
            continue
        stats: dict[str, int] = {}
        for line in path.read_text().splitlines():
            name, sep, value = line.partition(": ")
            if not sep or not value.strip().isdigit():
                continue
            # The native listener filter's counters carry the listener's scope.
            name = re.sub(r"^listener\.[^ ]*?\.(?=trustip\.)", "", name)
            stats[name] = stats.get(name, 0) + int(value)
        custom = {k: v for k, v in stats.items()
                  if (k.startswith("wasmcustom.") or k.startswith("trustip.")) and v}
        rq = {k.rsplit(".", 1)[1]: v for k, v in stats.items()
              if re.fullmatch(r"http\.trustip_ingress\.downstream_rq_(2xx|4xx|5xx|total)", k)}
        md.append(f"- {variant}: " + ", ".join(f"{k} {v}" for k, v in sorted(rq.items()))
                  + ("; " + ", ".join(f"`{k}` {v}" for k, v in sorted(custom.items()))
                     if custom else ""))
    md.append("")

    out.write_text("\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--phase", default="warmup")
    p = sub.add_parser("write")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "check":
        check(args.work, args.phase)
    else:
        write(args.work, args.out)


if __name__ == "__main__":
    main()
