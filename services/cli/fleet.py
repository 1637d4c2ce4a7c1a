"""`corral status` (with `--watch` on the score stream) and `corral nodes add|drain|undrain|remove`."""

from __future__ import annotations

import argparse
import json

import grpc
from corral.v1 import (
    health_service_pb2,
    health_service_pb2_grpc,
    prewarm_service_pb2,
    prewarm_service_pb2_grpc,
    router_service_pb2,
    router_service_pb2_grpc,
)
from rich.console import Console
from rich.live import Live

from services.cli.client import Peers, UsageError, to_json
from services.cli.render import pins_line, required_models_view, status_table


async def prewarm_status(peers: Peers) -> prewarm_service_pb2.GetStatusResponse | None:
    """Prewarm's status (its leader, where the required models are); None when prewarm is away.

    NOTE: a side view: `status` and `models` must work without prewarm, so its absence is silent
    and its wait short.
    """
    try:
        async with peers.channel("prewarm") as channel:
            stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
            reply: prewarm_service_pb2.GetStatusResponse = await stub.GetStatus(
                prewarm_service_pb2.GetStatusRequest(limit=1), timeout=min(peers.timeout_s, 2.0)
            )
    except grpc.aio.AioRpcError:
        return None
    return reply


async def required_models(peers: Peers) -> list[prewarm_service_pb2.RequiredModelStatus]:
    """Where the required models are, from prewarm; empty when none are configured or prewarm is away."""
    reply = await prewarm_status(peers)
    return [] if reply is None else list(reply.required_models)


def leader_line(reply: prewarm_service_pb2.GetStatusResponse) -> str:
    """Which prewarm replica leads, as the replica that answered sees it."""
    if not reply.leader:
        return "prewarm: no leader elected yet (the replica that answered stands by)"
    role = "answered" if reply.leads else "answered: a standby"
    return f"prewarm leader: {reply.leader} ({role})"


async def router_pins(peers: Peers) -> dict[str, dict[str, str]]:
    """The router's model pins (model to the labels its nodes must carry); empty when the router is
    away or nothing is pinned.

    NOTE: a side view, as prewarm's: the pins are the router's configuration, not health's.
    """
    try:
        async with peers.channel("router") as channel:
            stub = router_service_pb2_grpc.RouterServiceStub(channel)
            reply: router_service_pb2.ListModelsResponse = await stub.ListModels(
                router_service_pb2.ListModelsRequest(), timeout=min(peers.timeout_s, 2.0)
            )
    except grpc.aio.AioRpcError:
        return {}
    return {m.name: dict(m.pin) for m in reply.models if m.pin}


async def status(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Prints the node table (or streams it live with --watch)."""
    async with peers.channel("health") as channel:
        stub = health_service_pb2_grpc.HealthServiceStub(channel)
        if not args.watch:
            reply = await stub.ListNodes(health_service_pb2.ListNodesRequest(), timeout=peers.timeout_s)
            prewarm = await prewarm_status(peers)
            required = [] if prewarm is None else list(prewarm.required_models)
            pins = await router_pins(peers)
            if args.json:
                out: dict[str, object] = {
                    "version": reply.version,
                    "nodes": [to_json(n) for n in reply.nodes],
                }
                if required:
                    out["required_models"] = [to_json(r) for r in required]
                if prewarm is not None:
                    out["prewarm"] = {"leader": prewarm.leader, "answered_by_leader": prewarm.leads}
                if pins:
                    out["pins"] = pins
                print(json.dumps(out))
            else:
                console.print(status_table(reply.nodes, reply.version, console.width))
                if required:
                    console.print(required_models_view(required))
                if prewarm is not None:
                    console.print(leader_line(prewarm))
                if pins:
                    console.print(pins_line(pins))
            return 0
        return await _watch(stub, args, console)


async def _watch(
    stub: health_service_pb2_grpc.HealthServiceStub, args: argparse.Namespace, console: Console
) -> int:
    nodes: dict[str, health_service_pb2.NodeScore] = {}
    stream = stub.WatchScores(health_service_pb2.WatchScoresRequest(subscriber="corral-cli"))
    live: Live | None = None
    try:
        async for update in stream:
            if update.kind == health_service_pb2.SCORE_UPDATE_KIND_SNAPSHOT:
                nodes = {n.node_id: n for n in update.nodes}
            elif update.kind == health_service_pb2.SCORE_UPDATE_KIND_UPDATE:
                nodes.update({n.node_id: n for n in update.nodes})
                for node_id in update.removed_node_ids:
                    nodes.pop(node_id, None)
            if args.json:
                if update.kind != health_service_pb2.SCORE_UPDATE_KIND_HEARTBEAT:
                    print(json.dumps(to_json(update)), flush=True)
            else:
                view = status_table(nodes.values(), update.version, console.width)
                if live is None:
                    live = Live(view, console=console, refresh_per_second=4, transient=False)
                    live.start()
                else:
                    live.update(view)
            # NOTE: --count (hidden, for tests and scripts) stops after that many stream messages.
            if args.count:
                args.count -= 1
                if args.count == 0:
                    break
    finally:
        stream.cancel()
        if live is not None:
            live.stop()
    return 0


def _node_line(verb: str, node: health_service_pb2.NodeScore) -> str:
    return f"{node.node_id} {verb} ({node.address})"


async def nodes(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Adds, drains, returns to service or removes a node."""
    async with peers.channel("health") as channel:
        stub = health_service_pb2_grpc.HealthServiceStub(channel)
        timeout = peers.timeout_s
        if args.nodes_command == "add":
            labels = {}
            for label in args.label or []:
                key, sep, value = label.partition("=")
                if not sep or not key:
                    raise UsageError(f"--label {label!r}: expected KEY=VALUE")
                labels[key] = value
            request = health_service_pb2.AddNodeRequest(
                node_id=args.node_id, address=args.address, labels=labels
            )
            node = (await stub.AddNode(request, timeout=timeout)).node
            verb = "added"
        elif args.nodes_command == "drain":
            node = (
                await stub.DrainNode(
                    health_service_pb2.DrainNodeRequest(node_id=args.node_id), timeout=timeout
                )
            ).node
            verb = "draining: no new requests"
        elif args.nodes_command == "undrain":
            request_u = health_service_pb2.UndrainNodeRequest(node_id=args.node_id)
            node = (await stub.UndrainNode(request_u, timeout=timeout)).node
            verb = "back in service"
        else:
            request_r = health_service_pb2.RemoveNodeRequest(node_id=args.node_id)
            node = (await stub.RemoveNode(request_r, timeout=timeout)).node
            verb = "removed"
    if args.json:
        print(json.dumps(to_json(node)))
    else:
        console.print(_node_line(verb, node), highlight=False)
    return 0
