"""node-failure: a node SIGKILLed and later restarted during a steady run; errors, ejection, re-admission."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import grpc

from bench.harness import report, stats
from bench.harness.context import Context, poisson_spec
from bench.harness.systems import (
    DEFAULT_STRATEGY,
    Gateway,
    Node,
    node_stats,
    run_load,
    start_corral,
    start_litellm,
    start_nodes,
    target_of,
    warm,
)

TITLE = "Node killed and restarted during a steady run"
SPEEDS = [1.0, 1.0, 1.0, 1.0]
VICTIM = 3  # node-4
NUM_PARALLEL = 2
MEAN_SERVICE_S = 40 / 60 + 30 / 600


async def _health_view(addr: str, node_id: str, until: float, out: list[tuple[float, str]]) -> None:
    """Polls health's ListNodes every 100 ms and records (wall time, state) changes of one node."""
    from corral.v1 import health_service_pb2, health_service_pb2_grpc

    async with grpc.aio.insecure_channel(addr) as channel:
        stub = health_service_pb2_grpc.HealthServiceStub(channel)
        last = ""
        while time.time() < until:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.ListNodes(health_service_pb2.ListNodesRequest(), timeout=1)
                for node in reply.nodes:
                    if node.node_id == node_id:
                        state = health_service_pb2.NodeState.Name(node.state)
                        if state != last:
                            out.append((time.time(), state))
                            last = state
            await asyncio.sleep(0.1)


async def _first_served(node: Node, until: float) -> float | None:
    """Wall time at which the restarted node had served its first chat (admin stats, 50 ms polls)."""
    while time.time() < until:
        with contextlib.suppress(Exception):
            served = (await node_stats(node))["requests_by_route"].get("/api/chat", 0)
            if served > 0:
                return time.time()
        await asyncio.sleep(0.05)
    return None


async def _one_system(ctx: Context, name: str, nodes: list[Node], p: dict[str, Any]) -> dict[str, Any]:
    work = ctx.scratch("node-failure")
    victim = nodes[VICTIM]
    gateway: Gateway
    if name.startswith("corral"):
        gateway = await start_corral(nodes, name.split("/")[1], prewarm=True)
    else:
        gateway = await start_litellm(nodes, name.split("/")[1], work)
    health_states: list[tuple[float, str]] = []
    try:
        spec = poisson_spec(
            target_of(gateway, timeout_s=60), p["rate_rps"], p["duration_s"], warmup_s=p["warmup_s"],
            requests={"kind": "unique", "tag": name},
        )  # fmt: skip
        load = asyncio.create_task(run_load(spec, work, name.replace("/", "_")))
        t0 = time.time() + p["loadgen_start_s"] + p["warmup_s"]
        end = t0 + p["duration_s"] + 5
        watcher = None
        if gateway.health_addr:
            watcher = asyncio.create_task(
                _health_view(gateway.health_addr, victim.node_id, end, health_states)
            )
        await asyncio.sleep(max(0.0, t0 + p["kill_at_s"] - time.time()))
        killed_at = time.time()
        await victim.kill()
        await asyncio.sleep(max(0.0, t0 + p["restart_at_s"] - time.time()))
        await victim.start()
        restarted_at = time.time()
        # NOTE: the restarted node has its model cold, as after a real restart; nobody warms it here.
        served_at = await _first_served(victim, end)
        result = await load
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    finally:
        await gateway.close()
    records = stats.measured(result)
    figures = stats.summarise(result, p["duration_s"])
    outage = [r for r in records if killed_at - 1 <= r["t"] <= restarted_at]
    figures["errors_during_outage"] = sum(not r["ok"] for r in outage)
    outage_lat = [r["latency_ms"] for r in outage if r["ok"]]
    p99 = stats.percentile(outage_lat, 99)
    figures["outage_p99_ms"] = None if p99 is None else round(p99, 2)
    retried = [r["t"] for r in outage if r["attempts"] and int(r["attempts"]) > 1]
    figures["retried_requests"] = len(retried)
    figures["time_to_eject_s"] = None
    figures["health_readmit_s"] = None
    for at, state in health_states:
        if at >= killed_at and state in ("NODE_STATE_UNHEALTHY", "NODE_STATE_EJECTED"):
            figures["time_to_eject_s"] = round(at - killed_at, 2)
            break
    for at, state in health_states:
        if at >= restarted_at and state in ("NODE_STATE_HEALTHY", "NODE_STATE_DEGRADED"):
            figures["health_readmit_s"] = round(at - restarted_at, 2)
            break
    figures["time_to_readmit_s"] = None if served_at is None else round(served_at - restarted_at, 2)
    figures["_timeline"] = {
        "killed_at": killed_at,
        "restarted_at": restarted_at,
        "points": [(r["t"], r["latency_ms"], r["ok"]) for r in records],
    }
    return figures


