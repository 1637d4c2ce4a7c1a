"""Must-show, end to end with real processes: prewarm at two replicas acts once, and survives its leader.

Two simulator nodes, health, a cache (real Redis and PostgreSQL), the router, and two prewarm
processes electing their leader in PostgreSQL, on a short schedule. Each run seeds one probe query in
refresh mode, so every run that seeds reaches a node exactly once: the nodes' request logs count the
runs of both replicas together. Killing the leader (SIGKILL) hands the schedule to the standby, which
runs the next cycle, maintenance included, and no cycle runs twice.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from corral.v1 import prewarm_service_pb2, prewarm_service_pb2_grpc

from devstack.redis import RedisServer
from tests.helpers.polling import wait_for
from tests.helpers.procs import ServiceProcess, free_port
from tests.router.stack import Stack, redis_cache_env, start_stack

pytestmark = pytest.mark.timeout(180)

INTERVAL_S = 4.0
LEASE_S = 2.0
PROBE = "leader election probe: what is a corral?"
MODEL = "llama3.2:1b"
# NOTE: generous bounds for a loaded 2-core machine; a takeover itself takes about a second.
WAIT_S = 40.0


class Replica:
    """A prewarm process and its gRPC and metrics endpoints."""

    def __init__(self, proc: ServiceProcess, metrics_port: int, http: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.metrics_port = metrics_port
        self._http = http

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.proc.port}"

    async def leader_gauge(self) -> float | None:
        try:
            async with self._http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp:
                text = await resp.text()
        except aiohttp.ClientError:
            return None
        for line in text.splitlines():
            if line.startswith("corral_prewarm_leader "):
                return float(line.split()[1])
        return None

    async def leads(self) -> bool:
        return await self.leader_gauge() == 1.0

    async def status(self) -> prewarm_service_pb2.GetStatusResponse:
        async with grpc.aio.insecure_channel(self.addr) as channel:
            stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
            reply: prewarm_service_pb2.GetStatusResponse = await stub.GetStatus(
                prewarm_service_pb2.GetStatusRequest(limit=100), timeout=5
            )
            return reply


def _replica_env(stack: Stack, dsn: str, seed_file: Path, metrics_port: int) -> dict[str, str]:
    assert stack.health is not None and stack.router is not None and stack.cache is not None
    return {
        "CORRAL_LOGGING__LEVEL": "INFO",
        "CORRAL_PREWARM__PORT": "0",
        "CORRAL_PREWARM__METRICS_PORT": str(metrics_port),
        "CORRAL_PREWARM__HEALTH_ADDR": f"127.0.0.1:{stack.health.port}",
        "CORRAL_PREWARM__ROUTER_ADDR": f"127.0.0.1:{stack.router.port}",
        "CORRAL_PREWARM__CACHE_ADDR": f"127.0.0.1:{stack.cache.port}",
        "CORRAL_PREWARM__SCHEDULE_INTERVAL_S": str(INTERVAL_S),
        "CORRAL_PREWARM__RUN_ON_START": "true",
        "CORRAL_PREWARM__SEED_FILE": str(seed_file),
        "CORRAL_PREWARM__SEED_CACHE_MODE": "refresh",
        "CORRAL_PREWARM__MAINTENANCE_VACUUM": "false",
        "CORRAL_PREWARM__MODELS": json.dumps([{"name": MODEL, "keep_alive_s": 600}]),
        "CORRAL_PREWARM__LEADER_ELECTION": "true",
        "CORRAL_PREWARM__LEADER_LEASE_S": str(LEASE_S),
        "CORRAL_POSTGRES__DSN": dsn,
    }


@pytest.fixture
async def stack(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Stack]:
    cache_env = {**redis_cache_env(redis_server.url, migrated_dsn), "CORRAL_CACHE__EMBEDDER__KIND": "hashing"}
    started = await start_stack(node_count=2, cache_env=cache_env)
    try:
        yield started
    finally:
        await started.close()


async def start_replicas(stack: Stack, dsn: str, tmp_path: Path) -> list[Replica]:
    assert stack.http is not None
    seed_file = tmp_path / "seed-queries.yaml"
    seed_file.write_text(json.dumps({"models": {MODEL: [PROBE]}}))
    replicas = []
    for _ in range(2):
        metrics_port = free_port()
        proc = ServiceProcess("services.prewarm", env=_replica_env(stack, dsn, seed_file, metrics_port))
        stack.extra.append(proc)
        replicas.append(Replica(proc, metrics_port, stack.http))
    for replica in replicas:
        await replica.proc.start()
    return replicas


async def probes_seen(stack: Stack) -> int:
    """How many times the probe query reached a node (every seeding run sends it once)."""
    total = 0
    for node in stack.nodes:
        entries = (await stack.admin(node.node_id, "GET", "/_sim/requests"))["requests"]
        total += sum(1 for e in entries if e["request"].get("prompt") == PROBE)
    return total


def seeding_runs(status: prewarm_service_pb2.GetStatusResponse) -> int:
    return sum(1 for r in status.recent if prewarm_service_pb2.PREWARM_STEP_SEED_CACHE in r.steps)


def scheduled_slots(status: prewarm_service_pb2.GetStatusResponse) -> list[int]:
    """The schedule slot of each scheduled run (slots are the multiples of the interval)."""
    return [
        math.floor(r.started_at.ToNanoseconds() / 1e9 / INTERVAL_S)
        for r in status.recent
        if r.trigger == prewarm_service_pb2.RUN_TRIGGER_SCHEDULE
    ]


@pytest.fixture
async def elected(stack: Stack, fresh_database: str, tmp_path: Path) -> tuple[Replica, Replica]:
    """Two replicas on one PostgreSQL, once exactly one leads: the metric says so on both, and the
    standby's log names the leader. Returns (leader, standby)."""
    replicas = await start_replicas(stack, fresh_database, tmp_path)

    async def one_leader() -> bool:
        gauges = [await r.leader_gauge() for r in replicas]
        return sorted(g for g in gauges if g is not None) == [0.0, 1.0]

    await wait_for(one_leader, timeout_s=WAIT_S, what="one prewarm leader and one standby")
    gauges = [await r.leader_gauge() for r in replicas]
    leader, standby = (replicas[0], replicas[1]) if gauges[0] == 1.0 else (replicas[1], replicas[0])
    await wait_for(
        lambda: any(
            "prewarm standby:" in line and f"pid {leader.proc.pid}" in line for line in standby.proc.output
        ),
        timeout_s=WAIT_S,
        what="the standby's log line naming the leader",
    )
    return leader, standby


