"""Two health replicas on one PostgreSQL fleet registry: changes through either reach both, and so do
the outcomes their routers report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import grpc
import psycopg
import pytest
from corral.v1 import common_pb2, health_service_pb2_grpc
from corral.v1 import health_service_pb2 as pb

from services.health import shared_outcomes
from services.health.stats import Outcome, OutcomeKind
from tests.helpers.polling import wait_for
from tests.helpers.procs import ServiceProcess, free_port


def _replica(dsn: str, port: int, nodes: list[dict[str, str]]) -> ServiceProcess:
    return ServiceProcess(
        "services.health",
        env={
            "CORRAL_HEALTH__PORT": str(port),
            "CORRAL_HEALTH__PROBE_INTERVAL_S": "0.5",
            "CORRAL_HEALTH__PROBE_TIMEOUT_S": "0.1",
            "CORRAL_HEALTH__SHARED_REGISTRY": "true",
            "CORRAL_HEALTH__NODES": json.dumps(nodes),
            "CORRAL_POSTGRES__DSN": dsn,
        },
    )


async def _until(
    stub: health_service_pb2_grpc.HealthServiceStub,
    reached: Callable[[dict[str, pb.NodeScore]], bool],
    timeout_s: float,
) -> None:
    """Reads a WatchScores stream until the nodes it describes satisfy `reached`."""
    stream = stub.WatchScores(pb.WatchScoresRequest(subscriber="registry-test"))
    nodes: dict[str, pb.NodeScore] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await stream.read()
                assert isinstance(message, pb.WatchScoresResponse)
                if message.kind == pb.SCORE_UPDATE_KIND_SNAPSHOT:
                    nodes.clear()
                nodes.update((n.node_id, n) for n in message.nodes)
                for removed in message.removed_node_ids:
                    nodes.pop(removed, None)
                if reached(nodes):
                    return
    finally:
        stream.cancel()


async def test_changes_through_one_replica_reach_the_other_and_survive_restarts(fresh_database: str) -> None:
    seed = [
        {"id": "node-1", "address": "http://127.0.0.1:9"},
        {"id": "node-2", "address": "http://127.0.0.1:10"},
    ]
    port_a, port_b = free_port(), free_port()
    a = await _replica(fresh_database, port_a, seed).start()
    # NOTE: B's configured list differs: it only seeds an empty registry, so B follows A's seed.
    b = await _replica(fresh_database, port_b, [{"id": "other", "address": "http://127.0.0.1:11"}]).start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port_a}") as chan_a,
            grpc.aio.insecure_channel(f"127.0.0.1:{port_b}") as chan_b,
        ):
            stub_a = health_service_pb2_grpc.HealthServiceStub(chan_a)
            stub_b = health_service_pb2_grpc.HealthServiceStub(chan_b)
            listed = await stub_b.ListNodes(pb.ListNodesRequest())
            assert sorted(n.node_id for n in listed.nodes) == ["node-1", "node-2"]

            await stub_a.DrainNode(pb.DrainNodeRequest(node_id="node-2"))
            await _until(stub_b, lambda seen: "node-2" in seen and seen["node-2"].draining, 2.0)

            await stub_b.AddNode(pb.AddNodeRequest(node_id="node-3", address="http://127.0.0.1:12"))
            await _until(stub_a, lambda seen: "node-3" in seen, 2.0)

            await stub_a.RemoveNode(pb.RemoveNodeRequest(node_id="node-1"))
            await _until(stub_b, lambda seen: "node-1" not in seen and "node-3" in seen, 2.0)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub_b.AddNode(pb.AddNodeRequest(node_id="dup", address="http://127.0.0.1:12"))
            assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS

        # A restarted replica keeps the drain, the addition and the removal (the seed is not re-applied).
        await a.terminate()
        a = await _replica(fresh_database, port_a, seed).start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port_a}") as chan_a:
            stub_a = health_service_pb2_grpc.HealthServiceStub(chan_a)
            listed = await stub_a.ListNodes(pb.ListNodesRequest())
            by_id = {n.node_id: n for n in listed.nodes}
            assert sorted(by_id) == ["node-2", "node-3"]
            assert by_id["node-2"].draining and not by_id["node-3"].draining
    finally:
        await a.kill()
        await b.kill()


async def test_a_replica_without_postgres_serves_its_seed_and_refuses_changes(fresh_database: str) -> None:
    dead = f"postgresql://corral@127.0.0.1:{free_port()}/corral"
    port = free_port()
    proc = await _replica(dead, port, [{"id": "node-1", "address": "http://127.0.0.1:9"}]).start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_service_pb2_grpc.HealthServiceStub(channel)
            listed = await stub.ListNodes(pb.ListNodesRequest())
            assert [n.node_id for n in listed.nodes] == ["node-1"]
            # A change cannot be made durable: UNAVAILABLE, and the local registry is unchanged.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.DrainNode(pb.DrainNodeRequest(node_id="node-1"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            listed = await stub.ListNodes(pb.ListNodesRequest())
            assert not listed.nodes[0].draining
    finally:
        await proc.kill()


async def test_a_replica_that_lost_postgres_catches_up_when_it_returns(fresh_database: str) -> None:
    port = free_port()
    proc = await _replica(fresh_database, port, [{"id": "node-1", "address": "http://127.0.0.1:9"}]).start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_service_pb2_grpc.HealthServiceStub(channel)
            async with await psycopg.AsyncConnection.connect(fresh_database, autocommit=True) as conn:
                # Cut the replica's connections, then change the registry while it is not listening.
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                await conn.execute(
                    "INSERT INTO fleet_nodes (node_id, address) VALUES ('late', 'http://127.0.0.1:13')"
                )
                await conn.execute("UPDATE fleet_nodes SET draining = true WHERE node_id = 'node-1'")
            await _until(stub, lambda seen: "late" in seen and seen["node-1"].draining, 5.0)
    finally:
        await proc.kill()


async def _listeners(dsn: str, count: int, timeout_s: float) -> None:
    """Waits until `count` connections listen on the shared outcomes channel (PostgreSQL's own view
    is polled: no event reaches the test)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

        async def listening() -> bool:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
                (f"LISTEN {shared_outcomes.CHANNEL}",),
            )
            row = await cur.fetchone()
            return row is not None and row[0] >= count

        await wait_for(listening, timeout_s=timeout_s, what=f"{count} listeners on the outcomes channel")


