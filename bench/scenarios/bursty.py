"""bursty: on/off arrivals on the heterogeneous fleet, then an overload at 150 % of capacity for 10 s."""

from __future__ import annotations

from typing import Any

from bench import oracle
from bench.harness import report, routing, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.rounds import every_strategy
from bench.harness.systems import DEFAULT_STRATEGY, start_nodes
from bench.harness.workload import RateProfile
from bench.scenarios import heterogeneous

TITLE = "Bursty arrivals and a 10 s overload at 150 %"
# NOTE: the heterogeneous scenario's fleet (its speeds, slots and capacity), without the failing node.
SPEEDS = heterogeneous.SPEEDS
NUM_PARALLEL = heterogeneous.NUM_PARALLEL
capacity_rps = heterogeneous.capacity_rps
LOAD = 0.7  # the base rate, as a share of capacity; the profile multiplies it
ON, OFF = 1.6, 0.4  # on/off factors: 112 % and 28 % of capacity, 70 % on average
OVERLOAD = 1.5  # share of capacity during the overload
AFTER = 0.5  # share of capacity once the overload is over
FAST_REFUSAL_MS = 1000.0  # a refusal is fast when the client has it within this


def profile(
    warmup_s: float, period_s: float, cycles: int, overload_s: float
) -> tuple[RateProfile, float, float]:
    """The rate profile (factors of the base rate), and when the overload starts and ends.

    Steady during the warm-up; then `cycles` on/off periods (`period_s` on, `period_s` off); then
    the overload; then a calmer rate for the rest of the segment.
    """
    steps: list[tuple[float, float]] = [(0.0, 1.0)]
    at = warmup_s
    for _ in range(cycles):
        steps += [(at, ON), (at + period_s, OFF)]
        at += 2 * period_s
    steps += [(at, OVERLOAD / LOAD), (at + overload_s, AFTER / LOAD)]
    return steps, at, at + overload_s


def _is_refusal(record: dict[str, Any]) -> bool:
    """A saturation refusal as the client sees it: HTTP 503 (gRPC RESOURCE_EXHAUSTED in its error)."""
    return record["status"] == 503 or "RESOURCE_EXHAUSTED" in record["error"]


def _phases(
    result: dict[str, Any], zero: dict[int, float], burst_from: float, burst_until: float
) -> dict[str, Any]:
    """Errors and refusals before, during and after the overload (by send time), and how fast the
    refusals came."""
    sent = [(r["t"] - zero[r["round"]], r) for r in stats.measured(result)]
    inside = [r for t, r in sent if burst_from <= t < burst_until]
    outside = [r for t, r in sent if not burst_from <= t < burst_until]
    after = [r for t, r in sent if t >= burst_until]
    refusals = [r for r in inside if not r["ok"] and _is_refusal(r)]
    slowest = max((r["latency_ms"] for r in refusals), default=None)
    by_second: dict[int, list[float]] = {}
    for t, r in sent:
        if r["ok"]:
            by_second.setdefault(int(t), []).append(r["latency_ms"])
    burst_ok = [r["latency_ms"] for r in inside if r["ok"]]
    p99_burst = stats.percentile(burst_ok, 99)
    return {
        "errors_outside_burst": sum(not r["ok"] for r in outside),
        "errors_in_burst": sum(not r["ok"] for r in inside),
        "refusals_in_burst": len(refusals),
        "other_errors_in_burst": sum(not r["ok"] and not _is_refusal(r) for r in inside),
        "refusals_after_burst": sum(not r["ok"] and _is_refusal(r) for r in after),
        "slowest_refusal_ms": stats.rounded(slowest),
        "slow_refusals": sum(r["latency_ms"] > FAST_REFUSAL_MS for r in refusals),
        "p99_burst_ms": stats.rounded(p99_burst),
        "_p99_by_second": {s: stats.percentile(v, 99) for s, v in sorted(by_second.items())},
    }


