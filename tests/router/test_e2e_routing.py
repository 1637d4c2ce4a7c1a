"""End to end: the router, health and simulator nodes as processes; routing, failover and limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from corral.v1 import common_pb2, router_service_pb2
from grpc_status import rpc_status

from services.common.errors import error_info
from tests.helpers.polling import wait_for
from tests.router.stack import (
    EMBED_MODEL,
    MODEL,
    Stack,
    chat_spec,
    gen_request,
    start_stack,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    started = await start_stack()
    try:
        yield started
    finally:
        await started.close()


async def test_unary_and_streaming_are_forwarded(stack: Stack) -> None:
    reply = await stack.stub.Generate(gen_request("why is the sky blue?"), timeout=10)
    assert reply.response and reply.done_reason == "stop" and reply.model == MODEL
    assert reply.routing.node_id.startswith("node-") and reply.routing.attempts == 1
    assert reply.stats.eval_count > 0

    chunks = [
        c
        async for c in stack.stub.ChatStream(
            router_service_pb2.ChatStreamRequest(spec=chat_spec(("user", "hello"))), timeout=10
        )
    ]
    assert len(chunks) > 2 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.message.content for c in chunks).strip()
    assert chunks[-1].routing.node_id and chunks[-1].stats.eval_count == len(chunks) - 1


async def test_node_killed_while_idle_is_avoided() -> None:
    # NOTE: round robin keeps sending node-4 its turn, so only the cool-down and health's probe keep
    # requests off it once it is dead (a learned strategy would prefer node-1 on identical nodes anyway).
    stack = await start_stack(
        node_count=3, solo_time_scales=(0.01,), router_env={"CORRAL_ROUTER__STRATEGY": "round_robin"}
    )
    try:
        await asyncio.gather(*(stack.load(n.node_id) for n in stack.nodes))

        async def reaches_node_4() -> bool:
            reply = await stack.stub.Generate(gen_request("warm"), timeout=10)
            return reply.routing.node_id == "node-4"

        await wait_for(reaches_node_4, timeout_s=10, interval_s=0.01)
        await stack.kill_node("node-4")
        replies = [await stack.stub.Generate(gen_request(f"question {i}"), timeout=10) for i in range(20)]
        assert all(r.response for r in replies)
        assert all(r.routing.node_id != "node-4" for r in replies)
        failed = [f for r in replies for f in r.routing.failed_node_ids]
        # NOTE: at most one attempt meets the dead node before the router's cool-down and health's probe.
        assert failed.count("node-4") <= 1
    finally:
        await stack.close()


async def test_node_taken_down_is_avoided_and_comes_back(stack: Stack) -> None:
    await stack.take_down("node-2")
    replies = [await stack.stub.Generate(gen_request(f"question {i}"), timeout=10) for i in range(12)]
    assert all(r.response and r.routing.node_id != "node-2" for r in replies)
    await stack.admin("node-2", "DELETE", "/_sim/faults")
    # NOTE: the router prefers nodes with the model loaded; load it so node-2 competes again.
    await stack.load("node-2")

    async def back() -> bool:
        reply = await stack.stub.Generate(gen_request("again"), timeout=10)
        return reply.routing.node_id == "node-2"

    await wait_for(back, timeout_s=10, interval_s=0.01)


async def test_bad_input_is_rejected_before_any_node(stack: Stack) -> None:
    before = await stack.total_inference_requests()
    msg = common_pb2.ChatMessage
    cases = [
        (stack.stub.Generate(gen_request("x", model="no-such-model:7b")), "spec.model"),
        (
            stack.stub.Chat(router_service_pb2.ChatRequest(spec=common_pb2.ChatSpec(model=MODEL))),
            "spec.messages",
        ),
        (
            stack.stub.Chat(
                router_service_pb2.ChatRequest(
                    spec=common_pb2.ChatSpec(model=MODEL, messages=[msg(role="wizard", content="hi")])
                )
            ),
            "spec.messages[0].role",
        ),
        (stack.stub.Generate(gen_request("x" * 1_000_001)), "spec.prompt"),
        (
            stack.stub.Generate(gen_request("x", options=common_pb2.ModelOptions(num_predict=-7))),
            "spec.options.num_predict",
        ),
        (
            stack.stub.Generate(gen_request("x", options=common_pb2.ModelOptions(temperature=-1))),
            "spec.options.temperature",
        ),
        (stack.stub.Embed(router_service_pb2.EmbedRequest(model=EMBED_MODEL)), "inputs"),
    ]
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (exc.value.details() or "")
        info = error_info(await rpc_status.aio.from_call(call))
        assert info is not None and info.metadata["field"] == field and info.domain == "router.corral"
    # A streaming call is validated before its first message too.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in stack.stub.GenerateStream(
            router_service_pb2.GenerateStreamRequest(spec=common_pb2.GenerateSpec(model="", prompt="x"))
        ):
            pass
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await stack.total_inference_requests() == before


async def test_embed_splits_large_batches_and_lists_models(stack: Stack) -> None:
    inputs = [f"sentence number {i}" for i in range(50)]
    reply = await stack.stub.Embed(
        router_service_pb2.EmbedRequest(model=EMBED_MODEL, inputs=inputs), timeout=10
    )
    assert len(reply.embeddings) == 50 and all(len(e.values) == 768 for e in reply.embeddings)
    assert reply.routing.attempts >= 4  # 50 inputs in batches of 16
    single = await stack.stub.Embed(router_service_pb2.EmbedRequest(model=EMBED_MODEL, inputs=[inputs[7]]))
    assert list(single.embeddings[0].values) == pytest.approx(list(reply.embeddings[7].values), abs=1e-6)
    busy = {n.node_id for n in stack.nodes if await stack.inference_requests(n.node_id) > 0}
    assert len(busy) >= 2

    models = await stack.stub.ListModels(router_service_pb2.ListModelsRequest(), timeout=5)
    names = [m.name for m in models.models]
    assert names == sorted(names) and MODEL in names and EMBED_MODEL in names
    llama = next(m for m in models.models if m.name == MODEL)
    assert {p.node_id for p in llama.placements} == {n.node_id for n in stack.nodes}
    assert llama.details.family == "llama" and llama.details.size_bytes > 0
    loaded = await stack.stub.ListModels(router_service_pb2.ListModelsRequest(loaded_only=True), timeout=5)
    assert EMBED_MODEL in [m.name for m in loaded.models]


async def test_deadline_and_cancellation_reach_the_node() -> None:
    # NOTE: a TTFT timeout far beyond the test's waits and no stall detection, so that nothing but the
    # client's deadline or cancellation, passed on by the router, can end a request on a node in time;
    # health probes rarely, so that the nodes' hung and cancelled requests are the router's alone.
    stack = await start_stack(
        router_env={"CORRAL_ROUTER__TTFT_TIMEOUT_S": "60", "CORRAL_ROUTER__STALL__ENABLED": "false"},
        health_env={"CORRAL_HEALTH__PROBE_INTERVAL_S": "60"},
    )
    try:

        async def stats() -> list[dict[str, Any]]:
            return [await stack.stats(n.node_id) for n in stack.nodes]

        # The client's deadline passes while a node holds the request: the node sees it cancelled.
        for node in stack.nodes:
            await stack.set_fault(node.node_id, hang=True)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stack.stub.Generate(gen_request("hello"), timeout=0.4)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        async def hung_request_cancelled() -> bool:
            now = await stats()
            generates = sum(s["requests_by_route"].get("/api/generate", 0) for s in now)
            return generates == 1 and sum(s["cancelled"] for s in now) == 1

        await wait_for(
            hung_request_cancelled, timeout_s=10, what="the node seeing the hung request cancelled"
        )
        for node in stack.nodes:
            await stack.admin(node.node_id, "DELETE", "/_sim/faults")

        # A client cancels a stream mid-answer: the node stops generating. Every node is warm and
        # slowed down (~0.17 s a token), so an answer takes seconds: nothing ends on its own meanwhile.
        await asyncio.gather(*(stack.load(n.node_id) for n in stack.nodes))
        for node in stack.nodes:
            await stack.set_fault(node.node_id, slow_factor=1000)
        call = stack.stub.GenerateStream(
            router_service_pb2.GenerateStreamRequest(
                spec=common_pb2.GenerateSpec(model=MODEL, prompt="a story")
            )
        )
        first = await call.read()
        assert isinstance(first, router_service_pb2.GenerateStreamResponse) and first.response
        generating = [
            (n.node_id, s["cancelled"])
            for n, s in zip(stack.nodes, await stats(), strict=True)
            if s["in_flight"]
        ]
        assert len(generating) == 1
        busy, cancelled_before = generating[0]
        call.cancel()

        async def stream_cancelled() -> bool:
            now = await stack.stats(busy)
            return bool(now["in_flight"] == 0 and now["cancelled"] == cancelled_before + 1)

        await wait_for(stream_cancelled, timeout_s=10, what="the node seeing the stream cancelled")
        (record,) = await stack.transcripts(busy)
        # Cut short by the client: the node had sent part of the answer, not all of it.
        assert record["outcome"] == "cancelled" and record["sent"].startswith(first.response)
    finally:
        await stack.close()


async def test_concurrency_limit_gives_resource_exhausted() -> None:
    stack = await start_stack(router_env={"CORRAL_ROUTER__MAX_CONCURRENT_REQUESTS": "1"})
    try:
        for node in stack.nodes:
            await stack.set_fault(node.node_id, hang=True)
        before = await stack.total_inference_requests()
        first = stack.stub.Generate(gen_request("one"), timeout=5)
        waiting = asyncio.ensure_future(first)

        async def reached_a_node() -> bool:
            return await stack.total_inference_requests() > before

        await wait_for(reached_a_node, timeout_s=5)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stack.stub.Generate(gen_request("two"), timeout=5)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_concurrent_requests" in (exc.value.details() or "")
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await waiting
    finally:
        await stack.close()