async def test_a_node_failing_for_one_replicas_routers_is_ejected_on_every_replica(
    fresh_database: str,
) -> None:
    seed = [
        {"id": "node-1", "address": "http://127.0.0.1:9"},
        {"id": "node-2", "address": "http://127.0.0.1:10"},
    ]
    port_a, port_b = free_port(), free_port()
    a = await _replica(fresh_database, port_a, seed).start()
    b = await _replica(fresh_database, port_b, seed).start()
    try:
        await _listeners(fresh_database, 2, 10.0)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port_a}") as chan_a,
            grpc.aio.insecure_channel(f"127.0.0.1:{port_b}") as chan_b,
        ):
            stub_a = health_service_pb2_grpc.HealthServiceStub(chan_a)
            stub_b = health_service_pb2_grpc.HealthServiceStub(chan_b)
            failure = pb.Outcome(
                node_id="node-1", model="m", error_kind=common_pb2.ERROR_KIND_CONNECTION, latency_ms=3.0
            )

            async def batches() -> AsyncIterator[pb.ReportOutcomesRequest]:
                yield pb.ReportOutcomesRequest(reporter="router-a", outcomes=[failure] * 5)

            # A router reporting to A only: five connection failures in a row eject node-1 on B too.
            reply = await stub_a.ReportOutcomes(batches(), timeout=5)
            assert reply.accepted == 5
            await _until(stub_b, lambda seen: seen["node-1"].ejected and not seen["node-2"].ejected, 2.0)
            await _until(stub_a, lambda seen: seen["node-1"].ejected, 2.0)
    finally:
        await a.kill()
        await b.kill()


def test_shared_outcomes_fit_notify_payloads_and_bad_ones_are_refused() -> None:
    outcome = Outcome("node-1", "llama3.2:1b", OutcomeKind.SERVER, 12.5, 3.0, 40.0, 2)
    payloads = shared_outcomes.encode("replica-a", [("router-1", outcome)] * 500)
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    decoded = [shared_outcomes.decode(p) for p in payloads]
    assert {origin for origin, _ in decoded} == {"replica-a"}
    pairs = [pair for _, batch in decoded for pair in batch]
    assert len(pairs) == 500 and pairs[0] == ("router-1", outcome)
    bad = json.dumps({"origin": "x", "outcomes": [["r", "n", "m", "success", -1, 0, 0, 0]]})
    for payload in (
        bad,
        "{}",
        "not json",
        json.dumps({"origin": "x", "outcomes": [["r", "n", "m", "?", 1, 0, 0, 0]]}),
    ):
        with pytest.raises(ValueError):
            shared_outcomes.decode(payload)
