"""End to end with the cache: real Redis and PostgreSQL, cache, health, router and simulator processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc, common_pb2, router_service_pb2

from devstack.redis import RedisServer
from tests.helpers.polling import wait_for
from tests.router.stack import (
    Stack,
    chat_spec,
    embedder_nodes_env,
    gen_request,
    redis_cache_env,
    start_stack,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def stack(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Stack]:
    started = await start_stack(
        cache_env=redis_cache_env(redis_server.url, migrated_dsn),
        cache_env_from_nodes=embedder_nodes_env,
        # NOTE: on a loaded test machine a lookup can outlast the 15 ms default and turn a MISS into
        # DEGRADED; these tests check outcomes, not the budget.
        router_env={"CORRAL_ROUTER__LOOKUP_BUDGET_MS": "2000"},
    )
    try:
        yield started
    finally:
        await started.close()


async def stores(stack: Stack) -> int:
    assert stack.cache is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.cache.port}") as channel:
        stats = await cache_service_pb2_grpc.CacheServiceStub(channel).Stats(
            cache_service_pb2.StatsRequest(), timeout=2
        )
    return int(stats.exact.stores)


async def test_miss_is_forwarded_then_hits_without_the_nodes(stack: Stack) -> None:
    request = gen_request("what is a corral?", cache=common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_EXACT))
    first = await stack.stub.Generate(request, timeout=10)
    assert first.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS and first.routing.node_id
    await wait_for(lambda: _at_least(stores(stack), 1), timeout_s=10)
    before = await stack.total_inference_requests()

    second = await stack.stub.Generate(request, timeout=10)
    assert second.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
    assert second.routing.node_id == "" and second.routing.attempts == 0
    assert second.response == first.response and second.model == first.model

    # A streaming call for the same request replays the cached answer as a stream.
    chunks = [
        c
        async for c in stack.stub.GenerateStream(
            router_service_pb2.GenerateStreamRequest(spec=request.spec, cache=request.cache), timeout=10
        )
    ]
    assert "".join(c.response for c in chunks) == first.response
    assert chunks[-1].done and chunks[-1].routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
    assert await stack.total_inference_requests() == before


async def test_streamed_miss_is_stored_and_replayed(stack: Stack) -> None:
    spec = chat_spec(("user", "stream me an answer"))
    live = [
        c async for c in stack.stub.ChatStream(router_service_pb2.ChatStreamRequest(spec=spec), timeout=10)
    ]
    assert live[-1].routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    await wait_for(lambda: _at_least(stores(stack), 1), timeout_s=10)
    replay = [
        c async for c in stack.stub.ChatStream(router_service_pb2.ChatStreamRequest(spec=spec), timeout=10)
    ]
    assert replay[-1].routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
    text = "".join(c.message.content for c in live)
    assert "".join(c.message.content for c in replay) == text
    unary = await stack.stub.Chat(router_service_pb2.ChatRequest(spec=spec), timeout=10)
    assert unary.message.content == text and unary.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT


async def test_identical_concurrent_misses_go_upstream_once(stack: Stack) -> None:
    for node in stack.nodes:
        await stack.set_fault(node.node_id, latency_ms=300)
    before = await stack.total_inference_requests()
    request = gen_request("the same question at the same time")
    replies = await asyncio.gather(*(stack.stub.Generate(request, timeout=10) for _ in range(8)))
    assert len({r.response for r in replies}) == 1
    outcomes = [r.routing.cache_outcome for r in replies]
    assert outcomes.count(common_pb2.CACHE_OUTCOME_COALESCED) >= 6, outcomes
    assert await stack.total_inference_requests() - before <= 2


async def test_forwarding_continues_when_the_cache_is_down(stack: Stack) -> None:
    assert stack.cache is not None
    await stack.cache.kill()
    for i in range(5):
        reply = await stack.stub.Generate(gen_request(f"no cache {i}"), timeout=10)
        assert reply.response and reply.routing.cache_outcome == common_pb2.CACHE_OUTCOME_DEGRADED


async def _at_least(count: object, n: int) -> bool:
    return await count >= n  # type: ignore[misc, operator]
