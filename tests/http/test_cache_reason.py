"""Why each answer missed or skipped a cache tier, end to end: `X-Corral-Cache-Reason` on the HTTP API
and `RoutingInfo.cache_reason` on gRPC, through a router, a cache with an operator's semantic policy
(real Redis and PostgreSQL), health and simulated nodes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc, common_pb2

from devstack.redis import RedisServer
from tests.helpers.polling import wait_for
from tests.helpers.procs import free_port
from tests.router.stack import MODEL, Stack, embedder_nodes_env, gen_request, redis_cache_env, start_stack

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

# NOTE: the RAG setting docs/cache.md recommends, for the stack's chat model.
POLICY_ENV = {"CORRAL_CACHE__SEMANTIC_POLICY__MODELS": '{"llama3.2:1b": {max_temperature: 0.3}}'}
SKIPPED_UNSET = (
    "exact miss; semantic skipped: temperature unset (0.8) above policy max 0.3 (model llama3.2:1b)"
)


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(redis_server: RedisServer, migrated_dsn: str, http_port: int) -> AsyncIterator[Stack]:
    """The module's stack; each test asks questions of its own (the tests share one tenant)."""
    started = await start_stack(
        node_count=2,
        cache_env={**redis_cache_env(redis_server.url, migrated_dsn), **POLICY_ENV},
        cache_env_from_nodes=embedder_nodes_env,
        # NOTE: reasons, not the lookup budgets, are under test (a loaded machine may be slow).
        router_env={
            "CORRAL_ROUTER__LOOKUP_BUDGET_MS": "2000",
            "CORRAL_ROUTER__SEMANTIC_LOOKUP_BUDGET_MS": "2000",
            "CORRAL_ROUTER__HTTP_PORT": str(http_port),
        },
    )
    try:
        yield started
    finally:
        await started.close()


def _tag() -> str:
    return uuid.uuid4().hex[:8]


async def _stores(stack: Stack) -> int:
    assert stack.cache is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.cache.port}") as channel:
        stats = await cache_service_pb2_grpc.CacheServiceStub(channel).Stats(
            cache_service_pb2.StatsRequest(), timeout=5
        )
    return int(stats.exact.stores)


async def _stored_after(stack: Stack, before: int) -> None:
    async def more() -> bool:
        return await _stores(stack) > before

    await wait_for(more, timeout_s=10)


async def _post(
    stack: Stack, port: int, path: str, body: dict[str, Any], mode: str | None = None
) -> tuple[str, str]:
    """(X-Corral-Cache, X-Corral-Cache-Reason) of a successful call."""
    headers = {"X-Corral-Cache-Mode": mode} if mode else {}
    assert stack.http is not None
    async with stack.http.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
        return resp.headers.get("X-Corral-Cache", ""), resp.headers.get("X-Corral-Cache-Reason", "")


async def test_generate_reports_skip_then_exact_hit(stack: Stack, http_port: int) -> None:
    body = {"model": MODEL, "prompt": f"what does a corral hold {_tag()}", "stream": False}
    before = await _stores(stack)
    assert await _post(stack, http_port, "/api/generate", body) == ("miss", SKIPPED_UNSET)
    await _stored_after(stack, before)
    assert await _post(stack, http_port, "/api/generate", body) == ("exact-hit", "exact hit")
    assert await _post(stack, http_port, "/api/generate", body, mode="bypass") == (
        "bypass",
        "bypass requested",
    )


async def test_chat_under_the_ceiling_hits_a_paraphrase(stack: Stack, http_port: int) -> None:
    tag = _tag()

    def chat(question: str) -> dict[str, Any]:
        return {
            "model": MODEL,
            "messages": [{"role": "user", "content": question}],
            "options": {"temperature": 0.3},
            "stream": False,
        }

    before = await _stores(stack)
    first = await _post(stack, http_port, "/api/chat", chat(f"What is the capital of France? {tag}"))
    assert first == ("miss", "exact miss; semantic miss: no stored entry")
    await _stored_after(stack, before)
    outcome, reason = await _post(stack, http_port, "/api/chat", chat(f"what is the capital of France {tag}"))
    assert outcome == "semantic-hit" and reason.startswith("exact miss; semantic hit: similarity ")

    warmer = chat(f"what is the capital of France {tag}")
    warmer["options"] = {"temperature": 0.31}
    assert await _post(stack, http_port, "/api/chat", warmer) == (
        "miss",
        "exact miss; semantic skipped: temperature 0.31 above policy max 0.3 (model llama3.2:1b)",
    )


