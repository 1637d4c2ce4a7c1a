"""heterogeneous: nodes at 1x, 1x, 0.5x, 0.25x (one failing 10 %) at ~70 % of the fleet's capacity."""

from __future__ import annotations

from typing import Any

from bench import oracle
from bench.harness import report, routing, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.rounds import every_strategy
from bench.harness.systems import start_nodes

SPEEDS = [1.0, 1.0, 0.5, 0.25]
FAILING = 1  # node-2: a fast node that also fails 10 % of requests (fails fast: an attractive trap)
NUM_PARALLEL = 2
# NOTE: the simulator's natural answers are 20-60 tokens at 60 tokens/s (mean 40) after a short
# prompt at 600 tokens/s: about 0.72 s per request on a 1x node at time scale 1.
MEAN_SERVICE_S = 40 / 60 + 30 / 600


def capacity_rps(time_scale: float) -> float:
    """Requests/s the fleet completes when every slot is busy."""
    return sum(NUM_PARALLEL * speed / (MEAN_SERVICE_S * time_scale) for speed in SPEEDS)


async def run(ctx: Context) -> dict[str, Any]:
    """Runs every Corral strategy and every LiteLLM strategy against the same fleet and workload."""
    return await run_at(ctx, "heterogeneous", 0.7, duration_s=100.0)


async def run_at(ctx: Context, scenario: str, load: float, duration_s: float) -> dict[str, Any]:
    """The heterogeneous scenario at `load` (a share of capacity), `duration_s` per system in all."""
    # NOTE: time scale 0.25 gives each system over 2,000 requests in 100 s at 70 %, enough for a p99
    # that is not the third-slowest request; queueing scales with the time scale, so the ratios hold.
    time_scale = ctx.pick(0.25, 0.05)
    p: dict[str, Any] = {
        "speeds": SPEEDS,
        "failing_node": f"node-{FAILING + 1} (error_rate 0.1)",
        "time_scale": time_scale,
        "num_parallel": NUM_PARALLEL,
        "capacity_rps": round(capacity_rps(time_scale), 2),
        "load": load,
        "rate_rps": round(ctx.pick(load * capacity_rps(time_scale), 10.0), 2),
        "duration_s": ctx.pick(duration_s, 2.0),
        "warmup_s": ctx.pick(2.0, 0.5),
        "rounds": ctx.pick(4, 1),
        "client_timeout_s": 60,
        "request": "non-streamed chat, one unique user question, natural answer length (20-60 tokens)",
    }
    work = ctx.scratch(scenario)
    nodes = await start_nodes(
        SPEEDS,
        time_scale,
        faults={FAILING: ["error_rate=0.1"]},
        extra_args=("--num-parallel", str(NUM_PARALLEL), "--models", "llama3.2:1b"),
    )
    systems: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    names = {n.url: n.node_id for n in nodes}
    rounds = p["rounds"]

    def spec_for(name: str, target: dict[str, Any], round_no: int) -> dict[str, Any]:
        return poisson_spec(
            target, p["rate_rps"], p["duration_s"] / rounds, warmup_s=p["warmup_s"], seed=round_no + 1,
            requests={"kind": "unique", "tag": f"{name}-{round_no}"},
        )  # fmt: skip

    merged = await every_strategy(ctx, nodes, spec_for, rounds, work, p["client_timeout_s"])
    for name, result in merged.items():
        figures = routing.figures(result, p["duration_s"], names)
        systems[name] = figures
        latencies[name] = [r["latency_ms"] for r in stats.measured(result) if r["ok"]]
    # NOTE: the oracle replays the same arrivals (seed per round) through the simulator's cost model.
    fleet = (SPEEDS, NUM_PARALLEL, time_scale, p["rate_rps"])
    systems.update(oracle.scenario_rows(*fleet, p["duration_s"], p["warmup_s"], p["rounds"]))
    long_requests = ctx.pick(60_000, 2_000)
    long_run = oracle.long_run(
        *fleet, long_requests, policies=("oracle", "ect", "ect_learned", "least_inflight", "round_robin")
    )
    result_doc = report.Result(
        scenario=scenario,
        title=f"Heterogeneous fleet at {load:.0%} load",
        description=(
            f"Four simulated nodes at speeds {', '.join(f'{s:g}x' for s in SPEEDS)} "
            f"(time scale {time_scale:g}, "
            f"{NUM_PARALLEL} slots each); node-{FAILING + 1} also answers 10 % of requests with a 500. "
            f"Open-loop Poisson arrivals at {p['rate_rps']:g} requests/s ({load:.0%} of the fleet's "
            f"{p['capacity_rps']:g} requests/s) for {p['duration_s']:g} s per system, in {p['rounds']} "
            f"interleaved rounds (every system up at once, a segment each in turn, {p['warmup_s']:g} s "
            "warm-up per segment). Corral: `POST /api/chat` on one router (+ health) per strategy; "
            "LiteLLM: `POST /v1/chat/completions` on one proxy per routing strategy, 2 retries, cooldown "
            "5 s after 3 failures. Errors are what the client saw (after each system's own retries)."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("p99_by_round", "p99 per round ms"),
            ("requests", "requests"),
            ("throughput_rps", "rps"),
            ("errors", "errors"),
            ("requests_by_node", "served by node"),
        ],
        targets=routing.targets(scenario, systems),
        notes=[
            "oracle: bench/oracle.py replays each round's arrival trace offline through the simulator's "
            "cost model (same fleet, slots and speeds; no network, no failures) and routes every request "
            "with full knowledge: true speeds, the remaining work on every node and the request's size. "
            "No router knows more; it is a greedy rule, so a yardstick rather than a proven bound.",
            f"The same model on one {long_requests:,}-request trace (p50 / p99 ms): "
            + "; ".join(f"{n} {f['p50_ms']:,.0f} / {f['p99_ms']:,.0f}" for n, f in long_run.items())
            + ". Round robin's p99 grows with the trace: the 0.25x node gets more than it can serve.",
        ],
        extra={"oracle_long_run": {"requests": long_requests, "policies": long_run}},
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        ax = fig.subplots()
        for name, values in latencies.items():
            xs, ys = stats.cdf_points(values)
            ax.plot(xs, ys, label=name, linestyle="-" if name.startswith("corral") else "--")
        ax.set_xscale("log")
        ax.set_xlabel("latency ms (log)")
        ax.set_ylabel("CDF")
        ax.legend(fontsize=8)

    return report.write(result_doc, ctx.out_dir, plot)
