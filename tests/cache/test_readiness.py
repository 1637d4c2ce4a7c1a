"""Ready means ready: the cache reports SERVING only once its embedder has embedded a text.

The embedder is the Ollama embedder against a simulated node; "down" is a node not listening yet.
"""

from __future__ import annotations

import asyncio
import json
import logging

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.redis import RedisServer
from services.cache.config import EmbedderConfig
from services.cache.server import SERVICE_NAMES, start_in_process
from sim.config import NodeConfig
from sim.node import SimNode
from tests.cache.helpers import gen, lookup, make_config, store
from tests.helpers.procs import ServiceProcess, free_port

MODEL = "nomic-embed-text:v1.5"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def embed_calls(node: SimNode) -> int:
    return int(node.stats()["requests_by_route"].get("/api/embed", 0))


async def test_the_cache_is_not_serving_until_a_late_embedder_node_answers(
    redis_server: RedisServer, migrated_dsn: str
) -> None:
    node_port, cache_port = free_port(), free_port()
    cache = ServiceProcess(
        "services.cache",
        env={
            "CORRAL_CACHE__PORT": str(cache_port),
            "CORRAL_REDIS__URL": redis_server.url,
            "CORRAL_POSTGRES__DSN": migrated_dsn,
            "CORRAL_CACHE__EMBEDDER__MODEL": MODEL,
            "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([f"http://127.0.0.1:{node_port}"]),
            "CORRAL_CACHE__EMBEDDER__WARMUP_TIMEOUT_S": "120",
            "CORRAL_LOGGING__LEVEL": "INFO",
        },
    )
    # NOTE: start() returns at the "serving on" line, which comes only after SERVING.
    starting = asyncio.create_task(cache.start(timeout_s=120))
    node = SimNode(NodeConfig.model_validate({"time_scale": 0.001}), port=node_port, admin_port=None)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cache_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[0]), wait_for_ready=True)
            first = await asyncio.wait_for(watch.read(), 60)
            assert first.status == NOT_SERVING
            # The cache answers while it warms up: its semantic tier is degraded, its exact tier serves.
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            stats = await stub.Stats(pb.StatsRequest(), timeout=10)
            assert stats.semantic_degraded and stats.embedder_degraded and not stats.exact_degraded
            assert not starting.done()

            await node.start()
            while (update := await asyncio.wait_for(watch.read(), 60)).status != SERVING:
                assert update.status == NOT_SERVING
            assert embed_calls(node) >= 1, "SERVING before the embedder answered"
            await starting
            assert any("waiting up to 120 s for the embedder ollama:" in line for line in cache.output)
            assert any(f"embedder ollama:{MODEL} answered after" in line for line in cache.output)
            stats = await stub.Stats(pb.StatsRequest(), timeout=10)
            assert not stats.semantic_degraded and not stats.embedder_degraded
            watch.cancel()
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await cache.kill()
        await node.stop()


async def test_an_embedder_that_never_answers_leaves_the_exact_tier_serving(
    redis_server: RedisServer, migrated_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    embedder = EmbedderConfig(kind="ollama", model=MODEL, dims=768, node_urls=[dead], warmup_timeout_s=0.5)
    caplog.set_level(logging.INFO, logger="services.cache.server")
    running = await start_in_process(make_config(embedder=embedder), redis_server.url, migrated_dsn)
    try:
        assert any("did not answer within 0 s" in r.getMessage() for r in caplog.records)
        async with grpc.aio.insecure_channel(running.address) as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAMES[0])
            )
            assert check.status == SERVING
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            assert (await stub.Stats(pb.StatsRequest())).semantic_degraded
            tenant = "readiness-no-embedder"
            question = gen("Which port does the cache listen on?")
            stored = await stub.Store(store(tenant, question, b"50052"))
            assert stored.stored_exact and not stored.stored_semantic
            assert (await stub.Lookup(lookup(tenant, question))).outcome == c.CACHE_OUTCOME_EXACT_HIT
    finally:
        await running.stop()
