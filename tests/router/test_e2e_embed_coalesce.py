"""Embedding coalescing end to end: concurrent small Embed calls share node calls (router, nodes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from corral.v1 import router_service_pb2

from tests.router.stack import EMBED_MODEL, Stack, embedding_vectors, node_embeds, start_stack

pytestmark = [pytest.mark.timeout(90), pytest.mark.asyncio(loop_scope="module")]

WINDOW_S = 1.0


async def _start() -> Stack:
    # NOTE: a long window, so that which calls join a batch does not depend on the machine's load.
    return await start_stack(
        node_count=2,
        router_env={
            "CORRAL_ROUTER__EMBED_COALESCE_SIZE": "5",
            "CORRAL_ROUTER__EMBED_COALESCE_WINDOW_MS": str(int(WINDOW_S * 1000)),
        },
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    """The module's stack: each test embeds texts of its own and counts node calls before and after."""
    started = await _start()
    try:
        yield started
    finally:
        await started.close()


@pytest_asyncio.fixture(loop_scope="module")
async def own_stack() -> AsyncIterator[Stack]:
    """A stack of the test's own, for a test that makes its nodes fail."""
    started = await _start()
    try:
        yield started
    finally:
        await started.close()


def texts(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"question {i} ({tag}): how often is filter {i * 7} cleaned?" for i in range(n)]


def embed(*inputs: str, dimensions: int = 0) -> router_service_pb2.EmbedRequest:
    return router_service_pb2.EmbedRequest(model=EMBED_MODEL, inputs=inputs, dimensions=dimensions)


async def test_concurrent_calls_share_a_node_call_and_get_their_own_vectors(stack: Stack) -> None:
    batch = texts(5)
    # NOTE: 5 inputs is not a small call: sent as it is, it gives the reference vectors.
    expected = embedding_vectors(await stack.stub.Embed(embed(*batch), timeout=10))
    before = await node_embeds(stack)
    started = time.monotonic()
    replies = await asyncio.gather(*(stack.stub.Embed(embed(t), timeout=10) for t in reversed(batch)))
    # NOTE: the fifth text fills the batch, which leaves at once instead of at the window's end.
    assert time.monotonic() - started < WINDOW_S
    assert [embedding_vectors(r) for r in replies] == [[v] for v in reversed(expected)]
    assert await node_embeds(stack) - before == 1


async def test_calls_of_several_texts_get_theirs_in_order(stack: Stack) -> None:
    a, b, c, d = texts(4)
    expected = embedding_vectors(await stack.stub.Embed(embed(a, b, c, d, *texts(1)), timeout=10))[:4]
    before = await node_embeds(stack)
    started = time.monotonic()
    first, second, third = await asyncio.gather(
        stack.stub.Embed(embed(c, a), timeout=10),
        stack.stub.Embed(embed(d), timeout=10),
        stack.stub.Embed(embed(b), timeout=10),
    )
    # NOTE: four texts do not fill a batch of five: it leaves when the window closes.
    assert time.monotonic() - started >= WINDOW_S * 0.9
    assert embedding_vectors(first) == [expected[2], expected[0]]
    assert embedding_vectors(second) == [expected[3]] and embedding_vectors(third) == [expected[1]]
    assert await node_embeds(stack) - before == 1
    # Another shape (dimensions) never joins the batch of the first: it is its own node call.
    before = await node_embeds(stack)
    full, short = await asyncio.gather(
        stack.stub.Embed(embed(a), timeout=10), stack.stub.Embed(embed(a, dimensions=4), timeout=10)
    )
    assert len(short.embeddings[0].values) == 4 and embedding_vectors(full) == [expected[0]]
    assert await node_embeds(stack) - before == 2


async def test_a_caller_whose_deadline_is_shorter_than_the_window_is_sent_at_once(stack: Stack) -> None:
    (text,) = texts(1)
    started = time.monotonic()
    reply = await stack.stub.Embed(embed(text), timeout=WINDOW_S * 1.5)
    assert time.monotonic() - started < WINDOW_S
    assert len(reply.embeddings) == 1 and reply.embeddings[0].values


async def test_a_node_error_reaches_every_caller_of_the_batch(own_stack: Stack) -> None:
    batch = texts(3)
    expected = embedding_vectors(await own_stack.stub.Embed(embed(*batch, *texts(2)), timeout=10))[:3]
    first, second = own_stack.nodes[0].node_id, own_stack.nodes[1].node_id
    # One node failing: the batch fails over, and every caller still gets its own vector.
    await own_stack.set_fault(first, error_rate=1.0)
    replies = await asyncio.gather(*(own_stack.stub.Embed(embed(t), timeout=10) for t in batch))
    assert [embedding_vectors(r) for r in replies] == [[v] for v in expected]
    # Both failing: every caller gets an error, none a vector.
    await own_stack.set_fault(second, error_rate=1.0)
    results = await asyncio.gather(
        *(own_stack.stub.Embed(embed(t), timeout=10) for t in batch), return_exceptions=True
    )
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results


async def test_a_text_the_node_refuses_fails_only_its_own_caller(stack: Stack) -> None:
    short = texts(2)
    expected = embedding_vectors(await stack.stub.Embed(embed(*short, *texts(3)), timeout=10))[:2]
    too_long = "word " * 40_000

    def strict(text: str) -> router_service_pb2.EmbedRequest:
        return router_service_pb2.EmbedRequest(model=EMBED_MODEL, inputs=[text], truncate=False)

    results = await asyncio.gather(
        stack.stub.Embed(strict(short[0]), timeout=10),
        stack.stub.Embed(strict(too_long), timeout=10),
        stack.stub.Embed(strict(short[1]), timeout=10),
        return_exceptions=True,
    )
    first, refused, second = results
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(first, router_service_pb2.EmbedResponse) and embedding_vectors(first) == [expected[0]]
    assert isinstance(second, router_service_pb2.EmbedResponse) and embedding_vectors(second) == [expected[1]]
