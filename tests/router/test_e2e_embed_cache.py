"""The embedding cache end to end: router, cache (real Redis and PostgreSQL), health and simulated nodes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc, common_pb2, router_service_pb2

from devstack.redis import RedisServer
from tests.helpers.polling import wait_for
from tests.helpers.procs import free_port
from tests.router.stack import (
    EMBED_MODEL,
    Stack,
    embedder_nodes_env,
    embedding_vectors,
    node_embeds,
    redis_cache_env,
    start_stack,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.asyncio(loop_scope="module")]

BYPASS = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_BYPASS)
REFRESH = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_REFRESH)


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()


async def _start(redis_server: RedisServer, migrated_dsn: str, http_port: int) -> Stack:
    return await start_stack(
        node_count=2,
        cache_env=redis_cache_env(redis_server.url, migrated_dsn),
        cache_env_from_nodes=embedder_nodes_env,
        # NOTE: outcomes, not the lookup budget, are under test (a loaded machine may be slow).
        router_env={"CORRAL_ROUTER__LOOKUP_BUDGET_MS": "2000", "CORRAL_ROUTER__HTTP_PORT": str(http_port)},
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(redis_server: RedisServer, migrated_dsn: str, http_port: int) -> AsyncIterator[Stack]:
    """The module's stack: each test embeds texts of its own and compares counters before and after."""
    started = await _start(redis_server, migrated_dsn, http_port)
    try:
        yield started
    finally:
        await started.close()


@pytest_asyncio.fixture(loop_scope="module")
async def own_stack(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Stack]:
    """A stack of the test's own, for a test that stops its cache."""
    started = await _start(redis_server, migrated_dsn, free_port())
    try:
        yield started
    finally:
        await started.close()


def texts(n: int) -> list[str]:
    """Texts no other test embeds (the tests share one Redis and, with auth off, one tenant)."""
    tag = uuid.uuid4().hex[:8]
    return [
        f"chunk {i} of document {tag}: the pump's seal is replaced every {i + 2} months" for i in range(n)
    ]


def embed(inputs: list[str], policy: common_pb2.CachePolicy | None = None) -> router_service_pb2.EmbedRequest:
    return router_service_pb2.EmbedRequest(model=EMBED_MODEL, inputs=inputs, cache=policy)


async def cache_stats(stack: Stack) -> cache_service_pb2.StatsResponse:
    assert stack.cache is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.cache.port}") as channel:
        stats: cache_service_pb2.StatsResponse = await cache_service_pb2_grpc.CacheServiceStub(channel).Stats(
            cache_service_pb2.StatsRequest(), timeout=2
        )
    return stats


async def stored_at_least(stack: Stack, n: int) -> bool:
    return (await cache_stats(stack)).embeddings.stores >= n


async def test_partial_hits_send_only_the_misses_and_keep_input_order(stack: Stack) -> None:
    a, b, c, d, e = texts(5)
    expected = embedding_vectors(await stack.stub.Embed(embed([a, b, c, d, e], BYPASS), timeout=10))
    before_stores = (await cache_stats(stack)).embeddings.stores
    first = await stack.stub.Embed(embed([b, d, a]), timeout=10)
    assert first.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    assert embedding_vectors(first) == [expected[1], expected[3], expected[0]]
    await wait_for(lambda: stored_at_least(stack, before_stores + 3), timeout_s=10)

    only_misses = await stack.stub.Embed(embed([c, e], BYPASS), timeout=10)
    stats_before = await cache_stats(stack)
    calls_before = await node_embeds(stack)
    mixed = await stack.stub.Embed(embed([a, b, c, d, e]), timeout=10)
    assert embedding_vectors(mixed) == expected
    assert await node_embeds(stack) - calls_before == 1
    # NOTE: the node saw the two missing texts only (the simulator counts the tokens it embedded).
    assert mixed.prompt_eval_count == only_misses.prompt_eval_count
    assert mixed.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    stats_after = await cache_stats(stack)
    assert stats_after.embeddings.hits - stats_before.embeddings.hits == 3
    assert stats_after.embeddings.misses - stats_before.embeddings.misses == 2
    assert stats_after.exact.hits == stats_before.exact.hits

    await wait_for(lambda: stored_at_least(stack, before_stores + 5), timeout_s=10)
    calls_before = await node_embeds(stack)
    cached = await stack.stub.Embed(embed([e, a, c]), timeout=10)
    assert embedding_vectors(cached) == [expected[4], expected[0], expected[2]]
    assert cached.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
    assert cached.routing.node_id == "" and cached.routing.attempts == 0
    assert await node_embeds(stack) == calls_before


