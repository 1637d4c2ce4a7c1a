"""The OpenAI layer and both official clients over a fake core."""

from __future__ import annotations

import json
from typing import Any, cast

import ollama
import openai
import pytest
from aiohttp import ClientSession

from tests.http.fake_core import FakeCore


async def test_openai_client_chat_streamed_and_not(base_url: str, core: FakeCore) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    reply = await client.chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], max_tokens=5, seed=3
    )
    assert reply.choices[0].message.content == "Hello from Corral"
    assert (
        reply.choices[0].finish_reason == "stop"
        and reply.usage is not None
        and reply.usage.total_tokens == 10
    )
    spec = core.requests[-1][0].spec
    assert spec.options.temperature == 1.0 and spec.options.num_predict == 5 and spec.options.seed == 3
    stream = await client.chat.completions.create(
        model="llama3.2:1b",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == "Hello from Corral" and finish == "stop" and usage is not None
    await client.close()


async def test_openai_sse_framing(http: ClientSession) -> None:
    body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with http.post("/v1/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    events = [block for block in text.split("\n\n") if block]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}


async def test_openai_tool_calls_and_errors(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    reply = await client.chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], tools=[tool]
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None
    call: Any = calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "Tokyo",
        "days": 3,
    }
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert cast(dict[str, Any], info.value.body)["message"] == "model 'nope' not found"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="llama3.2:1b", messages=[])
    await client.close()


async def test_openai_embeddings_float_and_base64_and_models(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    # NOTE: openai-python asks for base64 by default and decodes it itself.
    reply = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert [d.embedding for d in reply.data] == [[0.5] * 4, [0.5] * 4]
    reply = await client.embeddings.create(
        model="nomic-embed-text", input="a", encoding_format="float", dimensions=2
    )
    assert reply.data[0].embedding == [0.5, 0.5] and reply.usage.prompt_tokens == 2
    models = await client.models.list()
    assert [m.id for m in models.data] == ["llama3.2:1b", "nomic-embed-text:latest"]
    assert (await client.models.retrieve("llama3.2:1b")).owned_by == "library"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope")
    await client.close()


async def test_ollama_client_against_fake_core(base_url: str) -> None:
    client = ollama.AsyncClient(host=base_url)
    reply = await client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "Hello from Corral" and reply.done_reason == "stop"
    parts = [
        p.message.content or ""
        async for p in await client.chat(
            model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    ]
    assert "".join(parts) == "Hello from Corral"
    gen = await client.generate(model="llama3.2:1b", prompt="hi")
    assert gen.response == "Hello from Corral" and gen.eval_count == 3
    pieces = [
        p.response or "" async for p in await client.generate(model="llama3.2:1b", prompt="hi", stream=True)
    ]
    assert "".join(pieces) == "Hello from Corral"
    assert len((await client.embed(model="nomic-embed-text", input=["a"])).embeddings) == 1
    assert len((await client.embeddings(model="nomic-embed-text", prompt="a")).embedding) == 4
    listing = await client.list()
    assert [m.model for m in listing.models] == ["llama3.2:1b", "nomic-embed-text:latest"]
    assert listing.models[0].modified_at is not None
    ps = await client.ps()
    assert ps.models[0].expires_at is not None and ps.models[0].size == 1_500_000_000
    show = await client.show("llama3.2:1b")
    assert show.capabilities == ["completion", "tools"]
    with pytest.raises(ollama.ResponseError) as info:
        await client.generate(model="nope", prompt="x")
    assert info.value.status_code == 404 and info.value.error == "model 'nope' not found"