async def run(ctx: Context) -> dict[str, Any]:
    """Runs Corral's default and LiteLLM's default strategy through the same kill/restart timeline."""
    time_scale = ctx.pick(1.0, 0.05)
    capacity = sum(NUM_PARALLEL * s / (MEAN_SERVICE_S * time_scale) for s in SPEEDS)
    p: dict[str, Any] = {
        "time_scale": time_scale,
        "capacity_rps": round(capacity, 2),
        "rate_rps": round(ctx.pick(0.5 * capacity, 10.0), 2),
        "duration_s": ctx.pick(40.0, 4.0),
        "warmup_s": ctx.pick(3.0, 0.5),
        "kill_at_s": ctx.pick(8.0, 1.0),
        "restart_at_s": ctx.pick(22.0, 2.5),
        "loadgen_start_s": 0.8,
        "victim": f"node-{VICTIM + 1}",
        "num_parallel": NUM_PARALLEL,
        "request": "non-streamed (unary) chat, one unique user question",
    }
    extra = ("--models", "llama3.2:1b", "--num-parallel", str(NUM_PARALLEL))
    nodes = await start_nodes(SPEEDS, time_scale, extra_args=extra)
    runs = [f"corral/{DEFAULT_STRATEGY}"] + (["litellm/simple-shuffle"] if ctx.litellm else [])
    systems: dict[str, dict[str, Any]] = {}
    try:
        for name in runs:
            await warm(nodes)
            systems[name] = await _one_system(ctx, name, nodes, p)
    finally:
        for node in nodes:
            await node.kill()
    timelines = {name: f.pop("_timeline") for name, f in systems.items()}
    corral = systems[f"corral/{DEFAULT_STRATEGY}"]
    targets = [
        report.Target(
            "node-failure: failed unary requests (Corral)",
            float(corral["errors"]),
            0,
            f"{corral['errors']} of {corral['requests']} unary requests failed at the client; "
            f"health marked the node down after {corral['time_to_eject_s']} s, the restarted node "
            f"served again {corral['time_to_readmit_s']} s after it was back.",
        )
    ]
    result = report.Result(
        scenario="node-failure",
        title=TITLE,
        description=(
            f"Four 1x simulated nodes (time scale {time_scale:g}); open-loop Poisson arrivals at "
            f"{p['rate_rps']:g} requests/s (50 % of capacity) for {p['duration_s']:g} s. node-{VICTIM + 1}'s "
            f"process is SIGKILLed {p['kill_at_s']:g} s into the run (in-flight requests cut, port refusing) "
            f"and started again on the same port at {p['restart_at_s']:g} s, with its model cold. "
            "`time to eject`: health's view of the node (Corral only: LiteLLM exposes no per-deployment "
            "state); `time to re-admit`: from the restart to the first request the node served, seen on "
            "the node itself. Corral runs with its prewarm service, which warms a node's model when health "
            "sees it rejoin (Corral's balancer avoids a node whose model is cold while others are warm)."
        ),
        parameters=p,
        systems=systems,
        columns=[
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("outage_p99_ms", "p99 ms while down"),
            ("errors", "errors"),
            ("errors_during_outage", "errors while down"),
            ("time_to_eject_s", "eject s"),
            ("time_to_readmit_s", "re-admit s"),
        ],
        targets=targets,
        smoke=ctx.smoke,
        with_litellm=ctx.litellm,
    )

    def plot(fig: Any) -> None:
        axes = fig.subplots(len(timelines), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (name, tl) in zip(axes, timelines.items(), strict=True):
            start = tl["killed_at"] - p["kill_at_s"]
            ok = [(t - start, lat) for t, lat, good in tl["points"] if good]
            bad = [(t - start, lat) for t, lat, good in tl["points"] if not good]
            if ok:
                ax.scatter(*zip(*ok, strict=True), s=4, label="ok")
            if bad:
                ax.scatter(*zip(*bad, strict=True), s=12, color="red", marker="x", label="error")
            ax.axvline(tl["killed_at"] - start, color="black", linestyle="--")
            ax.axvline(tl["restarted_at"] - start, color="green", linestyle="--")
            ax.set_yscale("log")
            ax.set_ylabel(f"{name}\nlatency ms")
            ax.legend(fontsize=7, loc="upper right")
        axes[-1].set_xlabel("seconds into the run (dashed: kill, restart)")

    return report.write(result, ctx.out_dir, plot)
