"""Assembles the prewarm service: adapters, executor, run manager, triggers and their tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc

from services.common.channels import make_channel
from services.prewarm.config import PrewarmConfig
from services.prewarm.executor import RunExecutor
from services.prewarm.health_watch import HealthWatcher
from services.prewarm.node_client import OllamaNodeClient
from services.prewarm.peers import CacheMaintainer, RouterSeeder
from services.prewarm.ports import Maintainer, NodeClient, Seeder
from services.prewarm.required import PullClient, RequiredModels
from services.prewarm.runs import RunManager
from services.prewarm.triggers import Triggers

logger = logging.getLogger(__name__)


class PrewarmApp:
    """The service's moving parts, independent of the gRPC server that exposes them.

    Args:
        cfg: The prewarm section of the configuration.
        nodes: Node client override (tests); default: aiohttp against the nodes' Ollama API.
        seeder: Router adapter override; default: gRPC to cfg.router_addr.
        maintainer: Cache adapter override; default: gRPC to cfg.cache_addr.
        clock: Wall clock in seconds.
    """

    def __init__(
        self,
        cfg: PrewarmConfig,
        *,
        nodes: NodeClient | None = None,
        seeder: Seeder | None = None,
        maintainer: Maintainer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._channels: list[grpc.aio.Channel] = []
        owned_nodes = OllamaNodeClient()
        self._node_client = owned_nodes if nodes is None else None
        health_channel = self._channel(cfg.health_addr)
        self.health = HealthWatcher(health_channel, cfg.health_addr, clock=clock)
        self.executor = RunExecutor(
            cfg,
            scores=self.health,
            nodes=nodes if nodes is not None else owned_nodes,
            seeder=seeder or RouterSeeder(self._channel(cfg.router_addr), cfg.router_addr),
            maintainer=maintainer or CacheMaintainer(self._channel(cfg.cache_addr), cfg.cache_addr),
            clock=clock,
        )
        self.manager = RunManager(self.executor, history_size=cfg.history_size, clock=clock)
        self.triggers = Triggers(
            cfg, self.manager, view=lambda: self.health.view, ledger=self.executor.ledger, clock=clock
        )
        self.required = RequiredModels(cfg, PullClient())
        # NOTE: required models first: the triggers read which nodes still lack one.
        self.health.listeners.append(self.required.on_scores)
        self.health.listeners.append(self.triggers.on_scores)
        self._tasks: list[asyncio.Task[None]] = []

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = make_channel(address)
        self._channels.append(channel)
        return channel

    async def start(self) -> None:
        """Starts following health and the triggers (the start-up run begins at once)."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.health.run(), name="prewarm-health-watch"))
        self._tasks.append(loop.create_task(self.triggers.run(), name="prewarm-triggers"))
        self._tasks.append(loop.create_task(self.required.run(), name="prewarm-required-models"))

    async def stop_runs(self) -> None:
        """Stops the triggers and aborts the run in progress (its progress streams get their last event)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.manager.close()
        await self.required.close()

    async def close(self) -> None:
        """Stops the runs and closes the connections."""
        await self.stop_runs()
        if self._node_client is not None:
            await self._node_client.close()
        for channel in self._channels:
            await channel.close()
