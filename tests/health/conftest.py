"""Fixtures for the health integration tests: simulator nodes and an in-process health server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from corral.v1 import health_service_pb2_grpc

from services.health.config import HealthConfig, NodeSpec
from services.health.server import RunningHealth, start_in_process
from sim.config import NodeConfig
from sim.node import SimNode
from tests.health.harness import Watcher

MODEL = "llama3.2:1b"

# NOTE: short intervals keep the suite quick; the probe timeout stays well under the interval so that
# a hung node is detected by the timeout of the next probe, inside two intervals.
FAST_HEALTH: dict[str, Any] = {
    "probe_interval_s": 0.5,
    "probe_timeout_s": 0.2,
    "heartbeat_interval_s": 0.5,
    "min_update_interval_s": 0.02,
    "tags_every_n_probes": 2,
    "outlier": {
        "consecutive_errors": 5,
        "consecutive_busy": 3,
        "base_ejection_time_s": 1.0,
        "max_ejection_time_s": 4.0,
        "max_ejection_share": 0.5,
    },
    "score": {"window_size": 20, "min_window_samples": 5, "window_s": 30.0},
}


@dataclass
class Cluster:
    """Four simulator nodes, a health server probing them, a stub and a watcher."""

    nodes: dict[str, SimNode]
    health: RunningHealth
    cfg: HealthConfig
    channel: grpc.aio.Channel
    stub: health_service_pb2_grpc.HealthServiceStub
    watcher: Watcher

    def url(self, node_id: str) -> str:
        return self.nodes[node_id].url


async def start_cluster(count: int = 4, **health_overrides: Any) -> Cluster:
    nodes: dict[str, SimNode] = {}
    for i in range(1, count + 1):
        # NOTE: 100x real time: requests take milliseconds but a 50x slow node is clearly slower.
        node = SimNode(NodeConfig(name=f"node-{i}", time_scale=0.01, seed=i), admin_port=None)
        await node.start()
        await node.load_model(MODEL)
        nodes[node.name] = node
    settings = {**FAST_HEALTH, **health_overrides}
    cfg = HealthConfig.model_validate(
        {
            **settings,
            "port": 0,
            "nodes": [NodeSpec(id=n, address=s.url).model_dump() for n, s in nodes.items()],
        }
    )
    health = await start_in_process(cfg)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{health.port}")
    stub = health_service_pb2_grpc.HealthServiceStub(channel)
    watcher = await Watcher(stub).start()
    return Cluster(nodes, health, cfg, channel, stub, watcher)


async def stop_cluster(cluster: Cluster) -> None:
    await cluster.watcher.stop()
    await cluster.channel.close()
    await cluster.health.stop()
    for node in cluster.nodes.values():
        await node.stop()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """A healthy four-node cluster, every node probed once and MODEL loaded everywhere."""
    started = await start_cluster()
    try:
        await started.watcher.wait_for(
            lambda nodes: len(nodes) == 4 and all(n.healthy and n.models for n in nodes.values()),
            timeout_s=10,
        )
        yield started
    finally:
        await stop_cluster(started)
