"""slowdown: one of four equal nodes runs 4x slower for 30 s mid-run, then recovers; how traffic moves."""

from __future__ import annotations

from typing import Any

from bench import oracle
from bench.harness import report, routing, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.rounds import every_strategy
from bench.harness.systems import DEFAULT_STRATEGY, Node, start_nodes

TITLE = "A node 4x slower for 30 s, then recovered"
SPEEDS = [1.0, 1.0, 1.0, 1.0]
VICTIM = 1  # node-2 (not node-1: a tie between equal nodes goes to the first)
FACTOR = 4.0
NUM_PARALLEL = 2
MEAN_SERVICE_S = 40 / 60 + 30 / 600
# NOTE: the share of traffic to the slowed node is counted in windows this long (about 60 requests
# each at the full run's rate), one every STEP_S.
WINDOW_S = 2.0
STEP_S = 0.5
BASELINE_S = 10.0


def capacity_rps(time_scale: float) -> float:
    """Requests/s the fleet completes when every slot is busy (before the slowdown)."""
    return sum(NUM_PARALLEL * speed / (MEAN_SERVICE_S * time_scale) for speed in SPEEDS)


def fault_events(victim: Node, since_s: float, until_s: float) -> list[dict[str, Any]]:
    """The load generator's events that slow the victim down and bring it back (trace seconds)."""
    url = f"{victim.admin_url}/_sim/faults"
    return [
        {"at_s": since_s, "method": "POST", "url": url, "json": {"slow": FACTOR}},
        {"at_s": until_s, "method": "DELETE", "url": url},
    ]


def adaptation(
    sends: list[tuple[float, bool]], end_s: float, since_s: float, until_s: float
) -> tuple[dict[str, Any], list[tuple[float, float | None]]]:
    """How the share of traffic to the victim moved: its level before, during and after the slowdown,
    the time it took to fall to half the level before, and the time to get back to half of it.

    Args:
        sends: (seconds into the trace, sent to the victim) per request, every round pooled.
        end_s: The trace's length.
        since_s: When the slowdown began (trace seconds).
        until_s: When it ended.
    """
    timeline = stats.share_timeline(sends, end_s, WINDOW_S, STEP_S)

    def mean_share(lo: float, hi: float) -> float | None:
        hits = [hit for t, hit in sends if lo <= t < hi]
        return sum(hits) / len(hits) if hits else None

    before = mean_share(since_s - BASELINE_S, since_s)
    figures: dict[str, Any] = {
        "share_before": stats.rounded(before, 3),
        "share_during": stats.rounded(mean_share(since_s + 5, until_s), 3),
        "share_after": stats.rounded(mean_share(until_s + 5, end_s), 3),
        "time_to_halve_s": None,
        "time_to_return_s": None,
    }
    if before:
        figures["time_to_halve_s"] = stats.time_to_share(timeline, since_s, True, before / 2)
        figures["time_to_return_s"] = stats.time_to_share(timeline, until_s, False, before / 2)
    return figures, timeline


def _phase_p99s(
    points: list[tuple[float, float]], since_s: float, until_s: float, end_s: float
) -> dict[str, Any]:
    """p99 latency (ms) of the requests sent before, during and after the slowdown (trace seconds)."""
    found = {}
    for phase, lo, hi in (("before", 0.0, since_s), ("during", since_s, until_s), ("after", until_s, end_s)):
        found[f"p99_{phase}_ms"] = stats.rounded(
            stats.percentile([ms for t, ms in points if lo <= t < hi], 99)
        )
    return found


def _node(record: dict[str, Any], names: dict[str, str]) -> str:
    """The id of the node that served a record (LiteLLM names it by URL)."""
    return names.get(record["node"].rstrip("/"), record["node"])


