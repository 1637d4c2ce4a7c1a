"""Fail-open: stores stopped mid-test turn lookups into fast misses, and hits return after a restart.

These tests start Redis and PostgreSQL of their own (the session's shared servers must stay up).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.config import make_temp_state_dir
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from services.cache.embedders import HashingEmbedder
from services.cache.server import start_in_process
from tests.cache.helpers import gen, lookup, make_config, store
from tests.helpers.polling import wait_for
from tests.helpers.procs import ServiceProcess, free_port

TENANT = "fail-open"
LOOKUP_TIMEOUT_S = 0.5


@pytest.fixture
def own_state() -> Iterator[Path]:
    """A state folder for this test's own servers."""
    state = make_temp_state_dir("corral-cache-failopen-")
    yield state
    shutil.rmtree(state, ignore_errors=True)


async def test_stores_stopped_mid_test_give_fast_misses_then_hits_again(own_state: Path) -> None:
    redis_server = await asyncio.to_thread(RedisServer(port=0, state_dir=own_state).start)
    pg = await asyncio.to_thread(PostgresServer(port=0, state_dir=own_state).start)
    running = await start_in_process(
        make_config(breaker_open_ms=1000.0), redis_server.url, pg.dsn, embedder=HashingEmbedder(384)
    )
    channel = grpc.aio.insecure_channel(running.address)
    stub = cache_service_pb2_grpc.CacheServiceStub(channel)
    engine = running.engine
    question = gen("What is the capital city of France?")
    paraphrase = gen("what is the capital of France")
    exact_only = c.CachePolicy(mode=c.CACHE_MODE_EXACT)
    try:
        await stub.Store(store(TENANT, question, b"Paris"))
        assert (await stub.Lookup(lookup(TENANT, question))).outcome == c.CACHE_OUTCOME_EXACT_HIT
        assert (await stub.Lookup(lookup(TENANT, paraphrase))).outcome == c.CACHE_OUTCOME_SEMANTIC_HIT

        await asyncio.to_thread(redis_server.stop)
        outcomes = [
            (await stub.Lookup(lookup(TENANT, question, policy=exact_only), timeout=LOOKUP_TIMEOUT_S)).outcome
            for _ in range(50)
        ]
        assert set(outcomes) == {c.CACHE_OUTCOME_DEGRADED}
        # NOTE: the breaker keeps lookups away from the dead Redis: a trial call per open period, not 50.
        assert engine.exact_breaker.trials <= 5
        served = await stub.Lookup(lookup(TENANT, question), timeout=LOOKUP_TIMEOUT_S)
        assert served.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT, "the semantic tier still answers"
        assert not (await stub.Store(store(TENANT, gen("x"), b"y"))).stored_exact
        assert (await stub.Stats(pb.StatsRequest())).exact_degraded

        await asyncio.to_thread(pg.stop)
        outcomes = [
            (await stub.Lookup(lookup(TENANT, paraphrase), timeout=LOOKUP_TIMEOUT_S)).outcome
            for _ in range(50)
        ]
        assert set(outcomes) == {c.CACHE_OUTCOME_DEGRADED}
        assert engine.semantic_breaker.trials <= 5
        stats = await stub.Stats(pb.StatsRequest())
        assert stats.exact_degraded and stats.semantic_degraded and stats.degraded_lookups >= 100

        await asyncio.to_thread(redis_server.restart)
        await asyncio.to_thread(pg.restart)

        async def semantic_hits_again() -> bool:
            reply = await stub.Lookup(lookup(TENANT, paraphrase), timeout=LOOKUP_TIMEOUT_S)
            return reply.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT

        await wait_for(semantic_hits_again, 20, what="semantic hit after PostgreSQL restart (data kept)")

        async def exact_is_back() -> bool:
            return not (await stub.Stats(pb.StatsRequest())).exact_degraded

        await wait_for(exact_is_back, 20, what="Redis back")
        # NOTE: the local Redis keeps no data across restarts, so the answer is stored again.
        assert (await stub.Store(store(TENANT, question, b"Paris"))).stored_exact
        assert (await stub.Lookup(lookup(TENANT, question))).outcome == c.CACHE_OUTCOME_EXACT_HIT
        assert not (await stub.Stats(pb.StatsRequest())).semantic_degraded
    finally:
        await channel.close()
        await running.stop()
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(pg.stop)


@pytest.fixture
async def cache_process_without_stores() -> AsyncIterator[tuple[ServiceProcess, int, int]]:
    """The cache service as a process, pointed at a Redis and a PostgreSQL that are not running yet."""
    redis_port, pg_port = free_port(), free_port()
    proc = ServiceProcess(
        "services.cache",
        env={
            "CORRAL_CACHE__PORT": "0",
            "CORRAL_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0",
            "CORRAL_POSTGRES__DSN": f"postgresql://corral@127.0.0.1:{pg_port}/corral",
            "CORRAL_CACHE__EMBEDDER__KIND": "hashing",
            "CORRAL_CACHE__EMBEDDER__DIMS": "384",
            "CORRAL_CACHE__RECOVERY_INTERVAL_S": "0.1",
        },
    )
    await proc.start()
    yield proc, redis_port, pg_port
    await proc.terminate()


async def test_starts_serving_and_degraded_without_stores_then_recovers(
    cache_process_without_stores: tuple[ServiceProcess, int, int], own_state: Path
) -> None:
    proc, redis_port, pg_port = cache_process_without_stores
    async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service="corral.v1.CacheService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = cache_service_pb2_grpc.CacheServiceStub(channel)
        reply = await stub.Lookup(lookup(TENANT, gen("Anything?")), timeout=LOOKUP_TIMEOUT_S)
        assert not reply.hit and reply.outcome == c.CACHE_OUTCOME_DEGRADED
        stats = await stub.Stats(pb.StatsRequest())
        assert stats.exact_degraded and stats.semantic_degraded

        redis_server = await asyncio.to_thread(RedisServer(port=redis_port, state_dir=own_state).start)
        pg = await asyncio.to_thread(PostgresServer(port=pg_port, state_dir=own_state).start)
        try:

            async def healthy() -> bool:
                stats = await stub.Stats(pb.StatsRequest())
                return not stats.exact_degraded and not stats.semantic_degraded

            await wait_for(healthy, 20, what="both tiers up (migrations applied by the service)")
            stored = await stub.Store(store(TENANT, gen("Anything?"), b"yes"))
            assert stored.stored_exact and stored.stored_semantic
            assert (await stub.Lookup(lookup(TENANT, gen("anything")))).hit
        finally:
            await asyncio.to_thread(redis_server.stop)
            await asyncio.to_thread(pg.stop)
