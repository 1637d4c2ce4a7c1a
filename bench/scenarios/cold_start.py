"""cold-start: the prewarm engineer's bench/cold_start.py, run and wrapped into the common result schema."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bench.harness import report
from bench.harness.context import Context
from tests.helpers.procs import ROOT, base_env

TITLE = "Cold start: first request after a node restart, with and without prewarm"
MODES = {
    "warm node": "warm",
    "restarted, without prewarm": "cold_without_prewarm",
    "restarted, with prewarm": "cold_with_prewarm",
}


async def run(ctx: Context) -> dict[str, Any]:
    """Runs bench/cold_start.py (its own node, health and prewarm) and converts its JSON."""
    p: dict[str, Any] = {
        "reps": ctx.pick(5, 1),
        "time_scale": ctx.pick(1.0, 0.01),
        "probe_interval_s": ctx.pick(0.5, 0.2),
        "source": "bench/cold_start.py (TTFT of a streamed generate straight to the restarted node)",
    }
    out = ctx.scratch("cold-start") / "cold_start"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "cold_start.py"),
        "--reps", str(p["reps"]),
        "--time-scale", str(p["time_scale"]),
        "--probe-interval-s", str(p["probe_interval_s"]),
        "--out", str(out),
        cwd=str(ROOT),
        env=base_env(),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await proc.wait() != 0:
        raise RuntimeError("bench/cold_start.py failed")
    raw = json.loads(out.with_suffix(".json").read_text())
    systems: dict[str, dict[str, Any]] = {}
    for label, key in MODES.items():
        ttft = raw["modes"][key]["ttft_ms"]
        systems[label] = {
            "p50_ms": ttft["median"],
            "p99_ms": ttft["max"],
            "ttft_mean_ms": ttft["mean"],
            "ttft_min_ms": ttft["min"],
            "throughput_rps": None,
            "errors": 0,
            "node_load_ms": raw["modes"][key]["node_load_ms"]["median"],
        }
    result = report.Result(
        scenario="cold-start",
        title=TITLE,
        description=(
            f"One simulated node (time scale {p['time_scale']:g}: a cold load of "
            f"{raw['setup']['model']} takes {raw['setup']['nominal_cold_load_s'] * p['time_scale']:.2f} s), "
            "the health service probing it and, in the prewarm mode, the prewarm service following health. "
            f"Each of {p['reps']} repetitions restarts the node and measures the first user request's TTFT. "
            "p50 is the median over repetitions and p99 the maximum. Measured by bench/cold_start.py "
            "(its own write-up: bench/results/cold_start.md); LiteLLM has no equivalent of prewarm."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("p50_ms", "TTFT median ms"),
            ("ttft_min_ms", "min ms"),
            ("p99_ms", "max ms"),
            ("node_load_ms", "node load_duration ms"),
        ],
        targets=[
            report.Target(
                "cold-start: prewarmed first-request TTFT / warm TTFT",
                raw["ratio_with_prewarm_to_warm"],
                raw["target_ratio"],
                f"without prewarm the ratio is {raw['ratio_without_prewarm_to_warm']} "
                "(the request pays the load).",
            )
        ],
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        ax = fig.subplots()
        names = list(systems)
        ax.bar(names, [systems[n]["p50_ms"] for n in names], color=["tab:green", "tab:red", "tab:blue"])
        ax.set_yscale("log")
        ax.set_ylabel("first-request TTFT ms (median, log)")

    return report.write(result, ctx.out_dir, plot)
