"""Integration: WatchScores snapshot, prompt updates, heartbeats when quiet, resync of slow readers."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from corral.v1 import health_service_pb2 as pb

from tests.health.conftest import Cluster, start_cluster, stop_cluster

SNAPSHOT, UPDATE, HEARTBEAT = (
    pb.SCORE_UPDATE_KIND_SNAPSHOT,
    pb.SCORE_UPDATE_KIND_UPDATE,
    pb.SCORE_UPDATE_KIND_HEARTBEAT,
)


async def _next(stream: grpc.aio.UnaryStreamCall, timeout_s: float = 5.0) -> pb.WatchScoresResponse:
    message = await asyncio.wait_for(stream.read(), timeout_s)
    assert isinstance(message, pb.WatchScoresResponse)
    return message


async def test_snapshot_then_updates_within_one_probe_interval_then_heartbeats(cluster: Cluster) -> None:
    stream = cluster.stub.WatchScores(pb.WatchScoresRequest(subscriber="t"))
    first = await _next(stream)
    assert first.kind == SNAPSHOT
    assert sorted(n.node_id for n in first.nodes) == ["node-1", "node-2", "node-3", "node-4"]
    assert first.generated_at.seconds > 0
    assert first.heartbeat_interval.ToMilliseconds() == 500
    assert first.probe_interval.ToMilliseconds() == 500

    changed_at = time.monotonic()
    await cluster.stub.DrainNode(pb.DrainNodeRequest(node_id="node-3"), timeout=5)
    message = await _next(stream)
    while message.kind == HEARTBEAT:
        message = await _next(stream)
    latency_s = time.monotonic() - changed_at
    assert message.kind == UPDATE
    assert message.version > first.version
    assert [n.node_id for n in message.nodes] == ["node-3"]
    assert message.nodes[0].draining and message.nodes[0].state == pb.NODE_STATE_DRAINING
    assert latency_s < cluster.cfg.probe_interval_s, latency_s
    print(f"update {latency_s * 1000:.0f} ms after the change")

    # Nothing changes now: heartbeats carry the same version and no nodes.
    beats: list[pb.WatchScoresResponse] = []
    while len(beats) < 2:
        message = await _next(stream, timeout_s=3 * cluster.cfg.heartbeat_interval_s)
        if message.kind == HEARTBEAT:
            beats.append(message)
    assert all(b.version == beats[0].version and not b.nodes for b in beats)
    assert beats[0].version >= message.version
    stream.cancel()


async def test_removal_is_an_update_with_removed_ids(cluster: Cluster) -> None:
    version_before = max(m.version for m in cluster.watcher.messages)
    await cluster.stub.RemoveNode(pb.RemoveNodeRequest(node_id="node-4"), timeout=5)
    await cluster.watcher.wait_for(lambda nodes: "node-4" not in nodes, timeout_s=5)
    last = cluster.watcher.messages[-1]
    assert last.kind == UPDATE and last.version > version_before


async def test_a_subscriber_that_stops_reading_does_not_stall_the_others() -> None:
    cluster = await start_cluster(min_update_interval_s=0.0, subscriber_queue_size=8)
    try:
        # NOTE: big labels make each update ~8 KB, so the stalled stream's flow-control window fills
        # quickly and the server-side queue overflows.
        labels = {f"label-{i:02d}": "x" * 250 for i in range(32)}
        await cluster.stub.AddNode(
            pb.AddNodeRequest(node_id="big", address="http://127.0.0.1:9", labels=labels), timeout=5
        )
        stalled = cluster.stub.WatchScores(pb.WatchScoresRequest(subscriber="stalled"))
        assert (await _next(stalled)).kind == SNAPSHOT

        hub = cluster.health.engine.hub
        toggles = 0
        while hub.resyncs().get("stalled", 0) == 0:
            assert toggles < 5000, "the stalled subscriber never overflowed"
            request = pb.DrainNodeRequest(node_id="big")
            if toggles % 2:
                await cluster.stub.UndrainNode(pb.UndrainNodeRequest(node_id="big"), timeout=5)
            else:
                await cluster.stub.DrainNode(request, timeout=5)
            toggles += 1
        draining = toggles % 2 == 1

        # The live watcher has kept up: it sees the final state at once, with no version gaps.
        await cluster.watcher.wait_for(lambda n: "big" in n and n["big"].draining == draining, timeout_s=5)
        versions = [m.version for m in cluster.watcher.messages if m.kind == UPDATE]
        assert versions == list(range(versions[0], versions[0] + len(versions)))

        # The stalled one resumes: after what was in flight it gets a fresh snapshot with the final state.
        for _ in range(10_000):
            message = await _next(stalled)
            if message.kind == SNAPSHOT:
                break
        else:
            pytest.fail("no resync snapshot")
        big = {n.node_id: n for n in message.nodes}["big"]
        assert big.draining == draining
        print(f"stalled subscriber resynced after {toggles} changes")
        stalled.cancel()
    finally:
        await stop_cluster(cluster)