async def test_other_dimensions_keep_their_own_vectors(stack: Stack) -> None:
    # NOTE: the options' part of the key is checked on the cache itself (tests/cache/test_embeddings.py).
    (text,) = texts(1)
    stores = (await cache_stats(stack)).embeddings.stores
    full = await stack.stub.Embed(embed([text]), timeout=10)
    await wait_for(lambda: stored_at_least(stack, stores + 1), timeout_s=10)
    short = router_service_pb2.EmbedRequest(model=EMBED_MODEL, inputs=[text], dimensions=8)
    reply = await stack.stub.Embed(short, timeout=10)
    assert len(reply.embeddings[0].values) == 8 != len(full.embeddings[0].values)
    assert reply.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS


async def test_bypass_neither_looks_up_nor_stores_and_refresh_stores(stack: Stack) -> None:
    (text,) = texts(1)
    stores = (await cache_stats(stack)).embeddings.stores
    bypassed = await stack.stub.Embed(embed([text], BYPASS), timeout=10)
    assert bypassed.routing.cache_outcome == common_pb2.CACHE_OUTCOME_BYPASS and bypassed.routing.node_id
    again = await stack.stub.Embed(embed([text]), timeout=10)
    assert again.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    await wait_for(lambda: stored_at_least(stack, stores + 1), timeout_s=10)
    hit = await stack.stub.Embed(embed([text]), timeout=10)
    assert hit.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
    calls = await node_embeds(stack)
    refreshed = await stack.stub.Embed(embed([text], REFRESH), timeout=10)
    assert refreshed.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS and refreshed.routing.node_id
    assert await node_embeds(stack) == calls + 1
    await wait_for(lambda: stored_at_least(stack, stores + 2), timeout_s=10)
    assert embedding_vectors(refreshed) == embedding_vectors(hit)


async def post(
    stack: Stack, port: int, path: str, body: dict[str, Any], mode: str | None = None
) -> tuple[Any, str]:
    headers = {"X-Corral-Cache-Mode": mode} if mode else {}
    assert stack.http is not None
    async with stack.http.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(), resp.headers.get("X-Corral-Cache", "")


async def test_every_http_embedding_endpoint_uses_the_cache(stack: Stack, http_port: int) -> None:
    one, two, three = texts(3)
    stores = (await cache_stats(stack)).embeddings.stores
    reply, outcome = await post(stack, http_port, "/api/embed", {"model": EMBED_MODEL, "input": [one, two]})
    assert outcome == "miss"
    await wait_for(lambda: stored_at_least(stack, stores + 2), timeout_s=10)
    again, outcome = await post(stack, http_port, "/api/embed", {"model": EMBED_MODEL, "input": [two, one]})
    assert outcome == "exact-hit" and again["embeddings"] == reply["embeddings"][::-1]
    _, outcome = await post(
        stack, http_port, "/api/embed", {"model": EMBED_MODEL, "input": [one]}, mode="bypass"
    )
    assert outcome == "bypass"
    openai, outcome = await post(stack, http_port, "/v1/embeddings", {"model": EMBED_MODEL, "input": [one]})
    assert outcome == "exact-hit"
    assert openai["data"][0]["embedding"] == pytest.approx(reply["embeddings"][0])
    _, outcome = await post(stack, http_port, "/api/embeddings", {"model": EMBED_MODEL, "prompt": three})
    assert outcome == "miss"
    await wait_for(lambda: stored_at_least(stack, stores + 3), timeout_s=10)
    _, outcome = await post(stack, http_port, "/api/embeddings", {"model": EMBED_MODEL, "prompt": three})
    assert outcome == "exact-hit"


async def test_embeddings_are_computed_when_the_cache_is_down(own_stack: Stack) -> None:
    assert own_stack.cache is not None
    await own_stack.cache.kill()
    for text in texts(3):
        reply = await own_stack.stub.Embed(embed([text]), timeout=10)
        assert reply.embeddings[0].values and reply.routing.node_id
        assert reply.routing.cache_outcome == common_pb2.CACHE_OUTCOME_DEGRADED
