"""End to end: failover before and after the first token, retry budget, health down, affinity."""

from __future__ import annotations

import time

import grpc
import pytest
from corral.v1 import common_pb2, router_service_pb2

from services.router.balancer import rendezvous_weight
from tests.helpers.polling import wait_for
from tests.router.stack import MODEL, chat_spec, gen_request, start_stack

pytestmark = pytest.mark.timeout(60)


async def test_node_killed_mid_stream_is_continued_elsewhere() -> None:
    # node-1..3 lack mistral; node-4 (slow, its own process) and node-5 have it.
    stack = await start_stack(
        node_count=3, fleet_models="llama3.2:1b,nomic-embed-text:v1.5", solo_time_scales=(0.1, 0.01)
    )
    try:
        session = next(s for s in (f"s{i}" for i in range(100)) if _home(s, ["node-4", "node-5"]) == "node-4")
        call = stack.stub.ChatStream(
            router_service_pb2.ChatStreamRequest(
                spec=chat_spec(("user", "tell me a long story"), model="mistral:7b"), session_id=session
            ),
            timeout=20,
        )
        first = await call.read()
        assert isinstance(first, router_service_pb2.ChatStreamResponse) and not first.done
        assert (await stack.stats("node-4"))["in_flight"] == 1
        await stack.kill_node("node-4")
        chunks = [first]
        while (chunk := await call.read()) is not grpc.aio.EOF:
            chunks.append(chunk)
        final = chunks[-1]
        assert final.done and final.done_reason in ("stop", "length")
        assert final.routing.resumed and list(final.routing.failed_node_ids) == ["node-4"]
        assert final.routing.node_id == "node-5" and final.routing.attempts == 2
        assert sum(c.done for c in chunks) == 1
        assert len("".join(c.message.content for c in chunks)) > len(first.message.content)
        assert await call.code() == grpc.StatusCode.OK
    finally:
        await stack.close()


def _home(key: str, node_ids: list[str]) -> str:
    return max(node_ids, key=lambda n: rendezvous_weight(f"s:{key}", n))


async def test_mid_stream_loss_without_a_second_node_ends_with_unavailable() -> None:
    stack = await start_stack(node_count=0, solo_time_scales=(0.1,))
    try:
        call = stack.stub.GenerateStream(
            router_service_pb2.GenerateStreamRequest(
                spec=common_pb2.GenerateSpec(model="mistral:7b", prompt="a long story")
            ),
            timeout=20,
        )
        await call.read()
        await stack.kill_node("node-1")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            while await call.read() is not grpc.aio.EOF:
                pass
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "failed mid-stream" in (exc.value.details() or "")
    finally:
        await stack.close()


async def test_hung_node_is_left_after_the_ttft_timeout() -> None:
    # NOTE: health probes rarely here, so the router, not health, must notice the hang.
    stack = await start_stack(health_env={"CORRAL_HEALTH__PROBE_INTERVAL_S": "60"})
    try:
        first = await stack.stub.Generate(gen_request("hello", session_id="user-7"), timeout=10)
        home = first.routing.node_id
        await stack.set_fault(home, hang=True)
        started = time.monotonic()
        reply = await stack.stub.Generate(gen_request("hello again", session_id="user-7"), timeout=10)
        elapsed = time.monotonic() - started
        assert list(reply.routing.failed_node_ids) == [home] and reply.routing.node_id != home
        assert reply.routing.attempts == 2 and reply.response
        assert 1.0 <= elapsed < 4.0  # the TTFT timeout is 1 s in the test stack
    finally:
        await stack.close()


async def test_busy_node_moves_the_request_to_another_node() -> None:
    stack = await start_stack(health_env={"CORRAL_HEALTH__PROBE_INTERVAL_S": "60"})
    try:
        first = await stack.stub.Generate(gen_request("hi", session_id="user-9"), timeout=10)
        home = first.routing.node_id
        await stack.set_fault(home, busy_count=1)
        reply = await stack.stub.Generate(gen_request("hi again", session_id="user-9"), timeout=10)
        assert list(reply.routing.failed_node_ids) == [home] and reply.routing.node_id != home
        assert (await stack.stats(home))["busy_rejections"] == 1
    finally:
        await stack.close()


async def test_all_nodes_down_gives_unavailable_quickly() -> None:
    stack = await start_stack()
    try:
        for node in stack.nodes:
            await stack.take_down(node.node_id)
        for i in range(5):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stack.stub.Generate(gen_request(f"anyone? {i}"), timeout=10)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 1.0
    finally:
        await stack.close()


async def test_retry_budget_caps_upstream_attempts_in_an_outage() -> None:
    # Every node fails every request with 500; without health, nothing ejects them.
    stack = await start_stack(
        health=False,
        router_env={
            "CORRAL_ROUTER__RETRY_BUDGET__MIN_RETRIES_PER_S": "0.5",
            "CORRAL_ROUTER__RETRY_BUDGET__TTL_S": "10",
        },
    )
    try:
        for node in stack.nodes:
            await stack.set_fault(node.node_id, error_rate=1.0)
        requests = 40
        for i in range(requests):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stack.stub.Generate(gen_request(f"outage {i}"), timeout=10)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        attempts = await stack.total_inference_requests()
        # Without a budget every request would try all 4 nodes (160 attempts); the budget allows the
        # first attempts, a floor of 5 retries (0.5/s over 10 s) and 20 % of the requests.
        assert requests <= attempts <= requests + 5 + 0.2 * requests + 1
    finally:
        await stack.close()


