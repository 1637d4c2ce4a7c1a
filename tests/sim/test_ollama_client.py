"""The official `ollama` Python client (0.6.3, unchanged) against the simulator, streamed and not."""

from __future__ import annotations

import asyncio
import math

import ollama
import pytest

from sim.node import SimNode
from sim.textgen import count_tokens

LLM = "llama3.2:1b"
EMBEDDER = "nomic-embed-text:v1.5"


@pytest.fixture
def client(node: SimNode) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=node.url)


async def test_generate_not_streamed(client: ollama.AsyncClient) -> None:
    reply = await client.generate(LLM, "Why is the sky blue?")
    assert reply.model == LLM and reply.done and reply.done_reason == "stop"
    assert reply.response and reply.eval_count == count_tokens(reply.response)
    assert reply.context and reply.prompt_eval_count and reply.prompt_eval_count > 0
    assert reply.total_duration is not None and reply.load_duration is not None
    assert reply.prompt_eval_duration is not None and reply.eval_duration is not None
    assert reply.total_duration >= reply.load_duration + reply.prompt_eval_duration + reply.eval_duration


async def test_generate_streamed(client: ollama.AsyncClient) -> None:
    parts = [p async for p in await client.generate(LLM, "Why is the sky blue?", stream=True)]
    assert all(not p.done and p.done_reason is None for p in parts[:-1])
    final = parts[-1]
    assert final.done and final.done_reason == "stop" and final.response == ""
    text = "".join(p.response or "" for p in parts)
    assert final.eval_count == len(parts) - 1 == count_tokens(text)
    # Streaming and not give the same text for the same prompt and seed.
    assert text == (await client.generate(LLM, "Why is the sky blue?")).response


async def test_generate_num_predict_gives_length(client: ollama.AsyncClient) -> None:
    reply = await client.generate(LLM, "Tell me a long story", options={"num_predict": 5})
    assert reply.eval_count == 5 and reply.done_reason == "length"


async def test_chat_not_streamed_and_streamed(client: ollama.AsyncClient) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    reply = await client.chat(LLM, messages=messages)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done_reason == "stop" and reply.eval_count == count_tokens(reply.message.content)
    parts = [p async for p in await client.chat(LLM, messages=messages, stream=True)]
    assert all(p.message.role == "assistant" for p in parts)
    assert parts[-1].done and parts[-1].message.content == ""
    assert "".join(p.message.content or "" for p in parts) == reply.message.content


async def test_chat_and_generate_load_requests(client: ollama.AsyncClient, node: SimNode) -> None:
    loaded = await client.generate(LLM)
    assert loaded.done_reason == "load" and loaded.response == ""
    chat_loaded = await client.chat("mistral:7b", messages=[])
    assert chat_loaded.done_reason == "load" and chat_loaded.message.role == "assistant"
    assert {m.model for m in (await client.ps()).models} == {LLM, "mistral:7b"}
    unloaded = await client.generate(LLM, keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert [m.model for m in (await client.ps()).models] == ["mistral:7b"]


async def test_embed_and_legacy_embeddings(client: ollama.AsyncClient) -> None:
    reply = await client.embed(EMBEDDER, ["What is the capital of France?", "bread"])
    assert len(reply.embeddings) == 2 and all(len(v) == 768 for v in reply.embeddings)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in reply.embeddings)
    single = await client.embed(EMBEDDER, "What is the capital of France?")
    assert single.embeddings[0] == reply.embeddings[0]
    legacy = await client.embeddings(EMBEDDER, "What is the capital of France?")
    assert len(legacy.embedding) == 768
    norm = math.sqrt(sum(x * x for x in legacy.embedding))
    assert norm > 1.5  # the legacy endpoint does not normalise
    cosine = sum(a * b for a, b in zip(legacy.embedding, reply.embeddings[0], strict=True)) / norm
    assert cosine == pytest.approx(1.0, abs=1e-5)