async def test_openai_chat_reports_its_temperature(stack: Stack, http_port: int) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"name a knot {_tag()}"}]}
    # NOTE: the OpenAI layer's temperature defaults to 1.0, as in Ollama's compatibility layer.
    assert await _post(stack, http_port, "/v1/chat/completions", body) == (
        "miss",
        "exact miss; semantic skipped: temperature 1 above policy max 0.3 (model llama3.2:1b)",
    )


async def test_grpc_routing_info_carries_the_reason(stack: Stack) -> None:
    tag = _tag()
    cold = await stack.stub.Generate(
        gen_request(f"how long is a furlong {tag}", options=common_pb2.ModelOptions(temperature=0.3)),
        timeout=10,
    )
    assert cold.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    assert cold.routing.cache_reason == "exact miss; semantic miss: no stored entry"
    warm = await stack.stub.Generate(gen_request(f"how wide is a furlong {tag}"), timeout=10)
    assert warm.routing.cache_reason == SKIPPED_UNSET
    exact = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_EXACT)
    asked = await stack.stub.Generate(gen_request(f"how tall is a furlong {tag}", cache=exact), timeout=10)
    assert asked.routing.cache_reason == "exact miss; semantic skipped: exact mode requested"


@pytest_asyncio.fixture(loop_scope="module")
async def slow_embedder_stack(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Stack]:
    """A stack of its own whose cache embeds on a solo node that answers after 400 ms."""
    started = await start_stack(
        node_count=1,
        solo_time_scales=(0.01,),
        cache_env={
            **redis_cache_env(redis_server.url, migrated_dsn),
            **POLICY_ENV,
            # NOTE: the cache answers a lookup cut short by its deadline well before the router gives up.
            "CORRAL_CACHE__DEADLINE_MARGIN_MS": "60",
        },
        cache_env_from_nodes=lambda nodes: embedder_nodes_env(nodes[-1:]),
        router_env={
            "CORRAL_ROUTER__LOOKUP_BUDGET_MS": "150",
            "CORRAL_ROUTER__SEMANTIC_LOOKUP_BUDGET_MS": "5000",
        },
    )
    try:
        await started.set_fault(started.nodes[-1].node_id, latency_ms=400)
        yield started
    finally:
        await started.close()


async def test_the_router_learns_which_lookups_may_embed(slow_embedder_stack: Stack) -> None:
    """The policy lets the semantic tier answer temperature 0.3, which the router's own rule (temperature
    0 only) does not know: once the cache has reported the policy, such lookups get the semantic lookup
    budget, long enough for the 400 ms embedding."""
    stack = slow_embedder_stack
    tag = _tag()
    options = common_pb2.ModelOptions(temperature=0.3)
    first = await stack.stub.Generate(gen_request(f"first question {tag}", options=options), timeout=10)
    assert first.routing.cache_outcome == common_pb2.CACHE_OUTCOME_DEGRADED, first.routing.cache_reason
    asked = 0

    async def semantic_lookup_completes() -> bool:
        nonlocal asked
        asked += 1
        reply = await stack.stub.Generate(gen_request(f"question {asked} {tag}", options=options), timeout=10)
        # NOTE: a semantic miss, or a guard refusal ("question 3" is not "question 4"): the query ran.
        reason = reply.routing.cache_reason
        return reason.startswith(("exact miss; semantic miss:", "exact miss; semantic refused by guard:"))

    await wait_for(semantic_lookup_completes, timeout_s=20)
