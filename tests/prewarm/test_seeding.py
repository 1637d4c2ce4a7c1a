"""Cache seeding through the real router and cache (Redis + PostgreSQL): seeded queries become exact hits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from corral.v1 import (
    cache_service_pb2,
    cache_service_pb2_grpc,
    common_pb2,
    router_service_pb2,
    router_service_pb2_grpc,
)

from devstack.redis import RedisServer
from services.prewarm.app import PrewarmApp
from services.prewarm.config import PrewarmConfig
from services.prewarm.runs import Outcome, RunRequest, RunState, Step, Trigger
from sim.config import NodeConfig
from sim.node import SimNode
from tests.helpers.procs import ServiceProcess, free_port
from tests.helpers.simnodes import FAST
from tests.prewarm.conftest import collect

MODEL = "llama3.2:1b"
PROMPTS = ("How do I reset my password?", "What does HTTP error 503 mean?")
CHAT = "How do I restart the service without dropping connections?"
SEEDS = f"""
options: {{temperature: 0}}
models:
  {MODEL}:
    - {PROMPTS[0]}
    - {PROMPTS[1]}
    - messages: [{{role: user, content: "{CHAT}"}}]
"""
STORE_WAIT_S = 10.0


@dataclass
class Peers:
    node: SimNode
    router_addr: str
    cache_addr: str


@pytest.fixture
async def peers(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Peers]:
    node = SimNode(NodeConfig.model_validate({**FAST, "name": "node-1"}), admin_port=None)
    await node.start()
    cache = ServiceProcess(
        "services.cache",
        env={
            "CORRAL_CACHE__PORT": "0",
            "CORRAL_REDIS__URL": redis_server.url,
            "CORRAL_POSTGRES__DSN": migrated_dsn,
            "CORRAL_CACHE__EMBEDDER__MODEL": "nomic-embed-text:v1.5",
            "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([node.url]),
        },
    )
    router = None
    try:
        await cache.start()
        # NOTE: Redis and PostgreSQL are shared by the session; another suite may have cached the same
        # common questions, so this test starts from an empty cache.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cache.port}") as channel:
            await cache_service_pb2_grpc.CacheServiceStub(channel).Invalidate(
                cache_service_pb2.InvalidateRequest(all_tenants=True), timeout=10
            )
        router = ServiceProcess(
            "services.router",
            env={
                "CORRAL_ROUTER__PORT": "0",
                "CORRAL_ROUTER__HTTP_PORT": str(free_port()),
                "CORRAL_ROUTER__HEALTH_ADDR": "",
                "CORRAL_ROUTER__CACHE_ADDR": f"127.0.0.1:{cache.port}",
                "CORRAL_ROUTER__NODES": json.dumps([{"node_id": "node-1", "address": node.url}]),
            },
        )
        await router.start()
        yield Peers(node, f"127.0.0.1:{router.port}", f"127.0.0.1:{cache.port}")
    finally:
        if router is not None:
            await router.kill()
        await cache.kill()
        await node.stop()


def generate_count(node: SimNode) -> int:
    routes = node.stats()["requests_by_route"]
    return int(routes.get("/api/generate", 0) + routes.get("/api/chat", 0))


async def wait_for_stores(cache_addr: str, count: int) -> None:
    """Polls the cache's Stats (a separate process) until it has stored `count` exact entries."""
    async with grpc.aio.insecure_channel(cache_addr) as channel:
        stub = cache_service_pb2_grpc.CacheServiceStub(channel)
        async with asyncio.timeout(STORE_WAIT_S):
            while True:
                stats = await stub.Stats(cache_service_pb2.StatsRequest(), timeout=2)
                if stats.exact.stores >= count:
                    return
                await asyncio.sleep(0.05)


async def test_seeded_queries_become_exact_cache_hits(peers: Peers, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text(SEEDS)
    dead = f"127.0.0.1:{free_port()}"
    app = PrewarmApp(
        PrewarmConfig(
            health_addr=dead,
            router_addr=peers.router_addr,
            cache_addr=peers.cache_addr,
            seed_file=str(seeds),
            run_on_start=False,
            schedule_interval_s=0,
        )
    )
    await app.start()
    try:
        events = await collect(
            app.manager.start(RunRequest(Trigger.MANUAL, (Step.SEED_CACHE, Step.MAINTENANCE)))
        )
        seeded = [e for e in events if e.step is Step.SEED_CACHE and e.outcome is not Outcome.STARTED]
        assert [e.outcome for e in seeded] == [Outcome.OK] * 3, [e.message for e in seeded]
        assert all(e.node_id == "node-1" for e in seeded)
        [maintenance] = [e for e in events if e.step is Step.MAINTENANCE and e.outcome is not Outcome.STARTED]
        assert maintenance.outcome is Outcome.OK and "entries left" in maintenance.message
        assert generate_count(peers.node) == 3
        # NOTE: the router stores off the hot path; wait for the cache to report the three stores.
        await wait_for_stores(peers.cache_addr, 3)

        async with grpc.aio.insecure_channel(peers.router_addr) as channel:
            router = router_service_pb2_grpc.RouterServiceStub(channel)
            options = common_pb2.ModelOptions(temperature=0)
            for prompt in PROMPTS:
                reply = await router.Generate(
                    router_service_pb2.GenerateRequest(
                        spec=common_pb2.GenerateSpec(model=MODEL, prompt=prompt, options=options)
                    ),
                    timeout=10,
                )
                assert reply.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
            chat = await router.Chat(
                router_service_pb2.ChatRequest(
                    spec=common_pb2.ChatSpec(
                        model=MODEL,
                        messages=[common_pb2.ChatMessage(role="user", content=CHAT)],
                        options=options,
                    )
                ),
                timeout=10,
            )
            assert chat.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
        # The user requests were served from the cache: the node saw nothing new.
        assert generate_count(peers.node) == 3

        # A second seeding run finds every query cached and skips it.
        events = await collect(app.manager.start(RunRequest(Trigger.MANUAL, (Step.SEED_CACHE,))))
        again = [e for e in events if e.step is Step.SEED_CACHE and e.outcome is not Outcome.STARTED]
        assert [e.outcome for e in again] == [Outcome.SKIPPED] * 3
        assert all("already cached (exact_hit)" in e.message for e in again)
        assert app.manager.recent(1)[0].state is RunState.SUCCEEDED
        assert generate_count(peers.node) == 3
    finally:
        await app.close()
