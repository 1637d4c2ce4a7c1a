"""multi-turn: chat sessions with growing histories; TTFT with and without session affinity."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.harness import report, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.rounds import run_rounds
from bench.harness.systems import (
    DEFAULT_STRATEGY,
    Gateway,
    start_corral,
    start_litellm,
    start_nodes,
    target_of,
    warm,
)

TITLE = "Multi-turn chat sessions: TTFT with and without affinity"
AFFINITY = f"corral/{DEFAULT_STRATEGY} (affinity)"
NO_AFFINITY = "corral/least_inflight (no affinity)"


async def run(ctx: Context) -> dict[str, Any]:
    """Runs the same sessions through Corral with and without affinity (and LiteLLM's default)."""
    time_scale = ctx.pick(0.1, 0.01)
    p: dict[str, Any] = {
        "time_scale": time_scale,
        "nodes": "4 x 1x, 4 slots each (a per-slot KV cache, as Ollama's runner)",
        "session_rate_per_s": ctx.pick(0.8, 2.0),
        "turns": ctx.pick(6, 3),
        "duration_s": ctx.pick(40.0, 2.0),
        "warmup_s": ctx.pick(1.0, 0.3),
        "rounds": ctx.pick(3, 1),
        "request": "streamed chat: a ~1,400-token system prompt (its first line per customer), "
        "the history so far, a new question; TTFT = first non-empty content chunk",
    }
    work = ctx.scratch("multi-turn")
    nodes = await start_nodes([1.0] * 4, time_scale, extra_args=("--models", "llama3.2:1b"))
    runs: list[tuple[str, str]] = [(AFFINITY, DEFAULT_STRATEGY), (NO_AFFINITY, "least_inflight")]
    if ctx.litellm:
        runs.append(("litellm/simple-shuffle", "simple-shuffle"))
    systems: dict[str, dict[str, Any]] = {}
    by_turn: dict[str, dict[int, float]] = {}
    gateways: dict[str, Gateway] = {}
    try:
        await warm(nodes)
        for name, strategy in runs:
            if name.startswith("corral"):
                gateways[name] = await start_corral(nodes, strategy)
            else:
                gateways[name] = await start_litellm(nodes, strategy, work)
        endpoints = {name: target_of(g, stream=True, timeout_s=60) for name, g in gateways.items()}
        rounds = p["rounds"]

        def spec_for(name: str, target: dict[str, Any], round_no: int) -> dict[str, Any]:
            tag = f"{name.split()[0]}-{round_no}"
            sessions = {"kind": "sessions", "turns": p["turns"], "tag": tag}
            return poisson_spec(
                target, p["session_rate_per_s"], p["duration_s"] / rounds, warmup_s=p["warmup_s"],
                requests=sessions, seed=round_no + 1,
            )  # fmt: skip

        merged = await run_rounds(endpoints, spec_for, rounds, work)
    finally:
        for gateway in gateways.values():
            await gateway.close()
        for node in nodes:
            await node.kill()
    for name, result in merged.items():
        records = stats.measured(result)
        figures = stats.summarise(result, p["duration_s"])
        figures["sessions"] = len({r["session"] for r in records})
        turns: dict[int, list[float]] = defaultdict(list)
        for r in records:
            if r["ok"] and r["ttft_ms"] is not None:
                turns[r["turn"]].append(r["ttft_ms"])
        by_turn[name] = {t: sum(v) / len(v) for t, v in sorted(turns.items())}
        later = [v for t, vs in turns.items() if t > 0 for v in vs]
        figures["ttft_mean_later_turns_ms"] = round(sum(later) / len(later), 2) if later else None
        systems[name] = figures
    with_aff = systems[AFFINITY].get("ttft_mean_ms")
    without = systems[NO_AFFINITY].get("ttft_mean_ms")
    targets = [
        report.Target(
            "multi-turn: mean TTFT with affinity / without",
            round(with_aff / without, 3) if with_aff and without else None,
            0.5,
            f"mean TTFT {with_aff} ms with affinity ({DEFAULT_STRATEGY}), "
            f"{without} ms without (least_inflight).",
        )
    ]
    result_doc = report.Result(
        scenario="multi-turn",
        title=TITLE,
        description=(
            f"Four 1x simulated nodes (time scale {time_scale:g}). Chat sessions arrive as a Poisson process "
            f"({p['session_rate_per_s']:g}/s for {p['duration_s']:g} s, {p['rounds']} interleaved rounds "
            f"with every system up); each sends {p['turns']} turns one "
            "after the other, every turn carrying the whole history. A node re-evaluates only the part of a "
            "prompt its slots have not cached, so a session kept on one node pays for its new question only. "
            "With affinity: Corral's default balancer, `ect` (a conversation's first turn goes to the "
            "node with the lowest expected completion time; its follow-ups keep to the node that served "
            "the conversation while that node's expected completion time is within `affinity_slack` "
            "times the best); without: Corral's least_inflight balancer (same router, no affinity). "
            "Endpoints: "
            "Corral `POST /api/chat` (stream), LiteLLM `POST /v1/chat/completions` (stream)."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("ttft_mean_ms", "TTFT mean ms"),
            ("ttft_p90_ms", "TTFT p90 ms"),
            ("ttft_mean_later_turns_ms", "TTFT mean, turns 2+"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("errors", "errors"),
            ("sessions", "sessions"),
        ],
        targets=targets,
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
        extra={
            "ttft_mean_by_turn_ms": {
                n: {str(t): round(v, 2) for t, v in d.items()} for n, d in by_turn.items()
            }
        },
    )

    def plot(fig: Any) -> None:
        ax = fig.subplots()
        for name, turns in by_turn.items():
            ax.plot([t + 1 for t in turns], list(turns.values()), marker="o", label=name)
        ax.set_xlabel("turn")
        ax.set_ylabel("mean TTFT ms")
        ax.legend(fontsize=8)

    return report.write(result_doc, ctx.out_dir, plot)
