"""Leader election on a real PostgreSQL: one leader, a quick takeover, never two acting at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest
from corral.v1 import health_service_pb2_grpc

from services.health.config import HealthConfig, NodeSpec
from services.health.server import start_in_process
from services.prewarm.app import LOST_MID_RUN, PrewarmApp
from services.prewarm.config import PrewarmConfig, WarmModel
from services.prewarm.leader import LOCK_CLASS_ID, LOCK_KEY, LOCK_OBJSUBID, LeaderElection, SoleLeader
from services.prewarm.runs import Outcome, RunState, Trigger
from services.prewarm.triggers import next_slot_s
from sim.config import NodeConfig
from sim.node import SimNode
from tests.health.harness import Watcher
from tests.helpers.polling import wait_for
from tests.helpers.procs import free_port
from tests.prewarm.test_with_health import HEALTH, healthy

pytestmark = pytest.mark.timeout(60)

LEASE_S = 2.0
# NOTE: generous: a takeover needs one standby retry (0.5 s here), or the lease when a leader hangs.
TAKEOVER_WAIT_S = 15.0
FIRST, SECOND = "llama3.2:1b", "mistral:7b"


class Replica:
    """One election in this process, with the leadership changes it announced."""

    def __init__(self, dsn: str, name: str) -> None:
        self.election = LeaderElection(dsn, lease_s=LEASE_S, name=name)
        self.changes: list[bool] = []
        # Whether any other replica held the leadership when this one became leader.
        self.others_held_on_takeover: list[bool] = []
        self.others: list[Replica] = []
        self.election.on_change.append(self._changed)
        self.task: asyncio.Task[None] | None = None

    def _changed(self, leading: bool) -> None:
        self.changes.append(leading)
        if leading:
            self.others_held_on_takeover.append(any(o.election.holds() for o in self.others))

    def start(self) -> None:
        self.task = asyncio.create_task(self.election.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def replicas(fresh_database: str) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(fresh_database, "replica-a"), Replica(fresh_database, "replica-b")
    a.others, b.others = [b], [a]
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


def lock_holders(dsn: str) -> list[str]:
    """The application names of the sessions holding the prewarm lock, as PostgreSQL reports them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = %s",
            (LOCK_CLASS_ID, LOCK_KEY, LOCK_OBJSUBID),
        ).fetchall()
    return [str(r[0]) for r in rows]


async def elected(a: Replica, b: Replica) -> tuple[Replica, Replica]:
    """Waits until one leads and the other names it as the leader; returns (leader, standby)."""

    def settled() -> bool:
        holders = [r for r in (a, b) if r.election.holds()]
        if len(holders) != 1:
            return False
        standby = b if holders[0] is a else a
        return standby.election.leader == holders[0].election.name

    await wait_for(settled, timeout_s=TAKEOVER_WAIT_S, what="one leader, named by the standby")
    return (a, b) if a.election.holds() else (b, a)


async def test_two_replicas_elect_exactly_one(replicas: tuple[Replica, Replica], fresh_database: str) -> None:
    leader, standby = await elected(*replicas)
    assert lock_holders(fresh_database) == [leader.election.name]
    assert leader.changes == [True] and standby.changes == []
    assert not standby.election.holds()
    assert standby.election.saw_other_leader and not leader.election.saw_other_leader


async def test_a_leader_whose_session_ends_is_replaced_and_steps_down(
    replicas: tuple[Replica, Replica], fresh_database: str
) -> None:
    leader, standby = await elected(*replicas)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (leader.election.name,),
        )
    await wait_for(lambda: leader.changes == [True, False], timeout_s=TAKEOVER_WAIT_S, what="a step-down")
    new_leader, new_standby = await elected(*replicas)
    # NOTE: either may win the next election: the old leader reconnects as a standby would.
    assert lock_holders(fresh_database) == [new_leader.election.name]
    assert new_standby.election.leader == new_leader.election.name
    assert True not in leader.others_held_on_takeover + standby.others_held_on_takeover


async def test_a_stopped_leader_releases_the_lock_for_the_standby(replicas: tuple[Replica, Replica]) -> None:
    leader, standby = await elected(*replicas)
    await leader.stop()
    assert leader.changes == [True, False] and not leader.election.holds()
    await wait_for(standby.election.holds, timeout_s=TAKEOVER_WAIT_S, what="the standby taking over")
    assert standby.others_held_on_takeover == [False]


async def test_a_hung_leader_loses_the_lock_and_acts_no_more(
    replicas: tuple[Replica, Replica], fresh_database: str
) -> None:
    leader, standby = await elected(*replicas)
    # A leader that stops confirming (as one whose event loop is stuck would): it sends nothing more,
    # so PostgreSQL ends its idle session after the lease and the standby takes over.
    leader.election._confirm_s = 3600.0
    await wait_for(standby.election.holds, timeout_s=TAKEOVER_WAIT_S, what="the standby taking over")
    # NOTE: its own bound ran out first: it stopped acting before the standby started.
    assert standby.others_held_on_takeover == [False]
    assert not leader.election.holds()
    assert lock_holders(fresh_database) == [standby.election.name]