async def assert_each_slot_ran_once(
    stack: Stack,
    before: prewarm_service_pb2.GetStatusResponse,
    after: prewarm_service_pb2.GetStatusResponse,
) -> None:
    """No cycle ran twice: one run per slot across the old leader's runs (`before`) and the new
    leader's (`after`), and the nodes saw one probe per seeding run of either replica, none more."""
    old_slots, new_slots = scheduled_slots(before), scheduled_slots(after)
    assert len(set(old_slots + new_slots)) == len(old_slots) + len(new_slots)
    assert await probes_seen(stack) == seeding_runs(before) + seeding_runs(after)


async def test_one_leader_acts_and_a_standby_takes_over_its_schedule(
    stack: Stack, elected: tuple[Replica, Replica]
) -> None:
    leader, standby = elected

    # The standby refuses a manual run and has run nothing.
    async with grpc.aio.insecure_channel(standby.addr) as channel:
        stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.StartRun(prewarm_service_pb2.StartRunRequest(), timeout=5):
                pass
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stands by" in (refused.value.details() or "")

    # The leader runs its start-up run and a scheduled cycle; it is killed between two runs.
    before = await between_runs(leader)
    standby_status = await standby.status()
    await leader.proc.kill()
    killed_at = time.monotonic()
    assert [r.trigger for r in before.recent][-1] == prewarm_service_pb2.RUN_TRIGGER_STARTUP
    assert not standby_status.recent and not standby_status.HasField("current")
    assert not standby_status.HasField("next_scheduled_at")
    # Both replicas name the same leader in their status (what `corral status` prints).
    assert before.leads and not standby_status.leads
    assert f"pid {leader.proc.pid}" in before.leader, before.leader
    assert standby_status.leader == before.leader, (standby_status.leader, before.leader)
    # Every probe that reached a node was the leader's: the standby did not run.
    assert await probes_seen(stack) == seeding_runs(before)

    # The standby takes over and runs the next cycle, maintenance included, without a start-up run.
    await wait_for(standby.leads, timeout_s=WAIT_S, what="the standby becoming the leader")
    print(f"takeover observed {time.monotonic() - killed_at:.2f} s after the kill")
    assert any("prewarm leader: this replica" in line for line in standby.proc.output)

    after = await between_runs(standby)
    assert all(r.trigger == prewarm_service_pb2.RUN_TRIGGER_SCHEDULE for r in after.recent)
    takeover_run = after.recent[-1]
    assert prewarm_service_pb2.PREWARM_STEP_MAINTENANCE in takeover_run.steps
    assert takeover_run.maintenance_report.startswith("removed "), takeover_run.maintenance_report

    # No cycle ran twice, and the new leader's slots come after the old one's.
    await assert_each_slot_ran_once(stack, before, after)
    assert min(scheduled_slots(after)) > max(scheduled_slots(before))


