"""Assembles the prewarm service: adapters, executor, run manager, triggers and their tasks.

With several replicas, only the elected leader acts (leader.py): its triggers and required-model pulls
run while it leads, every node, router and cache call is checked against the leadership first, and
a run in progress is stopped when the leadership is lost. Standbys follow health (so that a takeover
plans at once) and do nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TypeAlias

import grpc

from services.common.channels import make_channel
from services.prewarm.config import PrewarmConfig
from services.prewarm.executor import RunExecutor
from services.prewarm.health_watch import watch_health
from services.prewarm.leader import (
    NOT_LEADER,
    GuardedMaintainer,
    GuardedNodes,
    GuardedPullClient,
    GuardedSeeder,
    LeaderElection,
    Leadership,
    SoleLeader,
)
from services.prewarm.node_client import OllamaNodeClient
from services.prewarm.peers import CacheMaintainer, RouterSeeder
from services.prewarm.planner import NodeView
from services.prewarm.ports import Maintainer, NodeClient, Seeder
from services.prewarm.required import RequiredModels
from services.prewarm.runs import Outcome, Run, RunManager
from services.prewarm.triggers import Triggers

View: TypeAlias = Mapping[str, NodeView]
LOST_MID_RUN = "this replica lost the prewarm leadership during the run: stopped before acting again"

logger = logging.getLogger(__name__)


class PrewarmApp:
    """The service's moving parts, independent of the gRPC server that exposes them.

    Args:
        cfg: The prewarm section of the configuration.
        nodes: Node client override (tests); default: aiohttp against the nodes' Ollama API.
        seeder: Router adapter override; default: gRPC to cfg.router_addr.
        maintainer: Cache adapter override; default: gRPC to cfg.cache_addr.
        clock: Wall clock in seconds.
        dsn: PostgreSQL, for the leader election when cfg.leader_election is on.
        leadership: Election override (tests); default: LeaderElection on `dsn` when
            cfg.leader_election is on, else SoleLeader (this replica always leads).
    """

    def __init__(
        self,
        cfg: PrewarmConfig,
        *,
        nodes: NodeClient | None = None,
        seeder: Seeder | None = None,
        maintainer: Maintainer | None = None,
        clock: Callable[[], float] = time.time,
        dsn: str | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.cfg = cfg
        if leadership is None:
            if cfg.leader_election and dsn is not None:
                leadership = LeaderElection(dsn, lease_s=cfg.leader_lease_s)
            else:
                leadership = SoleLeader()
        self.leadership = leadership
        holds = leadership.holds
        self._channels: list[grpc.aio.Channel] = []
        owned_nodes = OllamaNodeClient()
        self._node_client = owned_nodes if nodes is None else None
        health_channel = self._channel(cfg.health_addr)
        self.health = watch_health(health_channel, cfg.health_addr, clock=clock)
        self.executor = RunExecutor(
            cfg,
            scores=self.health,
            nodes=GuardedNodes(nodes if nodes is not None else owned_nodes, holds),
            seeder=GuardedSeeder(
                seeder or RouterSeeder(self._channel(cfg.router_addr), cfg.router_addr), holds
            ),
            maintainer=GuardedMaintainer(
                maintainer or CacheMaintainer(self._channel(cfg.cache_addr), cfg.cache_addr), holds
            ),
            clock=clock,
        )
        self.manager = RunManager(self._execute, history_size=cfg.history_size, clock=clock)
        self.triggers = Triggers(
            cfg, self.manager, view=lambda: self.health.view, ledger=self.executor.ledger, clock=clock
        )
        self.required = RequiredModels(cfg, GuardedPullClient(holds))
        # NOTE: required models first: the triggers read which nodes still lack one.
        self.health.listeners.append(self._required_on_scores)
        self.health.listeners.append(self._triggers_on_scores)
        self._tasks: list[asyncio.Task[None]] = []
        # The triggers and the required-model loop, while this replica leads.
        self._acting: list[asyncio.Task[None]] = []
        self._lost = asyncio.Event()
        self._lost.set()
        self._stopping = False
        self._led = False
        leadership.on_change.append(self._leadership_changed)

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = make_channel(address)
        self._channels.append(channel)
        return channel

    async def start(self) -> None:
        """Starts following health and the election; the leader's triggers start when it leads."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.health.run(), name="prewarm-health-watch"))
        self._tasks.append(loop.create_task(self.leadership.run(), name="prewarm-leader-election"))

    def is_leader(self) -> bool:
        """True while this replica acts."""
        return self.leadership.holds()

    def next_scheduled_at(self) -> float | None:
        """When the next scheduled run is due, on the leader; None on a standby."""
        return self.triggers.next_scheduled_at_s if self.leadership.holds() else None

    # ---- leadership -----------------------------------------------------------------------------
    def _leadership_changed(self, leading: bool) -> None:
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        if leading:
            self._lost = asyncio.Event()
            # NOTE: the start-up run belongs to the first leader, once: a replica taking over from
            # another one, or leading again after losing its connection, continues the schedule
            # instead of repeating a run already done.
            startup = self.cfg.run_on_start and not self.leadership.saw_other_leader and not self._led
            self._led = True
            self._acting.append(loop.create_task(self.triggers.run(startup=startup), name="prewarm-triggers"))
            self._acting.append(loop.create_task(self.required.run(), name="prewarm-required-models"))
            if self.health.view is not None:
                self.required.on_scores(None, self.health.view)
            return
        self._lost.set()
        acting, self._acting = self._acting, []
        for task in acting:
            task.cancel()
        self.triggers.next_scheduled_at_s = None
        self._tasks.append(loop.create_task(self.required.close(), name="prewarm-required-stop"))

    def _required_on_scores(self, before: View | None, after: View) -> None:
        if self.leadership.holds():
            self.required.on_scores(before, after)

    def _triggers_on_scores(self, before: View | None, after: View) -> None:
        if self.leadership.holds():
            self.triggers.on_scores(before, after)

    async def _execute(self, run: Run) -> None:
        """Runs the steps while this replica leads; a leadership lost mid-run stops the run there."""
        if not self.leadership.holds():
            run.step(run.request.steps[0], 1).finished(Outcome.FAILED, message=NOT_LEADER)
            return
        lost = self._lost
        work = asyncio.create_task(self.executor(run))
        waiter = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if work.cancelled():
            logger.warning("run %s stopped: %s", run.run_id, LOST_MID_RUN)
            run.step(run.request.steps[-1], 1).finished(Outcome.FAILED, message=LOST_MID_RUN)
            return
        work.result()

    async def stop_runs(self) -> None:
        """Stops the triggers, aborts the run in progress (its progress streams get their last event),
        then leaves the election, so that a standby takes over at once."""
        self._stopping = True
        acting, self._acting = self._acting, []
        for task in acting:
            task.cancel()
        await asyncio.gather(*acting, return_exceptions=True)
        await self.manager.close()
        await self.required.close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stops the runs and closes the connections."""
        await self.stop_runs()
        if self._node_client is not None:
            await self._node_client.close()
        for channel in self._channels:
            await channel.close()