async def run(ctx: Context) -> dict[str, Any]:
    """Runs every Corral and LiteLLM strategy through the same slowdown, in interleaved rounds."""
    time_scale = ctx.pick(0.25, 0.05)
    load = 0.7
    warmup_s = ctx.pick(2.0, 0.5)
    segment_s = ctx.pick(65.0, 4.0)
    since_s = warmup_s + ctx.pick(15.0, 1.0)
    until_s = since_s + ctx.pick(30.0, 1.5)
    p: dict[str, Any] = {
        "speeds": SPEEDS,
        "slowed_node": f"node-{VICTIM + 1}",
        "slow_factor": FACTOR,
        "slow_from_s": since_s,
        "slow_until_s": until_s,
        "time_scale": time_scale,
        "num_parallel": NUM_PARALLEL,
        "capacity_rps": round(capacity_rps(time_scale), 2),
        "load": load,
        "rate_rps": round(ctx.pick(load * capacity_rps(time_scale), 10.0), 2),
        "segment_s": segment_s,
        "warmup_s": warmup_s,
        "rounds": ctx.pick(2, 1),
        "client_timeout_s": 60,
        "share_window_s": WINDOW_S,
        "request": "non-streamed chat, one unique user question, natural answer length (20-60 tokens)",
    }
    rounds = p["rounds"]
    work = ctx.scratch("slowdown")
    nodes = await start_nodes(
        SPEEDS, time_scale, extra_args=("--num-parallel", str(NUM_PARALLEL), "--models", "llama3.2:1b")
    )
    names = {n.url: n.node_id for n in nodes}
    victim = nodes[VICTIM]
    events = fault_events(victim, since_s, until_s)

    def spec_for(name: str, target: dict[str, Any], round_no: int) -> dict[str, Any]:
        return poisson_spec(
            target, p["rate_rps"], segment_s, warmup_s=warmup_s, seed=round_no + 1,
            requests={"kind": "unique", "tag": f"{name}-{round_no}"}, events=events,
        )  # fmt: skip

    merged = await every_strategy(ctx, nodes, spec_for, rounds, work, p["client_timeout_s"])
    end_s = warmup_s + segment_s
    systems: dict[str, dict[str, Any]] = {}
    timelines: dict[str, list[tuple[float, float | None]]] = {}
    lateness: list[float] = []
    for name, result in merged.items():
        zero = {seg["round"]: seg["t0"] for seg in result["segments"]}
        for seg in result["segments"]:
            lateness += [e["t"] - seg["t0"] - e["at_s"] for e in seg["events"]]
            failed = [e for e in seg["events"] if e["status"] != 200]
            if failed:
                raise RuntimeError(f"{name}: the fault call failed: {failed[0]}")
        records = stats.measured(result)
        figures = routing.figures(result, segment_s * rounds, names)
        # NOTE: every request, warm-up included, counts for the share (the baseline window starts
        # in it at smoke sizes); a failed request counts as sent elsewhere.
        sends = [
            (r["t"] - zero[r["round"]], r["ok"] and _node(r, names) == victim.node_id)
            for r in result["records"]
        ]
        moved, timelines[name] = adaptation(sends, end_s, since_s, until_s)
        figures.update(moved)
        points = [(r["t"] - zero[r["round"]], r["latency_ms"]) for r in records if r["ok"]]
        figures.update(_phase_p99s(points, since_s, until_s, end_s))
        systems[name] = figures
    # NOTE: the oracle replays the same arrivals (seed per round) with the same slowdown in each.
    replays: dict[str, list[tuple[list[oracle.Job], oracle.Replay]]] = {}
    slowdown = [(VICTIM, since_s, until_s, FACTOR)]
    systems.update(
        oracle.scenario_rows(
            SPEEDS, NUM_PARALLEL, time_scale, p["rate_rps"], segment_s * rounds, warmup_s, rounds,
            policies=("oracle", "ect_learned"), slowdowns=slowdown, replays=replays,
        )
    )  # fmt: skip
    systems["oracle (ect_learned)"] = systems.pop("ect_learned")
    for policy, label in (("oracle", "oracle"), ("ect_learned", "oracle (ect_learned)")):
        sends, points = [], []
        for jobs, one in replays[policy]:
            sends += [(job.at_s, node == VICTIM) for job, node in zip(jobs, one.served_by, strict=True)]
            measured = [job for job in jobs if job.measured]
            points += [(j.at_s, s * 1000) for j, s in zip(measured, one.latencies_s, strict=True)]
        moved, timelines[label] = adaptation(sends, end_s, since_s, until_s)
        systems[label].update(moved)
        systems[label].update(_phase_p99s(points, since_s, until_s, end_s))
    p["fault_call_lateness_ms"] = round(1000 * max(lateness), 1) if lateness else None
    default = systems[f"corral/{DEFAULT_STRATEGY}"]
    targets = routing.targets("slowdown", systems)
    halve = default["time_to_halve_s"]
    targets.append(
        report.Target(
            "slowdown: seconds until the default sends half its earlier share to the slowed node",
            # NOTE: a share that never halved counts as the whole slowdown (missed, not n/a).
            until_s - since_s if halve is None else halve,
            5.0,
            ("never halved while the node was slow; " if halve is None else "")
            + f"share before {default['share_before']}, during {default['share_during']} (from 5 s in), "
            f"after {default['share_after']}; back to half the earlier share {default['time_to_return_s']} s "
            "after the node recovered.",
        )
    )
    result_doc = report.Result(
        scenario="slowdown",
        title=TITLE,
        description=(
            f"Four 1x simulated nodes (time scale {time_scale:g}, {NUM_PARALLEL} slots each). Open-loop "
            f"Poisson arrivals at {p['rate_rps']:g} requests/s ({load:.0%} of the fleet's "
            f"{p['capacity_rps']:g} requests/s; {load / (1 - (1 - 1 / FACTOR) / len(SPEEDS)):.0%} of what is "
            f"left during the slowdown) for {segment_s:g} s per segment after {warmup_s:g} s of warm-up, "
            f"{rounds} interleaved rounds (every system up at once, a segment each in turn). In every "
            f"segment node-{VICTIM + 1} runs {FACTOR:g}x slower from {since_s:g} s to {until_s:g} s of the "
            "trace (the simulator's `slow` fault, set and cleared by the load generator on the trace's "
            "clock). `share`: the fraction of requests sent to the slowed node (before: the "
            f"{BASELINE_S:g} s before the slowdown; during: from 5 s in to its end; after: from 5 s after "
            f"it). `halve s`: from the slowdown's start to the end of the first {WINDOW_S:g}-s window in "
            "which that share is at most half of `before`; `return s`: from its end to the first window "
            "with at least half of `before` again. p99 per phase by send time. Errors are what the client "
            "saw (after each system's own retries)."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("p99_by_round", "p99 per round ms"),
            ("p99_during_ms", "p99 while slow ms"),
            ("p99_after_ms", "p99 after ms"),
            ("share_before", "share before"),
            ("share_during", "share while slow"),
            ("time_to_halve_s", "halve s"),
            ("time_to_return_s", "return s"),
            ("requests", "requests"),
            ("errors", "errors"),
        ],
        targets=targets,
        notes=[
            "oracle: bench/oracle.py replays each round's arrival trace offline through the simulator's "
            "cost model with the same slowdown, knowing every node's speed at every moment, the remaining "
            "work on every node and each request's size. `oracle (ect_learned)`: the router's own `ect` "
            "balancer in the same model, learning from outcomes only: what the default could reach "
            "without the network and the machine's noise.",
            f"The fault calls went out at most {p['fault_call_lateness_ms']} ms after their trace times.",
        ],
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        ax = fig.subplots()
        ax.axvspan(since_s, until_s, color="grey", alpha=0.15, label=f"node-{VICTIM + 1} {FACTOR:g}x slower")
        for name, points in timelines.items():
            xs = [t for t, share in points if share is not None]
            ys = [share for _, share in points if share is not None]
            style = ":" if name.startswith("oracle") else "-" if name.startswith("corral") else "--"
            width = 2 if name == f"corral/{DEFAULT_STRATEGY}" else 1
            ax.plot(xs, ys, label=name, linestyle=style, linewidth=width)
        ax.set_xlabel(f"seconds into the trace (share of the last {WINDOW_S:g} s, every {STEP_S:g} s)")
        ax.set_ylabel(f"share of requests sent to node-{VICTIM + 1}")
        ax.set_ylim(0, 0.6)
        ax.legend(fontsize=7, loc="upper right")

    return report.write(result_doc, ctx.out_dir, plot)