async def between_runs(replica: Replica) -> prewarm_service_pb2.GetStatusResponse:
    """The replica's status once it has finished a scheduled run and the next slot is not close, so
    that nothing it does changes what the nodes saw before the caller has looked."""
    last: list[prewarm_service_pb2.GetStatusResponse] = []

    async def quiet() -> bool:
        status = await replica.status()
        if status.HasField("current") or not scheduled_slots(status):
            return False
        if status.next_scheduled_at.ToNanoseconds() / 1e9 - time.time() < INTERVAL_S / 3:
            return False
        last[:] = [status]
        return True

    await wait_for(quiet, timeout_s=WAIT_S, interval_s=0.1, what="a finished scheduled run")
    return last[0]


async def test_a_hung_leader_is_replaced_and_acts_no_more_when_it_wakes(
    stack: Stack, elected: tuple[Replica, Replica]
) -> None:
    leader, standby = elected
    before = await between_runs(leader)

    # SIGSTOP: the leader's process is alive, its connection open, and it sends nothing. PostgreSQL
    # ends its idle session after the lease, and the standby takes over.
    leader.proc.signal(signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        await wait_for(standby.leads, timeout_s=WAIT_S, what="the standby taking over")
        print(
            f"takeover from a stopped leader after {time.monotonic() - stopped_at:.2f} s (lease {LEASE_S} s)"
        )
        await between_runs(standby)
    finally:
        leader.proc.signal(signal.SIGCONT)

    # Awake again, the old leader finds its session gone, says so, stands by, and acts no more: a
    # scheduled run it had due is refused before its first action.
    await wait_for(
        lambda: any("lost the leadership" in line for line in leader.proc.output),
        timeout_s=WAIT_S,
        what="the old leader's log line",
    )
    assert await leader.leader_gauge() == 0.0
    await wait_for(
        lambda: any(
            "prewarm standby:" in line and f"pid {standby.proc.pid}" in line for line in leader.proc.output
        ),
        timeout_s=WAIT_S,
        what="the old leader naming the new one",
    )
    woken = await leader.status()
    late = [r for r in woken.recent if r.run_id not in {b.run_id for b in before.recent}]
    assert all(r.succeeded == 0 and r.skipped == 0 for r in late), late
    await assert_each_slot_ran_once(stack, before, await between_runs(standby))


async def test_a_leader_stopped_with_sigterm_hands_over_at_once(elected: tuple[Replica, Replica]) -> None:
    # A rolling update: the old pod gets SIGTERM; its run is aborted, then its lock's session closes.
    leader, standby = elected
    assert await leader.proc.terminate() == 0
    stopped_at = time.monotonic()
    await wait_for(standby.leads, timeout_s=WAIT_S, what="the standby taking over")
    print(f"takeover {time.monotonic() - stopped_at:.2f} s after the old leader exited")
    assert any("hands over the leadership" in line for line in leader.proc.output)
    assert not any("lost the leadership" in line for line in leader.proc.output)
    after = await between_runs(standby)
    assert all(r.trigger == prewarm_service_pb2.RUN_TRIGGER_SCHEDULE for r in after.recent)
