"""End to end: failover before and after the first token, retry budget, health down, affinity."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

import grpc
import pytest
from corral.v1 import common_pb2, health_service_pb2, health_service_pb2_grpc, router_service_pb2

from tests.helpers.polling import wait_for
from tests.router.stack import (
    MODEL,
    chat_spec,
    gen_request,
    rendezvous_order,
    seeded_answer,
    start_stack,
)

pytestmark = pytest.mark.timeout(60)


# NOTE: a seed in the request makes every node answer a prompt with the same text (node seeds
# differ), so one node can say what another would have sent. For this model and prompt the answer is
# 58 tokens long: still streaming when the test kills its node.
SEED = 7


async def test_node_killed_mid_stream_is_continued_elsewhere() -> None:
    # node-1..3 lack mistral; node-4 (slow, its own process) and node-5 have it.
    stack = await start_stack(
        node_count=3, fleet_models="llama3.2:1b,nomic-embed-text:v1.5", solo_time_scales=(0.1, 0.01)
    )
    try:
        session = next(s for s in (f"s{i}" for i in range(100)) if _home(s, ["node-4", "node-5"]) == "node-4")
        spec = chat_spec(("user", "tell me a long story"), model="mistral:7b")
        spec.options.seed = SEED
        call = stack.stub.ChatStream(
            router_service_pb2.ChatStreamRequest(spec=spec, session_id=session), timeout=20
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
        assert await call.code() == grpc.StatusCode.OK
        text = "".join(c.message.content for c in chunks)
        # node-5 was asked to continue the conversation after the partial answer node-4 had sent;
        # the client saw exactly that partial answer, then node-5's continuation.
        user = {"role": "user", "content": "tell me a long story"}
        (continued,) = [t for t in await stack.transcripts("node-5") if len(t["request"]["messages"]) == 2]
        partial = continued["request"]["messages"][1]
        assert continued["request"]["messages"][0] == user and partial["role"] == "assistant"
        assert continued["outcome"] == "done" and continued["request"]["options"]["seed"] == SEED
        assert text == partial["content"] + continued["sent"]
        # node-4's record died with it; its answer is the seeded one, which node-5 gives too: the
        # partial answer is a part of it from the start, with no token lost or repeated.
        whole = await seeded_answer(stack, "node-5", {"model": "mistral:7b", "messages": [user]}, SEED)
        assert first.message.content and partial["content"].startswith(first.message.content)
        assert whole.startswith(partial["content"]) and len(partial["content"]) < len(whole)
    finally:
        await stack.close()


@pytest.mark.parametrize("kind", ["generate_stream", "chat_stream", "generate_unary"])
async def test_answer_cut_mid_stream_continues_from_exactly_what_was_sent(kind: str) -> None:
    stack = await start_stack()
    try:
        session = "story-1"
        home = _home(session, [n.node_id for n in stack.nodes])
        await stack.set_fault(home, cut_after_tokens=5)
        options = common_pb2.ModelOptions(seed=SEED, num_predict=40)
        system, prompt = "You tell stories.", "tell me a story about a river"
        gen_spec = common_pb2.GenerateSpec(model=MODEL, system=system, prompt=prompt, options=options)
        chat = chat_spec(("system", system), ("user", prompt))
        chat.options.CopyFrom(options)
        if kind == "generate_stream":
            request = router_service_pb2.GenerateStreamRequest(spec=gen_spec, session_id=session)
            chunks = [c async for c in stack.stub.GenerateStream(request, timeout=20)]
            text, routing = "".join(c.response for c in chunks), chunks[-1].routing
        elif kind == "chat_stream":
            chat_request = router_service_pb2.ChatStreamRequest(spec=chat, session_id=session)
            chat_chunks = [c async for c in stack.stub.ChatStream(chat_request, timeout=20)]
            text, routing = "".join(c.message.content for c in chat_chunks), chat_chunks[-1].routing
        else:
            reply = await stack.stub.Generate(
                router_service_pb2.GenerateRequest(spec=gen_spec, session_id=session), timeout=20
            )
            text, routing = reply.response, reply.routing
        assert routing.resumed and list(routing.failed_node_ids) == [home] and routing.attempts == 2
        (cut,) = await stack.transcripts(home)
        (continued,) = await stack.transcripts(routing.node_id)
        assert cut["outcome"] == "cut" and cut["sent_tokens"] == 5 and cut["sent"]
        assert continued["outcome"] == "done"
        # The continuation, as the router builds it (services/router/forward.py): the conversation
        # (a generate becomes a chat of its system and user prompt) with what the home sent as the
        # assistant's partial answer, the same seed, and num_predict less the 5 pieces already sent.
        conversation = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        partial = {"role": "assistant", "content": cut["sent"]}
        assert continued["path"] == "/api/chat"
        assert continued["request"]["messages"] == [*conversation, partial]
        assert continued["request"]["options"]["seed"] == SEED
        assert continued["request"]["options"]["num_predict"] == 40 - 5
        # The client saw the home's 5 tokens, then the continuation: nothing repeated, nothing lost.
        assert text == cut["sent"] + continued["sent"]
    finally:
        await stack.close()


def _home(key: str, node_ids: list[str]) -> str:
    return rendezvous_order(key, node_ids)[0]


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
        # NOTE: the TTFT timeout is 1 s in the test stack; the deadline, 5x that, bounds the wait.
        reply = await stack.stub.Generate(gen_request("hello again", session_id="user-7"), timeout=5)
        elapsed = time.monotonic() - started
        assert list(reply.routing.failed_node_ids) == [home] and reply.routing.node_id != home
        assert reply.routing.attempts == 2 and reply.response
        assert elapsed >= 1.0  # left after the TTFT timeout, not before
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


async def test_all_nodes_down_gives_unavailable_without_waiting_for_the_deadline() -> None:
    stack = await start_stack()
    try:
        for node in stack.nodes:
            await stack.take_down(node.node_id)
        for i in range(5):
            # NOTE: refused connections fail at once (well under a second); the deadline is 5 s, so
            # only a router that waits for it (retrying, or waiting for a node to come back) trips it,
            # with DEADLINE_EXCEEDED instead of UNAVAILABLE. How fast is the benchmark's business.
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stack.stub.Generate(gen_request(f"anyone? {i}"), timeout=5)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
            assert "no node" in (exc.value.details() or "")
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
    # NOTE: a long TTFT timeout and no stall detection, so that the router keeps waiting for the
    # request held on the home (it is in a long prompt evaluation) instead of failing it over to another
    # node: the home sends nothing else, so a stall would be declared after the 3 s first-token floor,
    # which a busy machine reaches before the test has placed its requests.
    stack = await start_stack(
        router_env={"CORRAL_ROUTER__TTFT_TIMEOUT_S": "60", "CORRAL_ROUTER__STALL__ENABLED": "false"}
    )
    try:
        # NOTE: the router prefers nodes with the model loaded over a cold affinity target (a load
        # costs seconds); warm every node so that only the session hash and the load decide. The
        # router learns what is loaded from health's score stream, so wait for health to report it
        # (the node's own /api/ps is ahead of both, by up to a probe interval).
        for node in stack.nodes:
            await stack.load(node.node_id)
        assert stack.health is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.health.port}") as channel:
            health = health_service_pb2_grpc.HealthServiceStub(channel)

            async def loaded_everywhere() -> bool:
                reply = await health.ListNodes(health_service_pb2.ListNodesRequest(), timeout=5)
                return all(any(m.model == MODEL and m.loaded for m in n.models) for n in reply.nodes)

            await wait_for(
                loaded_everywhere, timeout_s=10, what="health reporting the model loaded everywhere"
            )
        session = "user-1"
        home, next_node = rendezvous_order(session, [n.node_id for n in stack.nodes])[:2]

        def request(text: str) -> router_service_pb2.ChatRequest:
            return router_service_pb2.ChatRequest(spec=chat_spec(("user", text)), session_id=session)

        async def placed(text: str) -> str:
            return str((await stack.stub.Chat(request(text), timeout=10)).routing.node_id)

        # NOTE: health's ListNodes shows the model loaded a moment before its score stream brings that to
        # the router, which until then counts a load on the nodes it has not heard of.
        async def at_home() -> bool:
            return await placed("topic 0") == home

        await wait_for(at_home, timeout_s=10, what="the session placed on its home once the router knows")
        # Every node idle: the session stays on its home.
        assert [await placed(f"topic {i}") for i in range(1, 4)] == [home] * 3
        # Hold one request of the session on the home: started under a huge slow factor, its prompt
        # evaluation lasts minutes; the fault is cleared as soon as it runs, so nothing else is slowed.
        await stack.set_fault(home, slow_factor=1e7)
        held = stack.stub.Chat(request("held on the home"), timeout=120)
        holding = asyncio.ensure_future(held)

        async def home_in_flight(count: int) -> bool:
            return bool((await stack.stats(home))["in_flight"] == count)

        await wait_for(lambda: home_in_flight(1), timeout_s=10, what="the held request on the home")
        await stack.admin(home, "DELETE", "/_sim/faults")
        # One request in flight on the home, none elsewhere: with the new one the bound is
        # ceil(1.25 * 2 / 4) = 1, the home would hold 2, so the session walks to its next node.
        assert [await placed(f"topic {i}") for i in range(3, 6)] == [next_node] * 3
        assert not holding.done()
        held.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await holding
        await wait_for(lambda: home_in_flight(0), timeout_s=10, what="the held request cancelled")
        # The load dropped: the session comes back to its home (the router forgets the attempt as
        # it closes the node's connection, so allow a moment), and stays there.
        await wait_for(
            lambda: _is(placed("back home?"), home), timeout_s=10, interval_s=0.01, what="back home"
        )
        assert [await placed(f"topic {i}") for i in range(6, 9)] == [home] * 3
    finally:
        await stack.close()


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


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
        # NOTE: the buffered read timeout is 1 s here; the deadline, 5x that, bounds the wait.
        reply = await stack.stub.Generate(gen_request("hello again", session_id="user-3"), timeout=5)
        elapsed = time.monotonic() - started
        assert list(reply.routing.failed_node_ids) == [home] and reply.routing.node_id != home
        assert reply.response and not reply.routing.resumed
        assert elapsed >= 1.0  # left after the read timeout, not before
    finally:
        await stack.close()
