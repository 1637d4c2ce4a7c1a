"""Builds and runs the router service: score feed, cache client, transport, RouterCore, servicer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field

import grpc
from corral.v1 import model_service_pb2, model_service_pb2_grpc, router_service_pb2, router_service_pb2_grpc

from services.common.channels import make_channel
from services.common.config import CorralConfig, load_config_or_exit
from services.common.server import Cleanup, ServiceContext, run_service
from services.router.cache_client import CacheClient
from services.router.config import RouterConfig
from services.router.core import RouterCore
from services.router.discovery import StaticDiscovery
from services.router.health_client import HealthOutcomeObserver, OutcomeReporter, ScoreFeed
from services.router.http import start_http_server
from services.router.model_servicer import ModelServicer
from services.router.near_cache import NearCacheSubscriber
from services.router.observe import Observer
from services.router.scores import ScoreBoard
from services.router.servicer import RouterServicer
from services.router.telemetry import install as install_telemetry
from services.router.transport import NodeTransport
from services.router.workers import worker_config

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    router_service_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)
FIRST_SNAPSHOT_WAIT_S = 1.5
# The cache channel's policy: every resolved cache replica in turn.
CACHE_SERVICE_CONFIG: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}


@dataclass
class RouterRuntime:
    """A running RouterCore with its adapters and background tasks (what a front end needs).

    Attributes:
        core: The request pipeline.
        feed: The health score feed (None without health_addr).
        reporter: The outcome reporter (None without health_addr).
        cache: The cache client (None without cache_addr).
        tasks: Background tasks, cancelled by close().
    """

    core: RouterCore
    feed: ScoreFeed | None
    reporter: OutcomeReporter | None
    cache: CacheClient | None
    transport: NodeTransport
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        """Stops the background work and closes connections."""
        if self.cache is not None:
            await self.cache.drain(1.0)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()
        await self.transport.close()


async def start_router(cfg: RouterConfig, observer: Observer | None = None) -> RouterRuntime:
    """Builds RouterCore and starts its feeds; returns once the first node view is in (bounded wait).

    Args:
        cfg: The router section of the configuration.
        observer: Extra hooks (metrics, tracing).
    """
    board = ScoreBoard(cfg.balancer)
    transport = NodeTransport(limit_per_host=max(64, cfg.balancer.max_inflight_per_node))
    await transport.start()
    channels: list[grpc.aio.Channel] = []
    feed: ScoreFeed | None = None
    reporter: OutcomeReporter | None = None
    cache: CacheClient | None = None
    name = cfg.reporter or f"router-{os.getpid()}"
    if cfg.health_addr:
        channel = make_channel(cfg.health_addr)
        channels.append(channel)
        feed = ScoreFeed(channel, board, name, cfg.stale_after_heartbeats)
        reporter = OutcomeReporter(
            channel, name, cfg.outcome_queue_size, cfg.outcome_batch_size, cfg.outcome_flush_ms
        )
    if cfg.cache_addr:
        # NOTE: round_robin over every address the target resolves to (a headless Service, a compose
        # service name, or an `ipv4:` list), so a router spreads its lookups over every cache replica;
        # a replica that goes away leaves the rotation, and the cache's max_connection_age makes the
        # channel re-resolve and pick up new ones.
        channel = make_channel(cfg.cache_addr, service_config=CACHE_SERVICE_CONFIG)
        channels.append(channel)
        cache = CacheClient(
            channel,
            cfg.lookup_budget_ms,
            cfg.store_queue_size,
            lookup_calls=cfg.lookup_calls,
            lookup_batch_max=cfg.lookup_batch_max,
            lookup_budget_max_ms=cfg.lookup_budget_ceiling_ms,
        )
    core = RouterCore(cfg, board=board, transport=transport, cache=cache, observer=observer)
    near = cfg.near_cache
    subscriber = (
        NearCacheSubscriber(core.near, near.redis_url, near.resolved_password(), near.ping_interval_s)
        if core.near is not None
        else None
    )
    if reporter is not None:
        core.observers.add(HealthOutcomeObserver(reporter))
    if feed is not None:
        # NOTE: a node added, recovered or undrained has free slots that no request's end announces.
        feed.on_change = core.forwarder.nodes_changed
    runtime = RouterRuntime(
        core=core, feed=feed, reporter=reporter, cache=cache, transport=transport, channels=channels
    )
    discovery = (
        StaticDiscovery(board, transport, list(cfg.nodes), cfg.static_refresh_s) if cfg.nodes else None
    )
    if feed is not None:
        runtime.tasks.append(asyncio.create_task(feed.run()))
    if reporter is not None:
        runtime.tasks.append(asyncio.create_task(reporter.run()))
    if cache is not None:
        runtime.tasks.append(asyncio.create_task(cache.run()))
    if subscriber is not None:
        runtime.tasks.append(asyncio.create_task(subscriber.run()))
    if discovery is not None:
        runtime.tasks.append(asyncio.create_task(discovery.run()))
    if feed is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_SNAPSHOT_WAIT_S):
                await feed.first_snapshot.wait()
    if board.source != "health" and discovery is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.5):
                await discovery.refreshed.wait()
    logger.info("router starts on %s node view (%d nodes)", board.source, len(board.nodes))
    return runtime


async def setup(ctx: ServiceContext) -> Cleanup:
    """Starts the router runtime and registers the servicer."""
    cfg = ctx.service_cfg
    assert isinstance(cfg, RouterConfig)
    runtime = await start_router(cfg)
    install_telemetry(runtime.core, log_requests=ctx.cfg.logging.access_log)
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(runtime.core), ctx.server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(runtime.core.model_admin), ctx.server
    )
    if cfg.http_port == 0:
        return runtime.close
    runner, http_port = await start_http_server(runtime.core, cfg, auth=ctx.auth, reuse_port=ctx.reuse_port)
    print(f"corral-router: http api on {cfg.host}:{http_port}", flush=True)
    http_drain: list[asyncio.Task[None]] = []

    async def start_http_drain() -> None:
        # NOTE: the HTTP API drains alongside the gRPC server (same grace period), not after it.
        http_drain.append(asyncio.create_task(runner.cleanup()))

    async def cleanup() -> None:
        if not http_drain:
            await start_http_drain()
        await asyncio.gather(*http_drain, return_exceptions=True)
        await runtime.close()

    ctx.on_shutdown.append(start_http_drain)
    return cleanup


async def serve(cfg: CorralConfig | None = None, worker: int | None = None) -> None:
    """Runs the service until SIGTERM, with `cfg` or the loaded configuration; `worker` is this process's
    index among `router.workers` (services/router/workers.py): it then shares the ports."""
    cfg = cfg or load_config_or_exit("router")
    if worker is not None:
        cfg = worker_config(cfg, worker)
    await run_service(
        name="router",
        cfg=cfg,
        service_cfg=cfg.router,
        service_names=SERVICE_NAMES,
        setup=setup,
        reuse_port=worker is not None,
    )