async def test_without_postgresql_nobody_leads() -> None:
    election = LeaderElection(f"postgresql://corral@127.0.0.1:{free_port()}/corral", lease_s=LEASE_S)
    changes: list[bool] = []
    election.on_change.append(changes.append)
    task = asyncio.create_task(election.run())
    try:
        # NOTE: the first attempt is refused at once; the election stands by and retries.
        await wait_for(lambda: election._last_error != "", timeout_s=10, what="a refused attempt")
        assert not election.holds() and election.leader == "" and changes == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_without_election_the_replica_leads_alone() -> None:
    sole = SoleLeader()
    changes: list[bool] = []
    sole.on_change.append(changes.append)
    task = asyncio.create_task(sole.run())
    try:
        await wait_for(lambda: changes == [True], timeout_s=5, what="the sole leader starting")
        assert sole.holds() and sole.leader == sole.name
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_leader_that_loses_its_lock_mid_run_stops_before_acting_again(fresh_database: str) -> None:
    # One node that loads slowly (real-time simulator: about 3 s for the first model), so that the
    # leadership is lost while the run waits for its first warm-up; the second would follow it.
    node = SimNode(NodeConfig(name="node-1", time_scale=1.0), admin_port=None)
    await node.start()
    health = await start_in_process(
        HealthConfig.model_validate(
            {**HEALTH, "nodes": [NodeSpec(id=node.name, address=node.url).model_dump()]}
        )
    )
    # NOTE: the node serves before prewarm starts, so that only the start-up run warms it (a node
    # health sees come up later would queue a node-joined warm-up behind it).
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{health.port}")
    watcher = await Watcher(health_service_pb2_grpc.HealthServiceStub(channel), "leader-test").start()
    await watcher.wait_for(healthy(node.name), timeout_s=TAKEOVER_WAIT_S)
    await watcher.stop()
    await channel.close()
    dead = f"127.0.0.1:{free_port()}"
    cfg = PrewarmConfig(
        health_addr=f"127.0.0.1:{health.port}",
        router_addr=dead,
        cache_addr=dead,
        models=[WarmModel(name=FIRST, keep_alive_s=600), WarmModel(name=SECOND, keep_alive_s=600)],
        schedule_interval_s=0,
        health_wait_s=10,
        leader_election=True,
        leader_lease_s=LEASE_S,
    )
    app = PrewarmApp(cfg, dsn=fresh_database)
    await app.start()
    try:
        await wait_for(lambda: app.manager.current is not None, timeout_s=TAKEOVER_WAIT_S, what="a run")
        run = app.manager.current
        assert run is not None and run.request.trigger is Trigger.STARTUP
        async with asyncio.timeout(TAKEOVER_WAIT_S):
            async for event in run.events():
                if event.outcome is Outcome.STARTED and event.model == FIRST and event.node_id:
                    break
            else:
                pytest.fail(f"the start-up run ended without warming {FIRST}: {run.summary}")
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (app.leadership.name,),
            )
        async with asyncio.timeout(TAKEOVER_WAIT_S):
            await run.finished.wait()
        assert any(LOST_MID_RUN in error for error in run.summary.errors), run.summary.errors
        assert run.summary.state in (RunState.FAILED, RunState.PARTIAL)

        # The replica leads again (it is the only one) and continues: no second start-up run, and
        # the second model, whose warm-up came after the loss, was never asked for.
        await wait_for(app.is_leader, timeout_s=TAKEOVER_WAIT_S, what="leading again")
        async with asyncio.timeout(TAKEOVER_WAIT_S):
            await app.manager.wait_idle()
        assert [r.trigger for r in app.manager.recent(10)] == [Trigger.STARTUP]
        stats = node.stats()
        # NOTE: a warm-up is a generate without a prompt; health's probes never send one.
        assert stats["requests_by_route"].get("/api/generate") == 1
        assert SECOND not in stats["loaded_models"]
    finally:
        await app.close()
        await health.stop()
        await node.stop()


def test_replicas_started_at_different_times_share_one_schedule() -> None:
    # 30-minute slots: whenever a replica starts (or takes over), its next run is the same slot's.
    for now_s in (1_800_000_000.0, 1_800_000_001.5, 1_800_001_799.9):
        assert next_slot_s(now_s, 1800.0) == 1_800_001_800.0
    # A run due exactly now is not due again: the next slot is one interval later.
    assert next_slot_s(1_800_001_800.0, 1800.0) == 1_800_003_600.0
