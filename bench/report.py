#!/usr/bin/env python3
"""Reads what one `scripts/bench` run measured and writes the Markdown report.

  report.py check --work DIR --phase warmup
      Fails (exit 1, one line per bad run) unless every wrk run of the phase got only 2xx
      responses and no socket errors: a rejected request would be cheaper than a served one and
      make a variant look fast.
  report.py write --work DIR --out FILE
      Writes the report: settings and machine, issue 4's targets met or missed, one table of
      cells (median requests/s, p50/p99 latency, Envoy's CPU share and CPU time per request,
      CPU other processes took from Envoy's core), the ratios pair by pair (per round, then the
      median) by requests/s and by Envoy CPU per request, the .wasm sizes, Envoy's RSS, what each
      load exercises, and Envoy's request counters and trustip's counters.

Python standard library only. Inputs (from scripts/bench and bench/prepare.py): DIR/plan.json,
DIR/runs.tsv (one line per wrk run), the wrk outputs, DIR/meta.env, DIR/stats-VARIANT.txt.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

KIB = 1024

# Issue 4's targets that are not ratios (the ratio thresholds are in write()).
WASM_TARGET = 200 * KIB
RSS_TARGET_KIB = 5 * 1024  # trustip <= noop + 5 MiB per worker (one worker here)


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


def write(work: Path, out: Path) -> None:
    plan = json.loads((work / "plan.json").read_text())
    meta = read_env(work / "meta.env")
    clk_tck = int(meta.get("clk_tck", "100"))
    runs = [r for r in read_runs(work) if r["phase"] == "measure"]
    variants, loads = plan["variants"], plan["loads"]
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

    md: list[str] = []
    upstream = ("`direct_response` route: Envoy answers itself, no upstream connection"
                if plan["upstream"] == "direct"
                else "router to a second listener of the same Envoy (direct_response)")
    md += [
        "# trustip benchmark results",
        "",
        f"Written by `scripts/bench` on {meta.get('date', '?')} (commit "
        f"{meta.get('commit', '?')}); the whole run took {meta.get('duration', '?')} s.",
        "",
        "| | |",
        "|---|---|",
        f"| Machine | {meta.get('nproc', '?')} cores, {meta.get('cpu_model', '?')}, "
        f"{meta.get('kernel', '?')} |",
        f"| Envoy | {meta.get('envoy_version', '?')}, V8 runtime, `--concurrency 1`, one process "
        "per variant, all pinned to core 0 |",
        f"| Load | wrk {meta.get('wrk_version', '?')} (1 thread, {meta.get('connections', '?')} "
        f"connections) and HAProxy {meta.get('haproxy_version', '?')} (1 thread), both pinned "
        f"to core 1; Envoy, wrk and HAProxy at nice {meta.get('nice', '?')} |",
        f"| Runs | {meta.get('warmup', '?')} s warm-up per cell, then {len(rounds)} rounds of "
        f"{meta.get('seconds', '?')} s per cell; within a round each load runs on every variant "
        "back to back, the variant order rotating from round to round |",
        f"| Upstream | {upstream} |",
        f"| Load average | {meta.get('loadavg_start', '?')} at start, "
        f"{meta.get('loadavg_end', '?')} at end |",
        "",
        "How to read it: requests/s ratios are what issue 4's targets name, and they equal the "
        "ratio of Envoy's capacities only while Envoy's core is saturated (Envoy CPU near 100%). "
        "Where it is not (with 2 cores, wrk and HAProxy saturate core 1 first in the loads "
        "through HAProxy with a new connection per request), the requests/s ratio understates "
        "what the filter costs; the ratio of Envoy CPU time per request (\"by CPU\", written "
        "noop/trustip so that it reads like a requests/s ratio) is then the better estimate. "
        "\"Others on core 0\" is CPU time other processes took from Envoy's core during the "
        "runs: this machine may be shared, and such runs are noisy.",
        "",
    ]
    if problems:
        md += ["**Some measured runs had errors; their numbers are not trustworthy:**", ""]
        md += [f"- {p}" for p in problems] + [""]

    # --- targets first
    summary = ["## Targets (issue 4)", "",
               "| Target | by requests/s | by Envoy CPU per request |", "|---|---|---|"]
    ratio_rows = []
    for load in loads:
        keepalive = plan["load_info"][load]["keepalive"]
        threshold = 0.95 if keepalive else 0.90
        t_rps = ratios(load, "trustip", "noop", "rps")
        t_cpu = ratios(load, "trustip", "noop", "cpu_per_rq", inverse=True)
        t_p99 = ratios(load, "trustip", "noop", "p99")
        l_rps = ratios(load, "trustip-large", "noop", "rps")
        l_cpu = ratios(load, "trustip-large", "noop", "cpu_per_rq", inverse=True)
        n_rps = ratios(load, "noop", "native", "rps")
        n_cpu = ratios(load, "noop", "native", "cpu_per_rq", inverse=True)
        t_add = differences(load, "trustip", "noop", "cpu_per_rq")
        l_add = differences(load, "trustip-large", "noop", "cpu_per_rq")
        n_add = differences(load, "noop", "native", "cpu_per_rq")
        summary.append(
            f"| {load}: trustip >= {threshold:.2f}x noop | {fmt_ratio(t_rps)} "
            f"{verdict(median(t_rps), threshold, '>=')} | {fmt_ratio(t_cpu)} "
            f"{verdict(median(t_cpu), threshold, '>=')} |")
        if keepalive:
            summary.append(
                f"| {load}: trustip p99 <= 1.10x noop | {fmt_ratio(t_p99)} "
                f"{verdict(median(t_p99), 1.10, '<=')} | |")
        summary.append(
            f"| {load}: trustip-large >= 0.90x noop | {fmt_ratio(l_rps)} "
            f"{verdict(median(l_rps), 0.90, '>=')} | {fmt_ratio(l_cpu)} "
            f"{verdict(median(l_cpu), 0.90, '>=')} |")

        def fmt_add(v: list[float]) -> str:
            return f"{median(v):+.1f} µs" if v else "-"

        ratio_rows.append(
            f"| {load} | {fmt_ratio(n_rps)} | {fmt_ratio(n_cpu)} | {fmt_add(n_add)} | "
            f"{fmt_ratio(t_rps)} | {fmt_ratio(t_cpu)} | {fmt_add(t_add)} | {fmt_ratio(t_p99)} | "
            f"{fmt_ratio(l_rps)} | {fmt_ratio(l_cpu)} | {fmt_add(l_add)} |")

    size = int(meta.get("size_trustip", "0"))
    opt = int(meta["size_trustip_opt"]) if meta.get("size_trustip_opt") else None
    best = min(size, opt) if opt else size
    summary.append(f"| trustip.wasm <= 200 KiB (release profile, then wasm-opt) | "
                   f"{best / KIB:.0f} KiB {verdict(best, WASM_TARGET, '<=')} | |")
    noop_peak = int(meta.get("rss_peak_noop", "0"))
    for variant in ("trustip", "trustip-large"):
        peak = int(meta.get(f"rss_peak_{variant.replace('-', '_')}", "0"))
        summary.append(f"| Envoy peak RSS {variant} <= noop + 5 MiB (1 worker) | "
                       f"{(peak - noop_peak) / 1024:+.1f} MiB "
                       f"{verdict(peak - noop_peak, RSS_TARGET_KIB, '<=')} | |")
    md += summary
    md += ["", "Ratios: median over the rounds of the pair-by-pair ratios (range in brackets). "
           "Not measured by this command: the native micro-benchmark of the core decision and "
           "the host calls per request.", ""]

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

    md += [
        "## Ratios",
        "",
        "\"+µs\": Envoy CPU time per request that the second variant adds to the first.",
        "",
        "| Load | noop/native req/s | by CPU | noop - native | trustip/noop req/s | by CPU | trustip - noop | trustip/noop p99 | trustip-large/noop req/s | by CPU | trustip-large - noop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ] + ratio_rows + [""]

    md += ["Per round (req/s ratio, by-CPU ratio):", "",
           "| Load | Round | noop/native | trustip/noop | trustip-large/noop |",
           "|---|---:|---|---|---|"]
    for load in loads:
        for n in rounds:
            row = []
            for a, b in (("noop", "native"), ("trustip", "noop"), ("trustip-large", "noop")):
                x, y = cell.get((load, a, n)), cell.get((load, b, n))
                if x and y and x["rps"] and y["rps"] and x["cpu_per_rq"] and y["cpu_per_rq"]:
                    row.append(f"{x['rps'] / y['rps']:.3f}, {y['cpu_per_rq'] / x['cpu_per_rq']:.3f}")
                else:
                    row.append("-")
            md.append(f"| {load} | {n} | {' | '.join(row)} |")
    md.append("")

    # --- sizes
    md += ["## .wasm size", "", "| Module | cargo release artifact | after `wasm-opt -Oz` |",
           "|---|---:|---:|"]
    for name in ("trustip", "noop"):
        size = int(meta.get(f"size_{name}", "0"))
        opt_text = meta.get(f"size_{name}_opt")
        opt_cell = (f"{int(opt_text):,} B ({int(opt_text) / KIB:.0f} KiB)" if opt_text
                    else "wasm-opt not installed")
        md.append(f"| {name} | {size:,} B ({size / KIB:.0f} KiB) | {opt_cell} |")
    md += ["", f"Envoy loads the cargo artifacts. {meta.get('wasm_opt_version', '')}", ""]

    # --- memory
    md += ["## Envoy memory", "",
           "One Envoy process per variant, one worker (so one VM per role on the worker, plus "
           "the main thread's): peak = VmHWM after all of that variant's loads, idle = VmRSS "
           "right after start.", "",
           "| Variant | idle RSS | peak RSS (VmHWM) | peak - noop peak |", "|---|---:|---:|---:|"]
    for variant in variants:
        k = variant.replace("-", "_")
        idle, peak = int(meta.get(f"rss_idle_{k}", "0")), int(meta.get(f"rss_peak_{k}", "0"))
        md.append(f"| {variant} | {idle / 1024:.1f} MiB | {peak / 1024:.1f} MiB | "
                  f"{(peak - noop_peak) / 1024:+.1f} MiB |")
    md.append("")

    # --- loads
    md += ["## What the loads exercise", "",
           f"Every request of every load and variant carries the same "
           f"{len(plan['xff'].split(','))}-entry X-Forwarded-For: client 203.0.113.7, 17 "
           "addresses (IPv4 and IPv6) trusted only by the large policy, 10.1.2.3, 127.0.0.9. "
           f"trustip walks 3 entries of it, trustip-large all 20 ({plan['large_count']:,} "
           f"trusted CIDRs: {plan['large_v4']:,} IPv4, {plan['large_v6']:,} IPv6). The small "
           f"policy trusts {', '.join(plan['small_trusted'])}; wrk's address and every PROXY "
           "source are in 127.0.0.0/28, so the walk runs in every load and trustip rewrites "
           "X-Forwarded-For, x-envoy-external-address and x-real-ip on every request.", "",
           "| Load | What it is | What trustip does |", "|---|---|---|"]
    for load in loads:
        info = plan["load_info"][load]
        md.append(f"| {load} | {info['title']} | {info['exercises']} |")
    md += ["", "Decisions checked before the run with `trustip explain` (the filter's own "
           "decision function):", ""]
    for key, d in sorted(plan["decisions"].items()):
        md.append(f"- {key}: reason `{d['reason']}`, rule {d['rule']}, client {d['client_ip']}")
    md.append("")

    # --- counters
    md += ["## Envoy counters after the run", ""]
    for variant in variants:
        path = work / f"stats-{variant}.txt"
        if not path.exists():
            continue
        stats = dict(
            line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line
        )
        custom = {k: v for k, v in stats.items()
                  if k.startswith("wasmcustom.") and v.strip() != "0"}
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
