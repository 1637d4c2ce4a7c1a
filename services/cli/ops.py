"""`corral prewarm` (progress bars from the run's stream) and `corral cache stats|invalidate`."""

from __future__ import annotations

import argparse
import json

from corral.v1 import cache_service_pb2, cache_service_pb2_grpc, prewarm_service_pb2, prewarm_service_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from services.cli.client import CliError, Peers, UsageError, to_json
from services.cli.render import cache_stats_view

STEPS = {
    "warm": prewarm_service_pb2.PREWARM_STEP_WARM_MODELS,
    "seed": prewarm_service_pb2.PREWARM_STEP_SEED_CACHE,
    "maintenance": prewarm_service_pb2.PREWARM_STEP_MAINTENANCE,
}
_STEP_LABELS = {
    prewarm_service_pb2.PREWARM_STEP_WARM_MODELS: "warm models",
    prewarm_service_pb2.PREWARM_STEP_SEED_CACHE: "seed cache",
    prewarm_service_pb2.PREWARM_STEP_MAINTENANCE: "maintenance",
}


async def prewarm(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Starts a prewarm run and shows its progress, one bar per step."""
    request = prewarm_service_pb2.StartRunRequest(
        steps=[STEPS[s] for s in args.step or []],
        node_ids=args.node or [],
        models=args.model or [],
        join_if_running=args.join,
    )
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    failures: list[str] = []
    run_id = ""
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=args.json,
    )
    tasks: dict[int, TaskID] = {}
    async with peers.channel("prewarm") as channel:
        stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
        with progress:
            async for message in stub.StartRun(request):
                event = message.event
                run_id = event.run_id or run_id
                if args.json:
                    print(json.dumps(to_json(event)), flush=True)
                if event.step:
                    if event.step not in tasks:
                        label = _STEP_LABELS.get(event.step, "step")
                        tasks[event.step] = progress.add_task(label, total=max(event.total, 1))
                    progress.update(
                        tasks[event.step], completed=event.done, total=max(event.total, event.done, 1)
                    )
                if event.outcome == prewarm_service_pb2.STEP_OUTCOME_OK:
                    counts["ok"] += 1
                elif event.outcome == prewarm_service_pb2.STEP_OUTCOME_SKIPPED:
                    counts["skipped"] += 1
                elif event.outcome == prewarm_service_pb2.STEP_OUTCOME_FAILED:
                    counts["failed"] += 1
                    where = " ".join(x for x in (event.node_id, event.model) if x)
                    failures.append(f"{where}: {event.message}" if where else event.message)
                if event.run_finished:
                    break
    if not args.json:
        for line in failures:
            console.print(f"  failed {line}", style="red", highlight=False)
        summary = f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed"
        console.print(f"prewarm run {run_id}: {summary}", highlight=False)
    if counts["failed"]:
        raise CliError(f"prewarm run {run_id} finished with {counts['failed']} failed item(s)")
    return 0


async def cache(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Shows cache statistics or removes entries."""
    async with peers.channel("cache") as channel:
        stub = cache_service_pb2_grpc.CacheServiceStub(channel)
        if args.cache_command == "stats":
            stats = await stub.Stats(
                cache_service_pb2.StatsRequest(tenant=args.tenant or ""), timeout=peers.timeout_s
            )
            if args.json:
                print(json.dumps(to_json(stats)))
            else:
                console.print(cache_stats_view(stats))
            return 0
        if not (args.tenant or args.key or args.all_tenants):
            raise UsageError("cache invalidate: give --tenant, --key or --all-tenants")
        request = cache_service_pb2.InvalidateRequest(
            tenant=args.tenant or "", model=args.model or "", key=args.key or "", all_tenants=args.all_tenants
        )
        reply = await stub.Invalidate(request, timeout=peers.timeout_s)
    if args.json:
        print(json.dumps(to_json(reply)))
    else:
        console.print(
            f"removed {reply.exact_removed} exact and {reply.semantic_removed} semantic entries",
            highlight=False,
        )
    return 0
