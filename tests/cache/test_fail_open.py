"""Fail-open: stores stopped mid-test turn lookups into fast misses, and hits return after a restart.

These tests start Redis and PostgreSQL of their own (the session's shared servers must stay up). Redis
requires a password, as in the deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
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
PASSWORD = secrets.token_urlsafe(24)


@pytest.fixture
def own_state() -> Iterator[Path]:
    """A state folder for this test's own servers."""
    state = make_temp_state_dir("corral-cache-failopen-")
    yield state
    shutil.rmtree(state, ignore_errors=True)


async def test_stores_stopped_mid_test_give_fast_misses_then_hits_again(own_state: Path) -> None:
    redis_server = await asyncio.to_thread(RedisServer(port=0, state_dir=own_state, password=PASSWORD).start)
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
async def cache_process_without_stores(tmp_path: Path) -> AsyncIterator[tuple[ServiceProcess, int, int]]:
    """The cache service as a process, pointed at a Redis and a PostgreSQL that are not running yet.

    The Redis password comes from a file, as in the deployments.
    """
    redis_port, pg_port = free_port(), free_port()
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    proc = ServiceProcess(
        "services.cache",
        env={
            "CORRAL_CACHE__PORT": "0",
            "CORRAL_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0",
            "CORRAL_REDIS__PASSWORD_FILE": str(password_file),
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

        redis_server = RedisServer(port=redis_port, state_dir=own_state, password=PASSWORD)
        pg = PostgresServer(port=pg_port, state_dir=own_state)
        try:
            # NOTE: started inside the try, so a store that fails to start never leaves the other running.
            await asyncio.to_thread(redis_server.start)
            await asyncio.to_thread(pg.start)

            async def healthy() -> bool:
                stats = await stub.Stats(pb.StatsRequest())
                return not stats.exact_degraded and not stats.semantic_degraded

            await wait_for(healthy, 20, what="both tiers up (migrations applied by the service)")
            stored = await stub.Store(store(TENANT, gen("Anything?"), b"yes"))
            assert stored.stored_exact and stored.stored_semantic
            assert (await stub.Lookup(lookup(TENANT, gen("anything")))).hit
        finally:
            for server in (redis_server, pg):
                if server.pid is not None:
                    await asyncio.to_thread(server.stop)


async def test_redis_dropping_connections_mid_run_fails_open(own_state: Path) -> None:
    """Redis kills the cache's connections, then refuses its password for a while: lookups and stores
    answer (a hit, a miss or degraded), never an error, and hits return once Redis lets the cache in."""
    redis_server = await asyncio.to_thread(RedisServer(port=0, state_dir=own_state, password=PASSWORD).start)
    running = await start_in_process(
        make_config(),
        f"redis://127.0.0.1:{redis_server.port}/0",
        f"postgresql://corral@127.0.0.1:{free_port()}/corral",
        embedder=HashingEmbedder(384),
        redis_password=PASSWORD,
    )
    admin = aioredis.Redis.from_url(redis_server.url)
    channel = grpc.aio.insecure_channel(running.address)
    stub = cache_service_pb2_grpc.CacheServiceStub(channel)
    question = gen("How far is the Moon?")
    exact_only = c.CachePolicy(mode=c.CACHE_MODE_EXACT)
    answers = {c.CACHE_OUTCOME_EXACT_HIT, c.CACHE_OUTCOME_MISS, c.CACHE_OUTCOME_DEGRADED}

    async def exact_hit() -> bool:
        reply = await stub.Lookup(lookup(TENANT, question, policy=exact_only), timeout=LOOKUP_TIMEOUT_S)
        return reply.outcome == c.CACHE_OUTCOME_EXACT_HIT

    async def lookups_while(disturb: asyncio.Task[None]) -> set[int]:
        """Lookups and stores until `disturb` ends; every one must answer (an RPC error fails the test)."""
        seen: set[int] = set()
        while not disturb.done():
            reply = await stub.Lookup(lookup(TENANT, question, policy=exact_only), timeout=LOOKUP_TIMEOUT_S)
            seen.add(reply.outcome)
            await stub.Store(store(TENANT, gen("another question"), b"x"), timeout=LOOKUP_TIMEOUT_S)
        await disturb
        return seen

    async def kill_connections(rounds: int) -> None:
        for _ in range(rounds):
            # NOTE: SKIPME (the default) keeps this admin connection; every other client is dropped.
            await admin.client_kill_filter(_type="normal")
            # NOTE: the pause is the disturbance's rhythm: the cache reconnects between two rounds,
            # so each round drops connections in use, not only ones already dead.
            await asyncio.sleep(0.02)

    async def refuse_for(seconds: float) -> None:
        await admin.config_set("requirepass", "another-password")
        await admin.client_kill_filter(_type="normal")
        # NOTE: the outage's length is the thing: lookups run against the refusing Redis meanwhile.
        await asyncio.sleep(seconds)
        await admin.config_set("requirepass", PASSWORD)

    try:
        assert (await stub.Store(store(TENANT, question, b"384,400 km"))).stored_exact
        assert await exact_hit()

        seen = await lookups_while(asyncio.create_task(kill_connections(50)))
        assert seen <= answers, seen
        await wait_for(exact_hit, 20, what="exact hits after Redis dropped the connections")

        # Mid-run, a refused password is an outage like any other: degraded answers, then recovery.
        seen = await lookups_while(asyncio.create_task(refuse_for(1.0)))
        assert seen <= answers and c.CACHE_OUTCOME_DEGRADED in seen, seen
        await wait_for(exact_hit, 20, what="exact hits once Redis takes the password again")
        assert not (await stub.Stats(pb.StatsRequest())).exact_degraded
    finally:
        await channel.close()
        await running.stop()
        with contextlib.suppress(Exception):
            await admin.aclose()
        await asyncio.to_thread(redis_server.stop)
