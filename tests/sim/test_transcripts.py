"""What a node received and sent, per completion (`GET /_sim/requests`), and the requests it saw cancelled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from sim.node import SimNode

LLM = "llama3.2:1b"
CHAT = {"model": LLM, "messages": [{"role": "user", "content": "Why is the sky blue?"}]}


async def _stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[str, bool]:
    """The text of a streamed chat as a client reads it, and whether its `done` line arrived."""
    text, done = "", False
    async with http.post(f"{url}/api/chat", json={**body, "stream": True}) as resp:
        assert resp.status == 200
        async for raw in resp.content:
            line = json.loads(raw)
            text += line["message"]["content"]
            done = done or line["done"]
    return text, done


async def test_a_streamed_answer_is_recorded_as_sent(node: SimNode, http: aiohttp.ClientSession) -> None:
    text, done = await _stream(http, node.url, CHAT)
    assert done and text
    async with http.post(
        f"{node.url}/api/generate", json={"model": LLM, "prompt": "hi", "stream": False}
    ) as resp:
        unary = (await resp.json())["response"]
    async with http.get(f"{node.admin_url}/_sim/requests") as resp:
        listed = (await resp.json())["requests"]
    assert listed == node.transcripts()
    chat, generate = listed
    assert chat["path"] == "/api/chat" and chat["request"] == {**CHAT, "stream": True}
    assert chat["sent"] == text and chat["outcome"] == "done" and chat["seq"] == 1
    assert generate["path"] == "/api/generate" and generate["request"]["prompt"] == "hi"
    assert generate["sent"] == unary and generate["outcome"] == "done" and generate["seq"] == 2


async def test_a_cut_stream_records_the_tokens_sent_before_the_cut(
    node: SimNode, http: aiohttp.ClientSession
) -> None:
    node.set_fault(cut_after_tokens=4)
    received = ""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{node.url}/api/chat", json={**CHAT, "stream": True}) as resp:
            async for raw in resp.content:
                received += json.loads(raw)["message"]["content"]
    (record,) = node.transcripts()
    assert record["outcome"] == "cut" and record["sent_tokens"] == 4
    assert record["sent"] == received
    assert node.stats()["cancelled"] == 0  # the node cut it; the client did not give up


async def test_a_client_that_goes_away_is_counted_as_cancelled(make_node: Callable[..., Any]) -> None:
    # NOTE: real time: ~1 s of generation, so the client leaves while tokens are still coming.
    node: SimNode = await make_node(time_scale=1.0)
    await node.load_model(LLM)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{node.url}/api/chat", json={**CHAT, "stream": True}) as resp:
            first = json.loads(await resp.content.readline())["message"]["content"]
            resp.close()
        await node.wait_for(lambda s: s["cancelled"] == 1 and s["in_flight"] == 0)
        # The whole answer, from a node with the same seed that does not sleep.
        whole, _ = await _stream(http, (await make_node(time_scale=0)).url, CHAT)
    (record,) = node.transcripts()
    assert record["outcome"] == "cancelled"
    assert record["sent"].startswith(first) and whole.startswith(record["sent"]) and record["sent"] != whole


async def test_a_hung_request_the_client_gives_up_on_is_counted_as_cancelled(
    node: SimNode, http: aiohttp.ClientSession
) -> None:
    node.set_fault(hang=True)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            f"{node.url}/api/chat", json=CHAT, timeout=aiohttp.ClientTimeout(total=0.2)
        ) as resp:
            await resp.read()
    await node.wait_for(lambda s: s["cancelled"] == 1)
    assert node.transcripts() == []  # a hung request never reaches the model
