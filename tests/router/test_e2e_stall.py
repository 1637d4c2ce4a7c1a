"""End to end: a node frozen mid-stream (SIGSTOP) is left at its learned pace, far below the fixed timeout."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import grpc
import pytest
from corral.v1 import router_service_pb2

from tests.helpers.procs import free_port
from tests.observability.scrape import scrape, value
from tests.router.stack import Stack, chat_spec, rendezvous_order, seeded_answer, start_stack

pytestmark = pytest.mark.timeout(90)

# NOTE: a seed in the request makes every node answer a prompt with the same text (node seeds differ).
SEED = 7
MODEL = "mistral:7b"
# The fixed time-to-first-token budget, which also bounds the silence between two chunks: far above
# what the test allows, so a pass cannot come from it.
FIXED_TIMEOUT_S = 30.0
STREAMS = 4


def _home(session: str, node_ids: list[str]) -> str:
    return rendezvous_order(session, node_ids)[0]


def _sessions(count: int, home: str, node_ids: list[str]) -> list[str]:
    """Session ids whose affinity sends them to `home`."""
    sessions = (f"s{i}" for i in range(1000))
    return [s for s in sessions if _home(s, node_ids) == home][:count]


async def _call(stack: Stack, session: str, prompt: str) -> Any:
    spec = chat_spec(("user", prompt), model=MODEL)
    spec.options.seed = SEED
    return stack.stub.ChatStream(
        router_service_pb2.ChatStreamRequest(spec=spec, session_id=session), timeout=60
    )


async def _rest(call: Any) -> list[router_service_pb2.ChatStreamResponse]:
    chunks = []
    while (chunk := await call.read()) is not grpc.aio.EOF:
        chunks.append(chunk)
    assert await call.code() == grpc.StatusCode.OK
    return chunks


async def test_frozen_node_is_left_at_its_learned_pace_and_streams_continue_elsewhere() -> None:
    # node-1..3 lack mistral; node-4 and node-5 (each its own process) have it. At time scale 0.5 a
    # mistral answer of this prompt streams a token about every 40 ms: still streaming at the freeze.
    metrics_port = free_port()
    stack = await start_stack(
        node_count=3,
        fleet_models="llama3.2:1b,nomic-embed-text:v1.5",
        solo_time_scales=(0.5, 0.05),
        router_env={
            "CORRAL_ROUTER__TTFT_TIMEOUT_S": str(FIXED_TIMEOUT_S),
            "CORRAL_ROUTER__METRICS_PORT": str(metrics_port),
            "CORRAL_LOGGING__LEVEL": "DEBUG",
        },
    )
    frozen = stack.node("node-4")
    try:
        assert stack.http is not None
        pair = ["node-4", "node-5"]
        warm, *held = _sessions(STREAMS + 1, "node-4", pair)
        # The router learns node-4's pace for the model from a whole stream (tens of gaps).
        warmup = await _rest(await _call(stack, warm, "say something"))
        assert warmup[-1].routing.node_id == "node-4" and not warmup[-1].routing.resumed
        stalls_before = await _stalls(stack, metrics_port)

        calls = [await _call(stack, s, f"tell me a long story, part {i}") for i, s in enumerate(held)]
        firsts = [await call.read() for call in calls]
        assert all(isinstance(f, router_service_pb2.ChatStreamResponse) and not f.done for f in firsts)
        # NOTE: the balancer may place a stream on node-5 despite its session; node-4 holds the others.
        on_frozen = (await stack.stats("node-4"))["in_flight"]
        assert on_frozen >= 1
        frozen.proc.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        rests = await asyncio.gather(*(_rest(call) for call in calls))
        took_s = time.monotonic() - frozen_at

        # Every stream node-4 held finished on node-5, continued after what the client already had,
        # long before the fixed timeout could have fired.
        assert took_s < FIXED_TIMEOUT_S / 2, took_s
        transcripts = await stack.transcripts("node-5")
        partials: dict[int, str] = {}
        for i, (first, rest) in enumerate(zip(firsts, rests, strict=True)):
            chunks = [first, *rest]
            final = chunks[-1]
            assert final.done and sum(c.done for c in chunks) == 1
            assert final.routing.node_id == "node-5"
            if not final.routing.resumed:
                assert final.routing.attempts == 1 and not final.routing.failed_node_ids
                continue
            assert list(final.routing.failed_node_ids) == ["node-4"] and final.routing.attempts == 2
            text = "".join(c.message.content for c in chunks)
            (continued,) = [
                t
                for t in transcripts
                if t["request"]["messages"][0] == _user(i) and len(t["request"]["messages"]) == 2
            ]
            partial = continued["request"]["messages"][1]
            assert partial["role"] == "assistant" and partial["content"].startswith(first.message.content)
            assert continued["outcome"] == "done"
            # exactly the tokens: the partial answer node-4 sent, then node-5's continuation
            assert text == partial["content"] + continued["sent"]
            partials[i] = partial["content"]
        assert len(partials) == on_frozen
        assert await _stalls(stack, metrics_port) - stalls_before == on_frozen
        assert stack.router is not None
        said = [line for line in stack.router.output if "stall on node-4" in line]
        assert len(said) == on_frozen and all("between_chunks" in line and "floor" in line for line in said)

        # node-4 had sent each stream a part of the seeded answer before it froze: nothing lost or repeated.
        for i, partial_text in partials.items():
            whole = await seeded_answer(stack, "node-5", {"model": MODEL, "messages": [_user(i)]}, SEED)
            assert whole.startswith(partial_text) and len(partial_text) < len(whole)
    finally:
        frozen.proc.signal(signal.SIGCONT)
        await stack.close()


def _user(i: int) -> dict[str, str]:
    return {"role": "user", "content": f"tell me a long story, part {i}"}


async def _stalls(stack: Stack, port: int) -> float:
    assert stack.http is not None
    samples = await scrape(stack.http, port)
    return value(samples, "corral_router_stalls_total", node="node-4", phase="between_chunks")
