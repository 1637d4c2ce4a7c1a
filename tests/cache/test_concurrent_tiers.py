"""Lookups that may use both tiers: the semantic query goes out with the exact GET, the exact hit wins.

Run against the session's real Redis and PostgreSQL, once with `concurrent_tiers` on and once off:
outcomes and counters must be the same either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c

from devstack._process import free_port
from services.cache.embedders import HashingEmbedder
from services.cache.server import RunningCache, start_in_process
from services.cache.stats import CacheStats
from tests.cache.helpers import gen, lookup, make_config, store
from tests.helpers.polling import wait_for

Stub = cache_service_pb2_grpc.CacheServiceStub
EMBEDDER = HashingEmbedder(384)
ENABLE = "How do I enable TLS on the nginx server?"
DISABLE = "How do I disable TLS on the nginx server?"


@pytest.fixture(params=[True, False], ids=["concurrent", "sequential"])
def concurrent(request: pytest.FixtureRequest) -> bool:
    """Whether the cache under test sends the semantic query together with the exact GET."""
    return bool(request.param)


@pytest.fixture
async def running(redis_server: object, migrated_dsn: str, concurrent: bool) -> AsyncIterator[RunningCache]:
    """A cache server over the shared stores, with concurrent tiers on or off."""
    url = redis_server.url  # type: ignore[attr-defined]
    cache = await start_in_process(
        make_config(concurrent_tiers=concurrent), url, migrated_dsn, embedder=HashingEmbedder(384)
    )
    yield cache
    await cache.stop()


@pytest.fixture
async def client(running: RunningCache) -> AsyncIterator[Stub]:
    """A client of that server."""
    async with grpc.aio.insecure_channel(running.address) as channel:
        yield cache_service_pb2_grpc.CacheServiceStub(channel)


def counting_queries(cache: RunningCache) -> list[int]:
    """Counts the semantic store's nearest-neighbour queries from now on (one list item per query)."""
    calls: list[int] = []
    real = cache.engine.semantic.nearest

    async def nearest(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    cache.engine.semantic.nearest = nearest  # type: ignore[method-assign]
    return calls


async def settled(cache: RunningCache) -> CacheStats:
    """The engine's counters once every semantic query left running by an exact hit has finished."""
    await wait_for(
        lambda: not cache.engine.moot_queries, 10, 0.01, what="the moot semantic queries finishing"
    )
    return cache.engine.stats


def with_vector(tenant: str, text: str) -> pb.LookupRequest:
    """A lookup carrying its precomputed embedding (temperature 0: both tiers)."""
    return lookup(tenant, gen(text), embedding=EMBEDDER.vector(text).tolist())


async def test_exact_hit_wins_and_the_semantic_query_it_made_moot_is_not_counted(
    running: RunningCache, client: Stub, tenant: str, concurrent: bool
) -> None:
    await client.Store(store(tenant, gen(ENABLE), b"enable"))
    await client.Store(store(tenant, gen(DISABLE), b"disable"))
    stats = await settled(running)
    before = (stats.exact.hits, stats.semantic.hits, stats.semantic.misses, stats.guard_rejections)
    queries = counting_queries(running)

    hit = await client.Lookup(with_vector(tenant, DISABLE))

    assert hit.outcome == c.CACHE_OUTCOME_EXACT_HIT and hit.entry.payload == b"disable"
    assert hit.similarity == 0.0 and hit.guard_reason == ""
    stats = await settled(running)
    # NOTE: the moot query found ENABLE (antonym) and DISABLE itself; neither is judged nor counted.
    after = (stats.exact.hits, stats.semantic.hits, stats.semantic.misses, stats.guard_rejections)
    assert after == (before[0] + 1, *before[1:])
    assert len(queries) == (1 if concurrent else 0)
    assert not running.engine.semantic_degraded


async def test_semantic_hit_and_guarded_miss_after_an_exact_miss(
    running: RunningCache, client: Stub, tenant: str
) -> None:
    await client.Store(store(tenant, gen("What is the capital city of France?"), b"Paris"))
    await client.Store(store(tenant, gen(ENABLE), b"enable"))
    stats = await settled(running)
    exact_misses, hits, misses, rejections = (
        stats.exact.misses,
        stats.semantic.hits,
        stats.semantic.misses,
        stats.guard_rejections,
    )
    queries = counting_queries(running)

    hit = await client.Lookup(with_vector(tenant, "what is the capital of France"))
    refused = await client.Lookup(with_vector(tenant, DISABLE))

    assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and hit.entry.payload == b"Paris"
    assert 0.8 <= hit.similarity <= 1.0
    assert refused.outcome == c.CACHE_OUTCOME_MISS and refused.guard_reason == "antonym"
    stats = await settled(running)
    assert stats.exact.misses == exact_misses + 2
    assert (stats.semantic.hits, stats.semantic.misses) == (hits + 1, misses + 1)
    assert stats.guard_rejections == rejections + 1
    assert len(queries) == 2


async def test_a_vector_that_needs_embedding_waits_for_the_exact_miss(
    running: RunningCache, client: Stub, tenant: str
) -> None:
    text = "What is the capital city of France?"
    await client.Store(store(tenant, gen(text), b"Paris", embedding=EMBEDDER.vector(text).tolist()))
    queries = counting_queries(running)

    # NOTE: no embedding in the request and none remembered for the text: an exact hit must not cost
    # an embedding call, so the semantic tier is only asked after the exact miss.
    assert (await client.Lookup(lookup(tenant, gen("What is the capital city of France?")))).outcome == (
        c.CACHE_OUTCOME_EXACT_HIT
    )
    await settled(running)
    assert queries == []
    hit = await client.Lookup(lookup(tenant, gen("what is the capital of France, please")))
    assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and len(queries) == 1


async def test_semantic_tier_answers_while_redis_is_down(
    migrated_dsn: str, concurrent: bool, tenant: str
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    cache = await start_in_process(
        make_config(concurrent_tiers=concurrent), dead_redis, migrated_dsn, embedder=HashingEmbedder(384)
    )
    try:
        async with grpc.aio.insecure_channel(cache.address) as channel:
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            stored = await stub.Store(store(tenant, gen("What is the capital city of France?"), b"Paris"))
            assert stored.stored_semantic and not stored.stored_exact
            hit = await stub.Lookup(with_vector(tenant, "what is the capital of France"))
            assert hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and hit.entry.payload == b"Paris"
            miss = await stub.Lookup(with_vector(tenant, "How tall is the Eiffel tower?"))
            assert miss.outcome == c.CACHE_OUTCOME_DEGRADED and not miss.hit
    finally:
        await cache.stop()
