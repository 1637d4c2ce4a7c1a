"""Soak: mixed traffic with recurring faults; memory, descriptors and latency of every service over time.

    python -m bench.soak --duration 600            # make soak (results in bench/results/soak.*)
    python -m bench.soak --duration 60 --out DIR   # make soak-smoke (CI)

The whole system runs as processes (tests/chaos/harness.py): Redis, PostgreSQL, three simulated
nodes and the four services. Faults rotate through nodes and stores, never through the Corral
services themselves, so each service process lives for the whole run and its growth can be judged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from tests.chaos.harness import Corral, start_corral
from tests.chaos.traffic import Traffic, make_prompts, summarize

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GROWTH_LIMIT = 0.10


def _faults(corral: Corral) -> list[tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]:
    async def hang() -> None:
        corral.stop_node("node-2", signal.SIGSTOP)

    async def resume() -> None:
        corral.stop_node("node-2", signal.SIGCONT)

    return [
        ("node-2 hung", hang, resume),
        ("node-3 killed", lambda: corral.kill_node("node-3"), lambda: corral.restart_node("node-3")),
        (
            "node-1 cuts streams",
            lambda: corral.set_fault("node-1", cut_after_tokens=5),
            lambda: corral.clear_faults("node-1"),
        ),
        ("Redis down", corral.redis.stop, corral.redis.start),
        ("PostgreSQL down", corral.postgres.stop, corral.postgres.start),
        (
            "node-1 slow",
            lambda: corral.set_fault("node-1", slow_factor=20, extra_latency_ms=1200),
            lambda: corral.clear_faults("node-1"),
        ),
    ]


def _sample(procs: dict[str, psutil.Process]) -> dict[str, dict[str, float]]:
    sample = {}
    for name, proc in procs.items():
        try:
            with proc.oneshot():
                sample[name] = {"rss_mb": proc.memory_info().rss / 2**20, "fds": float(proc.num_fds())}
        except psutil.Error:
            continue
    return sample


def growth(samples: list[dict[str, Any]], service: str, metric: str, warmup_share: float) -> float | None:
    """Relative change from the first fifth after warm-up to the last fifth of the run."""
    values = [s["services"][service][metric] for s in samples if service in s["services"]]
    start = int(len(values) * warmup_share)
    steady = values[start:]
    if len(steady) < 5:
        return None
    fifth = max(1, len(steady) // 5)
    early = statistics.mean(steady[:fifth])
    late = statistics.mean(steady[-fifth:])
    return (late - early) / early if early else None


async def soak(duration_s: float, sample_every_s: float, fault_every_s: float) -> dict[str, Any]:
    """Runs the soak and returns the result document."""
    corral = await start_corral()
    prompts = make_prompts(200, seed=3)
    traffic = Traffic(corral.router_addr, prompts, unary_workers=3, stream_workers=1, think_s=0.03)
    procs = {name: psutil.Process(p.pid) for name, p in corral.procs.items()}
    samples: list[dict[str, Any]] = []
    faults_done: list[dict[str, Any]] = []
    started = time.monotonic()
    await traffic.start()
    try:
        faults = _faults(corral)
        next_fault = started + fault_every_s
        index = 0
        last = started
        while (now := time.monotonic()) - started < duration_s:
            if now >= next_fault:
                name, inject, restore = faults[index % len(faults)]
                index += 1
                fault_started = time.monotonic()
                await inject()
                await asyncio.sleep(min(3.0, fault_every_s / 3))
                await restore()
                faults_done.append({"fault": name, "at_s": round(fault_started - started, 1)})
                next_fault = time.monotonic() + fault_every_s
            await asyncio.sleep(sample_every_s)
            now = time.monotonic()
            window = summarize(traffic.between(last, now))
            samples.append(
                {
                    "t_s": round(now - started, 1),
                    "services": _sample(procs),
                    "calls": window["unary"] + window["streams"],
                    "unary_failed": window["unary_failed"],
                    "p50_ms": window["p50_ms"],
                    "p99_ms": window["p99_ms"],
                }
            )
            last = now
    finally:
        await traffic.stop()
        await corral.close()
    warmup_share = 0.2
    growths = {
        name: {
            "rss": growth(samples, name, "rss_mb", warmup_share),
            "fds": growth(samples, name, "fds", warmup_share),
        }
        for name in procs
    }
    return {
        "meta": {
            "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "duration_s": duration_s,
            "sample_every_s": sample_every_s,
            "fault_every_s": fault_every_s,
            "warmup_share": warmup_share,
            "growth_limit": GROWTH_LIMIT,
        },
        "totals": summarize(traffic.calls),
        "wrong_answers": len(traffic.wrong),
        "faults": faults_done,
        "growth": growths,
        "samples": samples,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f} %"


def write(result: dict[str, Any], out: Path) -> None:
    """soak.json, soak.md and (with matplotlib) soak.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    meta, totals = result["meta"], result["totals"]
    first, last = result["samples"][0], result["samples"][-1]
    lines = [
        "# Soak results",
        "",
        f"Recorded {meta['recorded_at']} on {meta['machine']}: `python -m bench.soak --duration "
        f"{meta['duration_s']:.0f}`, a fault every {meta['fault_every_s']:.0f} s "
        f"({', '.join(sorted({f['fault'] for f in result['faults']}))}).",
        "",
        f"Calls: {totals['unary']} unary ({totals['unary_failed']} failed), {totals['streams']} streams "
        f"(errors: {totals['stream_errors'] or 'none'}, truncated {totals['streams_truncated']}); "
        f"wrong answers {result['wrong_answers']}; "
        f"latency p50 {totals['p50_ms']} ms, p99 {totals['p99_ms']} ms.",
        "",
        f"Growth after warm-up (first {meta['warmup_share']:.0%} of the run), mean of the last fifth vs the "
        f"first fifth of the rest; limit {meta['growth_limit']:.0%}:",
        "",
        "| service | RSS first → last MB | RSS growth | fds first → last | fd growth |",
        "|---|---|---|---|---|",
    ]
    for name, g in result["growth"].items():
        a, b = first["services"].get(name, {}), last["services"].get(name, {})
        lines.append(
            f"| {name} | {a.get('rss_mb', 0):.1f} → {b.get('rss_mb', 0):.1f} | {_pct(g['rss'])} "
            f"| {a.get('fds', 0):.0f} → {b.get('fds', 0):.0f} | {_pct(g['fds'])} |"
        )
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    t = [s["t_s"] for s in result["samples"]]
    for name in result["growth"]:
        axes[0].plot(t, [s["services"].get(name, {}).get("rss_mb") for s in result["samples"]], label=name)
        axes[1].plot(t, [s["services"].get(name, {}).get("fds") for s in result["samples"]], label=name)
    axes[2].plot(t, [s["p50_ms"] for s in result["samples"]], label="p50")
    axes[2].plot(t, [s["p99_ms"] for s in result["samples"]], label="p99")
    for fault in result["faults"]:
        for ax in axes:
            ax.axvline(fault["at_s"], color="grey", alpha=0.3)
    axes[0].set_ylabel("RSS MB")
    axes[1].set_ylabel("open fds")
    axes[2].set_ylabel("latency ms")
    axes[2].set_xlabel("seconds (grey lines: faults)")
    for ax in axes:
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=90)


def main(argv: list[str] | None = None) -> int:
    """Command line; exit 1 when a service grew beyond the limit or a unary call failed."""
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--sample-every", type=float, default=3.0, help="seconds between samples")
    parser.add_argument("--fault-every", type=float, default=None, help="seconds between faults")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    if args.duration < 10:
        parser.error("--duration: at least 10 seconds")
    fault_every = args.fault_every or max(8.0, args.duration / 20)
    result = asyncio.run(soak(args.duration, args.sample_every, fault_every))
    write(result, args.out)
    print((args.out / "soak.md").read_text())
    over = [
        f"{name} {metric} {value:+.1%}"
        for name, g in result["growth"].items()
        for metric, value in g.items()
        if value is not None and value > GROWTH_LIMIT
    ]
    failed = result["totals"]["unary_failed"]
    if args.duration >= 300 and over:
        print(f"soak: growth beyond {GROWTH_LIMIT:.0%}: {', '.join(over)}", file=sys.stderr)
        return 1
    if failed:
        print(f"soak: {failed} unary calls failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
