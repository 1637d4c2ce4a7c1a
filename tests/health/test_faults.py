"""Integration: simulator nodes that die, hang, slow down, fail half their requests or answer 503 bursts.

Each fault must be detected, ejected or scored down, and the node must come back after it recovers.
Health is designed to see each fault within two probe intervals; the tests print how long it took
but only fail when the fault goes unseen (see `_DETECT_WAIT_S`). Refused connections and hangs are
visible to the probes; slowness, 500s and 503s only to traffic, so a router-like driver sends
requests and reports the outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable

import pytest
from corral.v1 import health_service_pb2 as pb

from tests.health.conftest import MODEL, Cluster
from tests.health.harness import Driver, Nodes, expected_ms, routable_by

HEALTHY, DEGRADED, UNHEALTHY, EJECTED = (
    pb.NODE_STATE_HEALTHY,
    pb.NODE_STATE_DEGRADED,
    pb.NODE_STATE_UNHEALTHY,
    pb.NODE_STATE_EJECTED,
)


# NOTE: detection is designed to take at most two probe intervals (1 s here; measured 76-700 ms, see
# docs/health.md), but on a busy machine the probe loop, the simulator and the watcher all run late,
# so the tests wait ten times that for the fault to be seen and only print the time it took. The
# time itself is a benchmark figure: bench/scenarios/node_failure.py reports `time_to_eject_s`
# (a killed node, from SIGKILL to health's UNHEALTHY/EJECTED) at the default probe interval.
_DETECT_WAIT_S = 10.0
# NOTE: a node whose fault is cleared is HEALTHY again after its next good probe (within one interval).
_RETURN_WAIT_S = 10.0


def _detect_bound_s(cluster: Cluster) -> float:
    """The designed detection time: two probe intervals."""
    return 2 * cluster.cfg.probe_interval_s


@contextlib.asynccontextmanager
async def _traffic(cluster: Cluster, timeout_s: float = 30.0) -> AsyncIterator[Driver]:
    """Router-like traffic to every node for the duration of the block."""
    done = asyncio.Event()
    async with Driver(cluster.stub) as driver:
        task = asyncio.create_task(
            driver.run_until(
                {n: cluster.url(n) for n in cluster.nodes}, done, timeout_s, routable_by(cluster.watcher)
            )
        )
        try:
            yield driver
        finally:
            done.set()
            await asyncio.wait_for(task, 10)


async def _detected(cluster: Cluster, predicate: Callable[[Nodes], bool], started: float) -> None:
    """Waits until the watcher sees the fault (AssertionError after `_DETECT_WAIT_S`); prints the time."""
    at = await cluster.watcher.wait_for(predicate, timeout_s=_DETECT_WAIT_S)
    # NOTE: shown with `pytest -s`; the numbers quoted in docs/health.md come from here.
    print(
        f"detected in {(at - started) * 1000:.0f} ms (design bound {_detect_bound_s(cluster) * 1000:.0f} ms)"
    )


def _others(nodes: Nodes, node_id: str) -> list[float]:
    return [expected_ms(nodes, other, MODEL) for other in nodes if other != node_id]


async def test_killed_node_is_unhealthy_then_returns(cluster: Cluster) -> None:
    node = cluster.nodes["node-1"]
    started = time.monotonic()
    node.set_fault(refuse=True)
    await _detected(cluster, lambda n: n["node-1"].state == UNHEALTHY, started)
    assert "connect" in cluster.watcher.nodes["node-1"].last_error.lower()
    assert all(cluster.watcher.nodes[n].healthy for n in ("node-2", "node-3", "node-4"))
    node.clear_faults()
    await cluster.watcher.wait_for(lambda n: n["node-1"].state == HEALTHY, timeout_s=_RETURN_WAIT_S)


async def test_hung_node_is_caught_by_the_probe_timeout_then_returns(cluster: Cluster) -> None:
    node = cluster.nodes["node-2"]
    started = time.monotonic()
    node.set_fault(hang=True)
    await _detected(cluster, lambda n: n["node-2"].state == UNHEALTHY, started)
    assert "timed out" in cluster.watcher.nodes["node-2"].last_error
    node.clear_faults()
    await cluster.watcher.wait_for(lambda n: n["node-2"].state == HEALTHY, timeout_s=_RETURN_WAIT_S)


async def test_slow_node_is_scored_down_then_recovers(cluster: Cluster) -> None:
    node = cluster.nodes["node-3"]
    async with _traffic(cluster) as driver:
        await cluster.watcher.wait_for(
            lambda n: all(m.ewma_latency_ms < 1000 for v in n.values() for m in v.models if m.model == MODEL),
            timeout_s=10,
        )
        started = time.monotonic()
        node.set_fault(slow_factor=50)
        await _detected(
            cluster,
            lambda n: expected_ms(n, "node-3", MODEL) > 3 * statistics.median(_others(n, "node-3")),
            started,
        )
        assert cluster.watcher.nodes["node-3"].healthy  # slow, not broken
        node.clear_faults()
        await cluster.watcher.wait_for(
            lambda n: expected_ms(n, "node-3", MODEL) < 2 * max(_others(n, "node-3")), timeout_s=10
        )
    assert driver.sent > 0


async def test_half_failing_node_is_scored_down_then_recovers(cluster: Cluster) -> None:
    node = cluster.nodes["node-2"]
    async with _traffic(cluster):
        started = time.monotonic()
        node.set_fault(error_rate=0.5)
        await _detected(
            cluster,
            lambda n: (
                n["node-2"].state in (DEGRADED, EJECTED)
                and expected_ms(n, "node-2", MODEL) > 5 * max(_others(n, "node-2"))
            ),
            started,
        )
        node.clear_faults()
        await cluster.watcher.wait_for(
            lambda n: n["node-2"].state == HEALTHY and n["node-2"].error_rate < 0.2, timeout_s=15
        )


async def test_busy_burst_ejects_then_node_returns(cluster: Cluster) -> None:
    node = cluster.nodes["node-4"]
    async with _traffic(cluster) as driver:
        started = time.monotonic()
        node.set_fault(busy_count=5)
        await _detected(cluster, lambda n: n["node-4"].ejected, started)
        ejected = cluster.watcher.nodes["node-4"]
        assert ejected.state == EJECTED and ejected.ejection_count >= 1
        assert ejected.ejected_until.seconds > 0
        # The burst is consumed by traffic after the return; the node ends up back in service.
        await cluster.watcher.wait_for(
            lambda n: (
                n["node-4"].state == HEALTHY
                and not n["node-4"].ejected
                and node.faults.current.busy_count == 0
            ),
            timeout_s=15,
        )
    assert driver.kinds.get(5, 0) >= 3  # ERROR_KIND_BUSY


@pytest.mark.parametrize("share", [0.25])
async def test_ejections_are_capped_at_the_fleet_share(share: float) -> None:
    from tests.health.conftest import start_cluster, stop_cluster

    cluster = await start_cluster(
        outlier={
            "max_ejection_share": share,
            "consecutive_busy": 3,
            "base_ejection_time_s": 30.0,
            "max_ejection_time_s": 60.0,
        }
    )
    try:
        await cluster.watcher.wait_for(lambda n: len(n) == 4 and all(v.healthy for v in n.values()), 10)
        for name in ("node-1", "node-2"):
            cluster.nodes[name].set_fault(busy_count=-1)
        async with Driver(cluster.stub) as driver:
            for _ in range(6):
                for name in ("node-1", "node-2"):
                    await driver.attempt(name, cluster.url(name))
        await cluster.watcher.wait_for(
            lambda n: n["node-1"].ejected and n["node-2"].state == DEGRADED, timeout_s=5
        )
        assert not cluster.watcher.nodes["node-2"].ejected  # 25 % of 4 nodes: one ejection at a time
    finally:
        await stop_cluster(cluster)
