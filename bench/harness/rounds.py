"""Interleaved measurement: every system runs a short segment in turn, for several rounds.

On a shared 2-core machine the background load changes within minutes; measuring system A for a
minute and then system B compares two different machines. Interleaving segments (A B C, A B C, ...)
with all systems up at once spreads that noise over every system alike, so the ratios hold.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.harness.context import Context
from bench.harness.systems import (
    LITELLM_STRATEGIES,
    MODEL,
    Gateway,
    Node,
    run_load,
    settle,
    start_corral,
    start_litellm,
    target_of,
    warm,
)

SpecFor = Callable[[str, dict[str, Any], int], dict[str, Any]]
Hook = Callable[[str], Awaitable[None]]


async def run_rounds(
    targets: dict[str, dict[str, Any]],
    spec_for: SpecFor,
    rounds: int,
    work: Path,
    label: str = "load",
    before_segment: Hook | None = None,
    after_segment: Hook | None = None,
) -> dict[str, dict[str, Any]]:
    """Runs `rounds` rounds of one load segment per system; returns each system's merged records.

    Each system's result also lists its `segments`: per round, the wall time of the trace's zero
    (`t0`) and the events the load generator made (bench/harness/loadgen.py).

    Args:
        targets: System name to its load-generator target.
        spec_for: Builds the load spec of (system, target, round); vary seeds and tags per round.
        rounds: Number of rounds.
        work: Scratch folder for specs and raw records.
        label: Prefix of the raw files (when a scenario runs several kinds of rounds).
        before_segment: Awaited with the system's name before each of its segments, e.g. to put
            the nodes back in the state a segment starts from (which models are loaded), so that no
            system inherits another's.
        after_segment: Awaited with the system's name after each of its segments (e.g. to read
            the nodes' counters).
    """
    merged: dict[str, dict[str, Any]] = {
        name: {"records": [], "dropped": 0, "segments": []} for name in targets
    }
    for round_no in range(rounds):
        # NOTE: the order rotates so that no system always follows the same one.
        names = list(targets)
        names = names[round_no % len(names) :] + names[: round_no % len(names)]
        for name in names:
            slug = f"{label}-{name.replace('/', '_').replace(' ', '_')}-r{round_no}"
            if before_segment is not None:
                await before_segment(name)
            result = await run_load(spec_for(name, targets[name], round_no), work, slug)
            if after_segment is not None:
                await after_segment(name)
            for record in result["records"]:
                record["round"] = round_no
            merged[name]["records"] += result["records"]
            merged[name]["dropped"] += result["dropped"]
            merged[name]["segments"].append(
                {"round": round_no, "t0": result.get("t0"), "events": result.get("events", [])}
            )
    return merged


async def every_strategy(
    ctx: Context,
    nodes: list[Node],
    spec_for: SpecFor,
    rounds: int,
    work: Path,
    timeout_s: float,
    models: tuple[str, ...] = (MODEL,),
    before_segment: Hook | None = None,
    after_segment: Hook | None = None,
) -> dict[str, dict[str, Any]]:
    """Every Corral strategy and, when installed, every LiteLLM strategy over the same nodes, in rounds.

    The nodes' first model is loaded first; every segment starts once the nodes are idle (`settle`),
    and `before_segment` and `after_segment`, when given, run around it (see `run_rounds`). LiteLLM
    is configured with every one of `models`. A smoke run takes two Corral strategies and one
    LiteLLM strategy (it checks the harness). The gateways are closed and the nodes killed at the
    end, also on failure. Returns `run_rounds`'s merged records per system.
    """
    # NOTE: a smoke run checks the harness: two strategies per system are enough for that.
    corral_strategies = ctx.pick(("ect", "p2c_ect", "round_robin", "least_inflight"), ("ect", "p2c_ect"))
    litellm_strategies = ctx.pick(LITELLM_STRATEGIES, LITELLM_STRATEGIES[:1]) if ctx.litellm else ()
    gateways: list[Gateway] = []
    try:
        await warm(nodes, models[:1])
        for strategy in corral_strategies:
            gateways.append(await start_corral(nodes, strategy))
        for strategy in litellm_strategies:
            gateways.append(await start_litellm(nodes, strategy, work, models))
        endpoints = {g.name: target_of(g, timeout_s=timeout_s) for g in gateways}

        async def before(name: str) -> None:
            # NOTE: every segment starts on idle nodes, whatever the previous system left running.
            waited_s = await settle(nodes)
            if waited_s > 1.0:
                print(f"   {name}: waited {waited_s:.1f} s for the nodes to finish the previous segment")
            if before_segment is not None:
                await before_segment(name)

        return await run_rounds(
            endpoints, spec_for, rounds, work, before_segment=before, after_segment=after_segment
        )
    finally:
        for gateway in gateways:
            await gateway.close()
        for node in nodes:
            await node.kill()
