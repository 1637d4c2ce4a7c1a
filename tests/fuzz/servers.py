"""The four services in-process on free ports, over a simulated node and the session's Redis/PostgreSQL."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from corral.v1 import prewarm_service_pb2_grpc, router_service_pb2_grpc

from services.cache.embedders import HashingEmbedder
from services.cache.server import RunningCache
from services.cache.server import start_in_process as start_cache
from services.common.server import build_server, set_serving
from services.health.config import HealthConfig, NodeSpec
from services.health.server import RunningHealth
from services.health.server import start_in_process as start_health
from services.prewarm.app import PrewarmApp
from services.prewarm.config import PrewarmConfig
from services.prewarm.server import SERVICE_NAMES as PREWARM_NAMES
from services.prewarm.servicer import PrewarmServicer
from services.router.config import RouterConfig, StaticNode
from services.router.http.app import build_http_app
from services.router.server import SERVICE_NAMES as ROUTER_NAMES
from services.router.server import RouterRuntime, start_router
from services.router.servicer import RouterServicer
from sim.config import NodeConfig
from sim.node import SimNode
from tests.cache.helpers import make_config

# NOTE: small limits, so that hypothesis reaches them with modest inputs as well as huge ones.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_PROMPT_BYTES = 1_000_000


CLOSE_STEP_S = 15.0


@dataclass
class Servers:
    """Everything the fuzz tests call."""

    node: SimNode
    cache: RunningCache
    health: RunningHealth
    router: RouterRuntime
    router_server: grpc.aio.Server
    router_port: int
    prewarm: PrewarmApp
    prewarm_server: grpc.aio.Server
    prewarm_port: int
    http_app: web.Application
    closers: list[Any] = field(default_factory=list)

    def address(self, service: str) -> str:
        port = {
            "router": self.router_port,
            "cache": self.cache.port,
            "health": self.health.port,
            "prewarm": self.prewarm_port,
        }[service]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("prewarm server", lambda: self.prewarm_server.stop(None)),
            ("prewarm", self.prewarm.close),
            ("router server", lambda: self.router_server.stop(None)),
            ("router", self.router.close),
            ("health", self.health.stop),
            ("cache", self.cache.stop),
            ("node", self.node.stop),
        ]
        # NOTE: a full-suite run once saw this teardown stall (not reproduced alone); bound each step
        # and name the one that stalls instead of holding the suite for the whole test timeout.
        for name, step in steps:
            try:
                await asyncio.wait_for(step(), CLOSE_STEP_S)
            except TimeoutError:
                warnings.warn(f"fuzz teardown: stopping the {name} took over {CLOSE_STEP_S} s", stacklevel=1)


async def start_servers(redis_url: str, postgres_dsn: str) -> Servers:
    """Starts a no-delay simulated node, then cache, health, router (gRPC + HTTP app) and prewarm."""
    node = SimNode(NodeConfig(time_scale=0, name="fuzz-node"))
    await node.start()
    cache_cfg = make_config(max_message_bytes=MAX_MESSAGE_BYTES)
    cache = await start_cache(cache_cfg, redis_url, postgres_dsn, embedder=HashingEmbedder(384))
    nodes = [NodeSpec(id="node-1", address=node.url)]
    health = await start_health(HealthConfig(port=0, nodes=nodes, max_message_bytes=MAX_MESSAGE_BYTES))
    router_cfg = RouterConfig(
        port=0,
        http_port=0,
        health_addr=f"127.0.0.1:{health.port}",
        cache_addr=f"127.0.0.1:{cache.port}",
        nodes=[StaticNode(node_id="node-1", address=node.url)],
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_prompt_bytes=MAX_PROMPT_BYTES,
        ttft_timeout_s=2.0,
        request_timeout_s=10.0,
    )
    router = await start_router(router_cfg)
    router_server, router_port, router_health = build_server(
        router_cfg, ROUTER_NAMES, domain="router.corral", access_log=False
    )
    router_service_pb2_grpc.add_RouterServiceServicer_to_server(RouterServicer(router.core), router_server)
    await router_server.start()
    await set_serving(router_health, ROUTER_NAMES, True)
    prewarm_cfg = PrewarmConfig(
        port=0,
        health_addr=f"127.0.0.1:{health.port}",
        router_addr=f"127.0.0.1:{router_port}",
        cache_addr=f"127.0.0.1:{cache.port}",
        run_on_start=False,
        max_message_bytes=MAX_MESSAGE_BYTES,
        warm_timeout_s=5.0,
        seed_timeout_s=5.0,
        maintenance_timeout_s=5.0,
    )
    prewarm = PrewarmApp(prewarm_cfg)
    prewarm_server, prewarm_port, prewarm_health = build_server(
        prewarm_cfg, PREWARM_NAMES, domain="prewarm.corral", access_log=False
    )
    servicer = PrewarmServicer(prewarm.manager, lambda: prewarm.triggers.next_scheduled_at_s)
    prewarm_service_pb2_grpc.add_PrewarmServiceServicer_to_server(servicer, prewarm_server)
    await prewarm.start()
    await prewarm_server.start()
    await set_serving(prewarm_health, PREWARM_NAMES, True)
    return Servers(
        node=node,
        cache=cache,
        health=health,
        router=router,
        router_server=router_server,
        router_port=router_port,
        prewarm=prewarm,
        prewarm_server=prewarm_server,
        prewarm_port=prewarm_port,
        http_app=build_http_app(router.core, router_cfg),
    )