async def test_list_ps_show(client: ollama.AsyncClient) -> None:
    listed = await client.list()
    names = {m.model for m in listed.models}
    assert names == {LLM, EMBEDDER, "mistral:7b"}
    llama = next(m for m in listed.models if m.model == LLM)
    assert llama.size == 1_321_098_329 and llama.details is not None
    assert llama.digest == "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878"
    assert llama.details.parameter_size == "1.2B" and llama.details.quantization_level == "Q8_0"
    assert (await client.ps()).models == []
    await client.generate(LLM, "hi")
    ps = await client.ps()
    assert [m.model for m in ps.models] == [LLM]
    assert ps.models[0].expires_at is not None and ps.models[0].size_vram == 0
    shown = await client.show(EMBEDDER)
    assert shown.capabilities == ["embedding"] and shown.modelinfo is not None
    assert shown.modelinfo["nomicbert.embedding_length"] == 768


async def test_pull_streamed_and_not(client: ollama.AsyncClient) -> None:
    statuses = [p.status async for p in await client.pull("qwen2.5:0.5b", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any(s and s.startswith("pulling ") and s != "pulling manifest" for s in statuses)
    assert "qwen2.5:0.5b" in {m.model for m in (await client.list()).models}
    assert (await client.pull("all-minilm:l6-v2")).status == "success"
    assert (await client.generate("qwen2.5:0.5b", "now installed")).done


async def test_pull_unknown_model(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as not_streamed:
        await client.pull("no-such-model:1b")
    assert not_streamed.value.status_code == 500
    assert not_streamed.value.error == "pull model manifest: file does not exist"
    with pytest.raises(ollama.ResponseError) as streamed:
        async for _ in await client.pull("no-such-model:1b", stream=True):
            pass
    assert streamed.value.error == "pull model manifest: file does not exist"


async def test_delete(client: ollama.AsyncClient) -> None:
    assert (await client.delete("mistral:7b")).status == "success"
    assert "mistral:7b" not in {m.model for m in (await client.list()).models}
    with pytest.raises(ollama.ResponseError) as exc:
        await client.delete("mistral:7b")
    assert exc.value.status_code == 404 and exc.value.error == "model 'mistral:7b' not found"


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        ("generate", 404, "model 'llama9:1b' not found"),
        ("chat", 404, "model 'llama9:1b' not found"),
        ("embed", 404, 'model "llama9:1b" not found, try pulling it first'),
        ("embeddings", 404, 'model "llama9:1b" not found, try pulling it first'),
        ("show", 404, "model 'llama9:1b' not found"),
    ],
)
async def test_unknown_model_errors(client: ollama.AsyncClient, call: str, status: int, message: str) -> None:
    calls = {
        "generate": lambda: client.generate("llama9:1b", "hi"),
        "chat": lambda: client.chat("llama9:1b", messages=[{"role": "user", "content": "hi"}]),
        "embed": lambda: client.embed("llama9:1b", "hi"),
        "embeddings": lambda: client.embeddings("llama9:1b", "hi"),
        "show": lambda: client.show("llama9:1b"),
    }
    with pytest.raises(ollama.ResponseError) as exc:
        await calls[call]()
    assert exc.value.status_code == status
    assert exc.value.error == message


async def test_unknown_model_streamed(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as exc:
        async for _ in await client.generate("llama9:1b", "hi", stream=True):
            pass
    assert exc.value.status_code == 404 and exc.value.error == "model 'llama9:1b' not found"


async def test_capability_errors(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as exc:
        await client.generate(EMBEDDER, "hi")
    assert exc.value.status_code == 400 and exc.value.error == f'"{EMBEDDER}" does not support generate'
    with pytest.raises(ollama.ResponseError) as think:
        await client.chat(LLM, messages=[{"role": "user", "content": "hi"}], think=True)
    assert think.value.status_code == 400 and think.value.error == f'"{LLM}" does not support thinking'


async def test_sync_client(node: SimNode) -> None:
    """The blocking client too (the node runs on the test's loop, so it is called from a thread)."""

    def use_sync_client() -> tuple[str, int]:
        client = ollama.Client(host=node.url)
        reply = client.chat(LLM, messages=[{"role": "user", "content": "hi"}])
        models = client.list().models
        return reply.message.content or "", len(models)

    content, count = await asyncio.to_thread(use_sync_client)
    assert content and count == 3