async def run(ctx: Context) -> dict[str, Any]:
    """Runs every Corral and LiteLLM strategy through the same bursts and overload, in rounds."""
    time_scale = ctx.pick(0.25, 0.05)
    warmup_s = ctx.pick(2.0, 0.5)
    period_s = ctx.pick(3.0, 0.5)
    cycles = ctx.pick(5, 2)
    overload_s = ctx.pick(10.0, 1.0)
    after_s = ctx.pick(20.0, 1.0)
    steps, burst_from, burst_until = profile(warmup_s, period_s, cycles, overload_s)
    segment_s = burst_until + after_s - warmup_s
    p: dict[str, Any] = {
        "speeds": SPEEDS,
        "time_scale": time_scale,
        "num_parallel": NUM_PARALLEL,
        "capacity_rps": round(capacity_rps(time_scale), 2),
        "rate_rps": round(ctx.pick(LOAD * capacity_rps(time_scale), 10.0), 2),
        "rate_profile": steps,
        "overload_from_s": burst_from,
        "overload_until_s": burst_until,
        "segment_s": segment_s,
        "warmup_s": warmup_s,
        "rounds": ctx.pick(2, 1),
        "client_timeout_s": 60,
        "request": "non-streamed chat, one unique user question, natural answer length (20-60 tokens)",
    }
    rounds = p["rounds"]
    work = ctx.scratch("bursty")
    nodes = await start_nodes(
        SPEEDS, time_scale, extra_args=("--num-parallel", str(NUM_PARALLEL), "--models", "llama3.2:1b")
    )
    names = {n.url: n.node_id for n in nodes}

    def spec_for(name: str, target: dict[str, Any], round_no: int) -> dict[str, Any]:
        return poisson_spec(
            target, p["rate_rps"], segment_s, warmup_s=warmup_s, seed=round_no + 1,
            requests={"kind": "unique", "tag": f"{name}-{round_no}"}, rate_profile=steps,
        )  # fmt: skip

    merged = await every_strategy(ctx, nodes, spec_for, rounds, work, p["client_timeout_s"])
    systems: dict[str, dict[str, Any]] = {}
    for name, result in merged.items():
        zero = {seg["round"]: seg["t0"] for seg in result["segments"]}
        figures = routing.figures(result, segment_s * rounds, names)
        figures.update(_phases(result, zero, burst_from, burst_until))
        systems[name] = figures
    systems.update(
        oracle.scenario_rows(
            SPEEDS, NUM_PARALLEL, time_scale, p["rate_rps"], segment_s * rounds, warmup_s, rounds,
            policies=("oracle", "ect_learned"), profile=steps,
        )
    )  # fmt: skip
    systems["oracle (ect_learned)"] = systems.pop("ect_learned")
    curves = {name: f.pop("_p99_by_second") for name, f in systems.items() if "_p99_by_second" in f}
    targets = routing.targets("bursty", systems, errors_key="errors_outside_burst")
    default = systems[f"corral/{DEFAULT_STRATEGY}"]
    targets.append(
        report.Target(
            "bursty: Corral default refusals after the overload ended",
            float(default["refusals_after_burst"]),
            0,
            f"{default['refusals_in_burst']} refusals during the overload (slowest answered in "
            f"{default['slowest_refusal_ms']} ms), {default['other_errors_in_burst']} other errors in it; "
            f"p99 of the requests sent during it {default['p99_burst_ms']} ms.",
        )
    )
    targets.append(
        report.Target(
            f"bursty: Corral default refusals slower than {FAST_REFUSAL_MS:g} ms during the overload",
            float(default["slow_refusals"]),
            0,
            "none refused: every request sent during the overload was served"
            if not default["refusals_in_burst"]
            else f"{default['refusals_in_burst']} refusals, slowest {default['slowest_refusal_ms']} ms",
        )
    )
    result_doc = report.Result(
        scenario="bursty",
        title=TITLE,
        description=(
            f"The heterogeneous fleet without its failing node: four simulated nodes at speeds "
            f"{', '.join(f'{s:g}x' for s in SPEEDS)} (time scale {time_scale:g}, {NUM_PARALLEL} slots each, "
            f"{p['capacity_rps']:g} requests/s in all). Open-loop Poisson arrivals whose rate follows a "
            f"profile: {LOAD:.0%} of capacity during {warmup_s:g} s of warm-up; {cycles} on/off cycles of "
            f"{period_s:g} s at {LOAD * ON:.0%} and {period_s:g} s at {LOAD * OFF:.0%}; an overload at "
            f"{OVERLOAD:.0%} from {burst_from:g} s to {burst_until:g} s; then {AFTER:.0%} for {after_s:g} s. "
            f"{rounds} interleaved rounds (every system up at once, a segment each in turn). Corral runs "
            "its default admission queue (512 waiting, 30 s each). Errors are what the client saw; a "
            "refusal is an HTTP 503. Phases by send time."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("p99_by_round", "p99 per round ms"),
            ("p99_burst_ms", "p99 sent in overload ms"),
            ("requests", "requests"),
            ("errors_outside_burst", "errors outside overload"),
            ("refusals_in_burst", "refusals in overload"),
            ("slowest_refusal_ms", "slowest refusal ms"),
            ("refusals_after_burst", "refusals after"),
            ("requests_by_node", "served by node"),
        ],
        targets=targets,
        notes=[
            "oracle: bench/oracle.py replays each round's arrival trace (the same profile and seeds) "
            "offline through the simulator's cost model, with full knowledge of speeds, queues and "
            "request sizes, and no bound on its queues. `oracle (ect_learned)`: the router's `ect` "
            "balancer in the same model, learning from outcomes only.",
        ],
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        ax = fig.subplots()
        ax.axvspan(burst_from, burst_until, color="red", alpha=0.1, label=f"overload {OVERLOAD:.0%}")
        for at, factor in steps:
            if factor == ON:
                ax.axvspan(at, at + period_s, color="grey", alpha=0.1)
        for name, by_second in curves.items():
            xs = [s + 0.5 for s, v in by_second.items() if v is not None]
            ys = [v for v in by_second.values() if v is not None]
            style = "-" if name.startswith("corral") else "--"
            ax.plot(
                xs,
                ys,
                label=name,
                linestyle=style,
                linewidth=2 if name == f"corral/{DEFAULT_STRATEGY}" else 1,
            )
        ax.set_yscale("log")
        ax.set_xlabel("seconds into the trace, by send time (grey: on periods)")
        ax.set_ylabel("p99 latency of the requests sent in each second, ms (log)")
        ax.legend(fontsize=7, loc="upper left")

    return report.write(result_doc, ctx.out_dir, plot)