async def test_routing_continues_when_health_is_down() -> None:
    stack = await start_stack()
    try:
        assert (await stack.stub.Generate(gen_request("before"), timeout=10)).response
        assert stack.health is not None
        await stack.health.kill()
        replies = [await stack.stub.Generate(gen_request(f"during {i}"), timeout=10) for i in range(10)]
        assert all(r.response for r in replies)
        # The router's own outcomes still steer traffic away from a node that goes down now.
        await stack.take_down("node-1")
        replies = [await stack.stub.Generate(gen_request(f"later {i}"), timeout=10) for i in range(10)]
        assert all(r.response and r.routing.node_id != "node-1" for r in replies)
    finally:
        await stack.close()


async def test_router_starts_on_the_static_list_when_health_never_answers() -> None:
    stack = await start_stack(
        health=False, static_nodes=True, router_env={"CORRAL_ROUTER__HEALTH_ADDR": "127.0.0.1:9"}
    )
    try:
        reply = await stack.stub.Generate(gen_request("static"), timeout=10)
        assert reply.response and reply.routing.node_id.startswith("node-")
    finally:
        await stack.close()


async def test_chat_session_affinity_reuses_the_kv_cache() -> None:
    stack = await start_stack()
    try:
        system = "You are a careful assistant. " + " ".join(f"rule {i} is to be precise." for i in range(60))
        turns: list[tuple[str, str]] = [("system", system)]
        placed: list[str] = []
        evaluated: list[int] = []
        eval_ms: list[float] = []
        for question in ("what is a cache?", "and a node?", "why reuse it?", "thanks, summarise"):
            turns.append(("user", question))
            reply = await stack.stub.Chat(
                router_service_pb2.ChatRequest(spec=chat_spec(*turns), session_id="conversation-1"),
                timeout=10,
            )
            placed.append(reply.routing.node_id)
            evaluated.append(reply.stats.prompt_eval_count)
            eval_ms.append(reply.stats.prompt_eval_duration.ToNanoseconds() / 1e6)
            turns.append(("assistant", reply.message.content))
        assert len(set(placed)) == 1, placed
        # The first turn evaluates the long system prompt; later turns only the new tokens.
        assert all(n < evaluated[0] / 3 for n in evaluated[1:]), evaluated
        assert all(ms < eval_ms[0] / 3 for ms in eval_ms[1:]), eval_ms
        # The same conversation on another node pays for the whole prompt again.
        home = placed[0]
        cold = next(n.node_id for n in stack.nodes if n.node_id != home)
        other = await _chat_on(stack, cold, turns)
        assert other > evaluated[-1] * 3
    finally:
        await stack.close()


async def _chat_on(stack, node_id: str, turns: list[tuple[str, str]]) -> int:  # type: ignore[no-untyped-def]
    assert stack.http is not None
    body = {
        "model": MODEL,
        "stream": False,
        "messages": [{"role": r, "content": c} for r, c in turns[:-1]],
    }
    async with stack.http.post(stack.node(node_id).url + "/api/chat", json=body) as resp:
        reply = await resp.json()
    return int(reply["prompt_eval_count"])


async def test_affinity_yields_to_load_beyond_the_bound() -> None:
    stack = await start_stack()
    try:
        # NOTE: the router prefers nodes with the model loaded over a cold affinity target (a load
        # costs seconds); warm every node so that only the session hash decides.
        for node in stack.nodes:
            await stack.load(node.node_id)

        async def all_loaded() -> bool:
            reply = await stack.stub.ListModels(
                router_service_pb2.ListModelsRequest(loaded_only=True), timeout=5
            )
            placements = [p for m in reply.models if m.name == MODEL for p in m.placements if p.loaded]
            return len(placements) == len(stack.nodes)

        await wait_for(all_loaded, timeout_s=10)
        replies = [
            await stack.stub.Chat(
                router_service_pb2.ChatRequest(
                    spec=chat_spec(("user", f"topic {i}")), session_id=f"user-{i}"
                ),
                timeout=10,
            )
            for i in range(24)
        ]
        # Distinct sessions spread over the fleet by their hash.
        assert len({r.routing.node_id for r in replies}) >= 3
    finally:
        await stack.close()


async def test_buffered_unary_calls_answer_in_full_and_leave_a_hung_node() -> None:
    stack = await start_stack(
        router_env={
            "CORRAL_ROUTER__UNARY_NODE_STREAM": "false",
            "CORRAL_ROUTER__BUFFERED_READ_TIMEOUT_S": "1.0",
        },
        health_env={"CORRAL_HEALTH__PROBE_INTERVAL_S": "60"},
    )
    try:
        first = await stack.stub.Generate(gen_request("hello", session_id="user-3"), timeout=10)
        assert first.response and first.stats.eval_count > 0 and first.done_reason
        chat = await stack.stub.Chat(
            router_service_pb2.ChatRequest(spec=chat_spec(("user", "hi there"))), timeout=10
        )
        assert chat.message.content and chat.message.role == "assistant"
        home = first.routing.node_id
        await stack.set_fault(home, hang=True)
        started = time.monotonic()
        reply = await stack.stub.Generate(gen_request("hello again", session_id="user-3"), timeout=10)
        elapsed = time.monotonic() - started
        assert list(reply.routing.failed_node_ids) == [home] and reply.routing.node_id != home
        assert reply.response and not reply.routing.resumed
        assert 1.0 <= elapsed < 4.0
    finally:
        await stack.close()
