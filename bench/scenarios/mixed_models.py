"""mixed-models: 80 % llama3.2:1b and 20 % mistral:7b on four nodes that hold one model at a time."""

from __future__ import annotations

from typing import Any

from bench import oracle
from bench.harness import report, routing, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.rounds import every_strategy
from bench.harness.systems import DEFAULT_STRATEGY, MODEL, Node, node_stats, reset_models, start_nodes

TITLE = "Mixed models on nodes that hold one model at a time"
SPEEDS = [1.0, 1.0, 1.0, 1.0]
NUM_PARALLEL = 2
BIG = "mistral:7b"
MIX = ((MODEL, 0.8), (BIG, 0.2))
LOAD = 0.7
PROMPT_TOKENS = 30  # about a unique question's rendered prompt


def mean_service_s() -> float:
    """Seconds a request of the mix holds a slot on a 1x node at time scale 1 (mean answer 40 tokens)."""
    total = 0.0
    for model, share in MIX:
        prompt_tok_s, eval_tok_s = oracle.model_rates(model)
        total += share * (PROMPT_TOKENS / prompt_tok_s + 40 / eval_tok_s)
    return total


def capacity_rps(time_scale: float) -> float:
    """Requests/s of the mix the fleet completes when every slot is busy and no node swaps models."""
    return sum(NUM_PARALLEL * speed / (mean_service_s() * time_scale) for speed in SPEEDS)


async def _loads(nodes: list[Node]) -> int:
    """Model loads so far, over all nodes (the simulator's counters)."""
    total = 0
    for node in nodes:
        total += int((await node_stats(node))["loads"])
    return total


async def run(ctx: Context) -> dict[str, Any]:
    """Runs every Corral and LiteLLM strategy on the mixed traffic, each segment from the same start."""
    time_scale = ctx.pick(0.25, 0.05)
    p: dict[str, Any] = {
        "speeds": SPEEDS,
        "time_scale": time_scale,
        "num_parallel": NUM_PARALLEL,
        "max_loaded_models": 1,
        "mix": {m: s for m, s in MIX},
        "capacity_rps": round(capacity_rps(time_scale), 2),
        "load": LOAD,
        "rate_rps": round(ctx.pick(LOAD * capacity_rps(time_scale), 10.0), 2),
        "duration_s": ctx.pick(120.0, 2.0),
        "warmup_s": ctx.pick(2.0, 0.5),
        "rounds": ctx.pick(2, 1),
        "client_timeout_s": 60,
        "start": f"every segment starts with {MODEL} loaded on every node and {BIG} on none",
        "request": "non-streamed chat, one unique user question, natural answer length (20-60 tokens)",
    }
    rounds = p["rounds"]
    work = ctx.scratch("mixed-models")
    nodes = await start_nodes(
        SPEEDS,
        time_scale,
        extra_args=(
            "--num-parallel", str(NUM_PARALLEL), "--max-loaded-models", "1", "--models", f"{MODEL},{BIG}",
        ),
    )  # fmt: skip
    names = {n.url: n.node_id for n in nodes}
    loads: dict[str, int] = {}
    baseline = [0]

    async def before(name: str) -> None:
        await reset_models(nodes, unload=(BIG,), keep=(MODEL,))
        baseline[0] = await _loads(nodes)

    async def after(name: str) -> None:
        loads[name] = loads.get(name, 0) + await _loads(nodes) - baseline[0]

    def spec_for(name: str, target: dict[str, Any], round_no: int) -> dict[str, Any]:
        return poisson_spec(
            target, p["rate_rps"], p["duration_s"] / rounds, warmup_s=p["warmup_s"], seed=round_no + 1,
            requests={"kind": "unique", "tag": f"{name}-{round_no}", "models": [list(m) for m in MIX]},
        )  # fmt: skip

    merged = await every_strategy(
        ctx, nodes, spec_for, rounds, work, p["client_timeout_s"],
        models=(MODEL, BIG), before_segment=before, after_segment=after,
    )  # fmt: skip
    systems: dict[str, dict[str, Any]] = {}
    for name, result in merged.items():
        figures = routing.figures(result, p["duration_s"], names)
        measured = stats.measured(result)
        figures["p99_by_model"] = {
            m: stats.rounded(
                stats.percentile([r["latency_ms"] for r in measured if r["ok"] and r["model"] == m], 99)
            )
            for m, _ in MIX
        }
        figures["swaps"] = loads.get(name)
        systems[name] = figures
    fleet = (SPEEDS, NUM_PARALLEL, time_scale, p["rate_rps"])
    systems.update(
        oracle.scenario_rows(
            *fleet, p["duration_s"], p["warmup_s"], rounds, policies=("oracle", "ect_learned"), mix=MIX
        )
    )
    systems["oracle (ect_learned)"] = systems.pop("ect_learned")
    targets = routing.targets("mixed-models", systems)
    default = systems[f"corral/{DEFAULT_STRATEGY}"]
    result_doc = report.Result(
        scenario="mixed-models",
        title=TITLE,
        description=(
            f"Four simulated nodes at 1x (time scale {time_scale:g}, {NUM_PARALLEL} slots each) that "
            f"hold one model at a time (the simulator's --max-loaded-models 1, Ollama's "
            "OLLAMA_MAX_LOADED_MODELS). "
            f"{MIX[0][1]:.0%} of the requests ask for {MODEL}, {MIX[1][1]:.0%} for {BIG} (about 5x the work "
            f"of a {MODEL} answer, and an 8.5 s load at speed 1, 2.1 s here). Each segment starts with "
            f"{MODEL} loaded everywhere: where {BIG} goes, and whether the two models then evict each "
            f"other in turns, is the router's to decide. Open-loop Poisson arrivals at {p['rate_rps']:g} "
            f"requests/s ({LOAD:.0%} of the fleet's capacity without swaps), the same model sequence for "
            f"every system; {rounds} interleaved rounds."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("p99_by_round", "p99 per round ms"),
            ("p99_by_model", "p99 by model ms"),
            ("swaps", "model loads"),
            ("requests", "requests"),
            ("errors", "errors"),
            ("requests_by_node", "served by node"),
        ],
        targets=targets,
        notes=[
            "model loads: loads on all nodes during the system's segments (the simulator's counters), "
            f"beyond the {MODEL} each segment starts with; for the oracle rows, the swaps in the model.",
            "oracle: bench/oracle.py replays each round's trace (the same arrivals and models) offline "
            "through the simulator's cost model, loads and drains included, routing greedily with full "
            "knowledge; `oracle (ect_learned)`: the router's `ect` balancer in the same model, learning "
            "from outcomes only and seeing which model each node holds at once (the live router learns "
            "it from health's probes and its own answers).",
            f"Corral default served {default['requests']} requests with {default['errors']} errors.",
        ],
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        ax = fig.subplots()
        names = list(systems)
        width = 0.8 / len(MIX)
        for k, (model, _) in enumerate(MIX):
            values = [(systems[n].get("p99_by_model") or {}).get(model) or 0.0 for n in names]
            ax.bar([i + k * width for i in range(len(names))], values, width, label=f"p99 {model}")
        ax.set_xticks(
            [i + width * (len(MIX) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right"
        )
        ax.set_yscale("log")
        ax.set_ylabel("p99 latency, ms (log)")
        ax.legend(fontsize=8)

    return report.write(result_doc, ctx.out_dir, plot)
