"""A live local stack for the HTTP and CLI tests: simulator nodes, health, cache, router (+HTTP), prewarm."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc, health_service_pb2, health_service_pb2_grpc

from tests.helpers.procs import ROOT, ServiceProcess, free_port
from tests.router.stack import FAST_HEALTH_ENV, SimProcess, nodes_json, start_sims

EMBED_MODEL = "nomic-embed-text:v1.5"


def _router_module() -> str:
    # NOTE: the router serves the HTTP API itself once server.py starts it; until then a test
    # launcher starts the same RouterCore with the HTTP API beside it.
    text = (ROOT / "services" / "router" / "server.py").read_text()
    return "services.router" if "start_http_server" in text else "tests.http.router_main"


@dataclass
class LiveStack:
    """The processes of a live stack and their addresses."""

    nodes: list[SimProcess]
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    http_port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def addr(self, service: str) -> str:
        return f"127.0.0.1:{self.procs[service].port}"

    def cli_env(self) -> dict[str, str]:
        """CORRAL_*_ADDR variables pointing the CLI at this stack."""
        return {f"CORRAL_{name.upper()}_ADDR": self.addr(name) for name in self.procs}

    def node(self, node_id: str) -> SimProcess:
        return next(n for n in self.nodes if n.node_id == node_id)

    async def cache_stats(self) -> cache_service_pb2.StatsResponse:
        async with grpc.aio.insecure_channel(self.addr("cache")) as channel:
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            stats: cache_service_pb2.StatsResponse = await stub.Stats(
                cache_service_pb2.StatsRequest(), timeout=5
            )
            return stats

    async def drain(self, node_ids: list[str], drained: bool) -> None:
        async with grpc.aio.insecure_channel(self.addr("health")) as channel:
            stub = health_service_pb2_grpc.HealthServiceStub(channel)
            for node_id in node_ids:
                if drained:
                    await stub.DrainNode(health_service_pb2.DrainNodeRequest(node_id=node_id), timeout=5)
                else:
                    await stub.UndrainNode(health_service_pb2.UndrainNodeRequest(node_id=node_id), timeout=5)

    async def close(self) -> None:
        procs = list(self.procs.values()) + list({id(n.proc): n.proc for n in self.nodes}.values())
        await asyncio.gather(*(p.kill() for p in procs), return_exceptions=True)


async def start_live_stack(
    *,
    redis_url: str,
    postgres_dsn: str,
    fleet_nodes: int = 3,
    solo_time_scales: tuple[float, ...] = (),
    prewarm: bool = False,
    seed_file: Path | None = None,
    fleet_models: str | None = None,
) -> LiveStack:
    """Starts the nodes, then health and cache, then the router (with HTTP), then prewarm.

    `fleet_models` (comma-separated) replaces the fleet nodes' three default models.
    """
    groups = [start_sims(fleet_nodes, 0.01, 1, 1, fleet_models)]
    groups += [start_sims(1, s, fleet_nodes + 1 + i, 100 + i) for i, s in enumerate(solo_time_scales)]
    nodes = [n for group in await asyncio.gather(*groups) for n in group]
    stack = LiveStack(nodes=nodes)
    try:
        stack.procs["health"] = ServiceProcess(
            "services.health",
            env={
                "CORRAL_HEALTH__PORT": "0",
                "CORRAL_HEALTH__NODES": nodes_json(nodes, "id"),
                **FAST_HEALTH_ENV,
            },
        )
        stack.procs["cache"] = ServiceProcess(
            "services.cache",
            env={
                "CORRAL_CACHE__PORT": "0",
                "CORRAL_REDIS__URL": redis_url,
                "CORRAL_POSTGRES__DSN": postgres_dsn,
                "CORRAL_CACHE__EMBEDDER__MODEL": EMBED_MODEL,
                "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([n.url for n in nodes[:fleet_nodes]]),
            },
        )
        await asyncio.gather(stack.procs["health"].start(), stack.procs["cache"].start())
        stack.http_port = free_port()
        stack.procs["router"] = await ServiceProcess(
            _router_module(),
            env={
                "CORRAL_ROUTER__PORT": "0",
                "CORRAL_ROUTER__HTTP_PORT": str(stack.http_port),
                "CORRAL_ROUTER__HEALTH_ADDR": stack.addr("health"),
                "CORRAL_ROUTER__CACHE_ADDR": stack.addr("cache"),
                "CORRAL_ROUTER__NODES": "[]",
                "CORRAL_ROUTER__TTFT_TIMEOUT_S": "2.0",
                "CORRAL_ROUTER__OUTCOME_FLUSH_MS": "20",
                # NOTE: generous lookup budgets, as in the other end-to-end stacks: on a loaded test
                # machine a lookup can outlast the 15 ms (exact) or 250 ms (semantic, which embeds on
                # a node first) defaults and turn a hit or a miss into DEGRADED; these tests check
                # outcomes, not the budget (bench/router_overhead.py measures the lookup's cost).
                "CORRAL_ROUTER__LOOKUP_BUDGET_MS": "2000",
                "CORRAL_ROUTER__SEMANTIC_LOOKUP_BUDGET_MS": "5000",
            },
        ).start()
        if prewarm:
            env = {
                "CORRAL_PREWARM__PORT": "0",
                "CORRAL_PREWARM__HEALTH_ADDR": stack.addr("health"),
                "CORRAL_PREWARM__ROUTER_ADDR": stack.addr("router"),
                "CORRAL_PREWARM__CACHE_ADDR": stack.addr("cache"),
                "CORRAL_PREWARM__RUN_ON_START": "false",
                "CORRAL_PREWARM__SCHEDULE_INTERVAL_S": "0",
                "CORRAL_PREWARM__MODELS": json.dumps([{"name": "llama3.2:1b"}]),
            }
            if seed_file is not None:
                env["CORRAL_PREWARM__SEED_FILE"] = str(seed_file)
            stack.procs["prewarm"] = await ServiceProcess("services.prewarm", env=env).start()
        return stack
    except BaseException:
        await stack.close()
        raise
