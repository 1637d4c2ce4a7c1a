"""The health service as its own process: nodes from the environment, streams end on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import grpc
from corral.v1 import common_pb2, health_service_pb2_grpc
from corral.v1 import health_service_pb2 as pb

from sim.config import NodeConfig
from sim.node import SimNode
from tests.helpers.procs import ServiceProcess, free_port


async def test_process_probes_configured_nodes_and_ends_watches_on_sigterm() -> None:
    node = SimNode(NodeConfig(name="node-1", time_scale=0.01), admin_port=None)
    await node.start()
    port = free_port()
    env = {
        "CORRAL_HEALTH__PORT": str(port),
        "CORRAL_HEALTH__PROBE_INTERVAL_S": "0.2",
        "CORRAL_HEALTH__PROBE_TIMEOUT_S": "0.1",
        "CORRAL_HEALTH__GRACE_S": "20",
        "CORRAL_HEALTH__NODES": json.dumps(
            [{"id": "node-1", "address": node.url}, {"id": "dead", "address": "http://127.0.0.1:9"}]
        ),
    }
    proc = ServiceProcess("services.health", env=env)
    await proc.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_service_pb2_grpc.HealthServiceStub(channel)
            stream = stub.WatchScores(pb.WatchScoresRequest(subscriber="proc-test"))
            nodes: dict[str, pb.NodeScore] = {}

            async def until(reached: Callable[[dict[str, pb.NodeScore]], bool]) -> None:
                """Reads the score stream until the nodes seen so far satisfy `reached`."""
                while True:
                    message = await stream.read()
                    assert isinstance(message, pb.WatchScoresResponse)
                    nodes.update((n.node_id, n) for n in message.nodes)
                    if reached(nodes):
                        return

            def probed(seen: dict[str, pb.NodeScore]) -> bool:
                states = {node_id: n.state for node_id, n in seen.items()}
                return states == {"node-1": pb.NODE_STATE_HEALTHY, "dead": pb.NODE_STATE_UNHEALTHY}

            await asyncio.wait_for(until(probed), 10)
            # A router's outcome stream stays open for the router's lifetime.
            reports = stub.ReportOutcomes()
            ok = common_pb2.ERROR_KIND_NONE
            outcome = pb.Outcome(node_id="node-1", model="m", error_kind=ok, inflight=7)
            await reports.write(pb.ReportOutcomesRequest(reporter="proc-test", outcomes=[outcome]))
            # NOTE: a call still queued in the server when SIGTERM arrives is cancelled, not ended
            # with UNAVAILABLE: the report must have reached the service first.
            await asyncio.wait_for(until(lambda seen: seen["node-1"].inflight == 7), 10)
            # NOTE: without ending watch and report streams at shutdown, the drain would wait grace_s.
            started = time.monotonic()
            proc.signal(15)
            try:
                while True:
                    await asyncio.wait_for(stream.read(), 10)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            try:
                await asyncio.wait_for(reports, 10)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            else:
                raise AssertionError("the report stream was not ended by the shutdown")
            assert await proc.wait(15) == 0
            assert time.monotonic() - started < 10
    finally:
        await proc.kill()
        await node.stop()


async def test_bad_node_config_exits_with_one_clear_line() -> None:
    env = {"CORRAL_HEALTH__NODES": json.dumps([{"id": "bad id", "address": "http://127.0.0.1:1"}])}
    proc = ServiceProcess("services.health", env=env)
    try:
        await proc.start(timeout_s=15)
    except RuntimeError as exc:
        assert "node id" in str(exc)
    else:  # pragma: no cover - it must not start
        raise AssertionError("the service started with a bad node id")
    assert proc.proc is not None and proc.proc.returncode == 2
