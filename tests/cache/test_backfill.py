"""Answers stored while the embedder is down get their semantic entries from maintenance later.

The embedder is the Ollama embedder against a simulated node, stopped and started again on its port.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import redis.asyncio as aioredis
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c

from devstack.config import make_temp_state_dir
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from services.cache.config import EmbedderConfig
from services.cache.embedders import HashingEmbedder
from services.cache.exact_store import pending_key
from services.cache.server import RunningCache, start_in_process, warm_embedder
from sim.config import NodeConfig
from sim.node import SimNode
from tests.cache.helpers import MODEL, gen, lookup, make_config, store
from tests.helpers.polling import wait_for
from tests.helpers.procs import free_port

EMBED_MODEL = "nomic-embed-text:v1.5"
QUESTIONS = (
    "How many replicas does the cache run by default?",
    "Which port does the router's HTTP API listen on?",
    "What happens to a lookup when Redis is down?",
)


def _node(port: int) -> SimNode:
    return SimNode(NodeConfig.model_validate({"time_scale": 0.001}), port=port, admin_port=None)


@dataclass
class Setup:
    cache: RunningCache
    stub: cache_service_pb2_grpc.CacheServiceStub
    node: SimNode
    redis: aioredis.Redis
    # NOTE: answers other tests left waiting, backfilled by the fixture: the counter starts there.
    base: int

    async def stop_node(self) -> None:
        await self.node.stop()

    async def start_node(self) -> None:
        self.node = _node(self.node.port)
        await self.node.start()


@pytest.fixture
async def setup(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Setup]:
    node = _node(free_port())
    await node.start()
    embedder = EmbedderConfig(kind="ollama", model=EMBED_MODEL, dims=768, node_urls=[node.url], timeout_s=2.0)
    cache = await start_in_process(
        make_config(embedder=embedder, backfill_batch=2), redis_server.url, migrated_dsn
    )
    # NOTE: the queue is shared by the session's Redis: answers other tests left waiting go first.
    await cache.engine.backfill.run(limit=100_000)
    channel = grpc.aio.insecure_channel(cache.address)
    stub = cache_service_pb2_grpc.CacheServiceStub(channel)
    ready = Setup(cache, stub, node, aioredis.from_url(redis_server.url), cache.engine.backfill.backfilled)
    try:
        yield ready
    finally:
        await ready.redis.aclose()
        await channel.close()
        await cache.stop()
        await ready.node.stop()


async def _store_while_down(setup: Setup, tenant: str) -> list[str]:
    await setup.stub.Invalidate(pb.InvalidateRequest(tenant=tenant))
    await setup.stop_node()
    keys = []
    for question in QUESTIONS:
        stored = await setup.stub.Store(store(tenant, gen(question), question.encode()))
        assert stored.stored_exact and not stored.stored_semantic
        keys.append(stored.key)
    return keys


async def _semantic_entries(setup: Setup, tenant: str) -> int:
    return (await setup.stub.Stats(pb.StatsRequest(tenant=tenant))).semantic.entries


async def test_answers_stored_while_the_embedder_was_down_are_backfilled(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = "backfill-outage"
    keys = await _store_while_down(setup, tenant)
    backfill = setup.cache.engine.backfill
    for key in keys:
        assert await setup.redis.exists(pending_key(tenant, MODEL, key))
    assert await backfill.pending() == 3
    stats = await setup.stub.Stats(pb.StatsRequest())
    assert stats.backfill_pending == 3 and stats.backfilled == setup.base and stats.embedder_degraded
    # A paraphrase finds nothing yet: the answers have no semantic entries.
    paraphrase = gen(QUESTIONS[0] + " ")
    assert not (await setup.stub.Lookup(lookup(tenant, paraphrase))).hit

    # Maintenance while the embedder is still down leaves them waiting.
    caplog.set_level(logging.INFO, logger="services.cache.backfill")
    report = await setup.stub.RunMaintenance(pb.RunMaintenanceRequest())
    assert report.semantic_entries >= 0
    assert await backfill.pending() == 3 and backfill.backfilled == setup.base
    assert any("stopped: the embedder" in r.getMessage() for r in caplog.records)

    await setup.start_node()
    # Bounded per run: backfill_batch is 2.
    report = await setup.stub.RunMaintenance(pb.RunMaintenanceRequest())
    assert (report.backfilled, report.backfill_pending) == (2, 1)
    report = await setup.stub.RunMaintenance(pb.RunMaintenanceRequest())
    assert (report.backfilled, report.backfill_pending) == (1, 0)
    stats = await setup.stub.Stats(pb.StatsRequest())
    assert stats.backfill_pending == 0 and stats.backfilled == setup.base + 3
    for key in keys:
        assert not await setup.redis.exists(pending_key(tenant, MODEL, key))
    assert await _semantic_entries(setup, tenant) == 3

    for question in QUESTIONS:
        # NOTE: a trailing space changes the exact key but not the (stripped) question.
        hit = await setup.stub.Lookup(lookup(tenant, gen(question + " ")))
        assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT, question
        assert hit.entry.payload == question.encode()

    # Idempotent: another run writes nothing and leaves one entry per answer.
    await setup.stub.RunMaintenance(pb.RunMaintenanceRequest())
    assert backfill.backfilled == setup.base + 3 and await _semantic_entries(setup, tenant) == 3


async def test_a_backfill_never_replaces_a_newer_answer(setup: Setup) -> None:
    tenant = "backfill-newer"
    await _store_while_down(setup, tenant)
    await setup.start_node()
    # NOTE: the start-up warm-up's check: it returns once an embedding succeeded (the breaker closed).
    assert await warm_embedder(setup.cache.engine)
    # The same question answered again once the embedder is back: its semantic entry is the newer one.
    stored = await setup.stub.Store(store(tenant, gen(QUESTIONS[1]), b"newer"))
    assert stored.stored_semantic
    for _ in range(2):
        await setup.stub.RunMaintenance(pb.RunMaintenanceRequest())
    assert await setup.cache.engine.backfill.pending() == 0
    hit = await setup.stub.Lookup(lookup(tenant, gen(QUESTIONS[1] + " ")))
    assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and hit.entry.payload == b"newer"


async def test_invalidated_answers_are_not_backfilled(setup: Setup) -> None:
    tenant = "backfill-invalidated"
    keys = await _store_while_down(setup, tenant)
    await setup.stub.Invalidate(pb.InvalidateRequest(tenant=tenant))
    for key in keys:
        assert not await setup.redis.exists(pending_key(tenant, MODEL, key))
    await setup.start_node()
    for _ in range(2):
        await setup.stub.RunMaintenance(pb.RunMaintenanceRequest())
    assert setup.cache.engine.backfill.backfilled == setup.base
    assert await _semantic_entries(setup, tenant) == 0
    assert not (await setup.stub.Lookup(lookup(tenant, gen(QUESTIONS[0] + " ")))).hit


async def test_answers_stored_while_postgresql_was_down_are_backfilled(
    redis_server: RedisServer,
) -> None:
    """The semantic tier's own store down: the answers wait in Redis, not in the PostgreSQL that is down."""
    state = make_temp_state_dir("corral-cache-backfill-")
    pg = await asyncio.to_thread(PostgresServer(port=0, state_dir=state).start)
    cache = await start_in_process(make_config(), redis_server.url, pg.dsn, embedder=HashingEmbedder(384))
    channel = grpc.aio.insecure_channel(cache.address)
    stub = cache_service_pb2_grpc.CacheServiceStub(channel)
    tenant = "backfill-postgres-down"
    try:
        await asyncio.to_thread(pg.stop)
        for question in QUESTIONS[:2]:
            stored = await stub.Store(store(tenant, gen(question), question.encode()))
            assert stored.stored_exact and not stored.stored_semantic
        assert (await stub.Stats(pb.StatsRequest())).backfill_pending >= 2

        await asyncio.to_thread(pg.restart)

        async def semantic_tier_back() -> bool:
            return not (await stub.Stats(pb.StatsRequest())).semantic_degraded

        await wait_for(semantic_tier_back, 30, what="PostgreSQL back")
        report = await stub.RunMaintenance(pb.RunMaintenanceRequest())
        assert report.backfilled >= 2
        assert (await stub.Stats(pb.StatsRequest(tenant=tenant))).semantic.entries == 2
        for question in QUESTIONS[:2]:
            hit = await stub.Lookup(lookup(tenant, gen(question + " ")))
            assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and hit.entry.payload == question.encode()
    finally:
        await channel.close()
        await cache.stop()
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(state, ignore_errors=True)
