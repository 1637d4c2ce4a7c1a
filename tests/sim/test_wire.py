"""Wire-level details a router can observe: content types, NDJSON framing, errors, OpenAI layer."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest

from sim.node import SimNode

LLM = "llama3.2:1b"
EMBEDDER = "nomic-embed-text:v1.5"


async def test_root_head_and_unknown_paths(node: SimNode, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{node.url}/") as resp:
        assert resp.status == 200 and await resp.text() == "Ollama is running"
    async with http.head(f"{node.url}/") as resp:
        assert resp.status == 200
    async with http.head(f"{node.url}/api/version") as resp:
        assert resp.status == 200
    async with http.get(f"{node.url}/api/nope") as resp:
        assert resp.status == 404 and await resp.text() == "404 page not found"
    async with http.get(f"{node.url}/api/generate") as resp:
        assert resp.status == 405 and await resp.text() == "405 method not allowed"


async def test_ndjson_stream_framing(node: SimNode, http: aiohttp.ClientSession) -> None:
    body = {"model": LLM, "prompt": "Stream me"}  # no "stream": streams by default
    async with http.post(f"{node.url}/api/generate", json=body) as resp:
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        raw = await resp.read()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])  # one object per line, no blank lines
    objects = [json.loads(line) for line in lines[:-1]]
    assert all(set(o) == {"model", "created_at", "response", "done"} for o in objects[:-1])
    final = objects[-1]
    assert final["done"] is True and final["response"] == "" and final["done_reason"] == "stop"
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count"):
        assert isinstance(final[key], int) and final[key] > 0
    assert final["created_at"].endswith("Z") and "T" in final["created_at"]


async def test_non_streamed_content_type_and_echoed_name(node: SimNode, http: aiohttp.ClientSession) -> None:
    body = {"model": "LLAMA3.2:1B", "prompt": "hi", "stream": False}
    async with http.post(f"{node.url}/api/generate", json=body) as resp:
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        reply = await resp.json()
    assert reply["model"] == "LLAMA3.2:1B"  # names match case-insensitively and are echoed


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/generate", b"", 400, "missing request body"),
        ("/api/generate", {"model": "", "prompt": "x"}, 404, "model '' not found"),
        ("/api/chat", {"model": "", "messages": []}, 400, "model is required"),
        ("/api/embed", {"model": ""}, 404, "model '' not found"),
        ("/api/embeddings", {"model": ""}, 400, "model is required"),
        ("/api/show", {}, 400, "model is required"),
        (
            "/api/generate",
            {"model": LLM, "prompt": "x", "keep_alive": "3600"},
            400,
            'time: missing unit in duration "3600"',
        ),
        (
            "/api/generate",
            {"model": LLM, "prompt": 5},
            400,
            "json: cannot unmarshal number into Go struct field GenerateRequest.prompt of type string",
        ),
        (
            "/api/generate",
            {"model": LLM, "prompt": "x", "options": {"temperature": "hot"}},
            400,
            'option "temperature" must be of type float32',
        ),
        (
            "/api/generate",
            {"model": LLM, "prompt": "x", "raw": True, "system": "s"},
            400,
            "raw mode does not support template, system, or context",
        ),
        (
            "/api/generate",
            {"model": LLM, "prompt": "x", "format": "xml"},
            500,
            'invalid format: "xml"; expected "json" or a valid JSON Schema object',
        ),
        ("/api/embed", {"model": EMBEDDER, "input": 3}, 400, "invalid input type"),
        (
            "/api/chat",
            {
                "model": "mistral:7b",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            200,
            None,
        ),
    ],
)
async def test_error_bodies(
    node: SimNode, http: aiohttp.ClientSession, path: str, body: object, status: int, message: str | None
) -> None:
    kwargs: dict[str, Any] = (
        {"data": body} if isinstance(body, bytes) else {"json": {**body, "stream": False}}  # type: ignore[dict-item]
    )
    async with http.post(f"{node.url}{path}", **kwargs) as resp:
        assert resp.status == status
        if message is not None:
            assert await resp.json() == {"error": message}


async def test_bad_json_body(node: SimNode, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{node.url}/api/chat", data=b"{not json") as resp:
        assert resp.status == 400 and "error" in await resp.json()


async def test_chat_on_an_embedding_model(make_node: object, http: aiohttp.ClientSession) -> None:
    node: SimNode = await make_node(models=["qwen2.5:0.5b", "nomic-embed-text:v1.5"])  # type: ignore[operator]
    async with http.post(
        f"{node.url}/api/chat",
        json={"model": EMBEDDER, "messages": [{"role": "user", "content": "x"}], "stream": False},
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == f'"{EMBEDDER}" does not support chat'


async def test_json_format_output_parses(node: SimNode, http: aiohttp.ClientSession) -> None:
    body = {"model": LLM, "prompt": "give json", "format": "json", "stream": False}
    async with http.post(f"{node.url}/api/generate", json=body) as resp:
        reply = await resp.json()
    assert isinstance(json.loads(reply["response"])["response"], str)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    async with http.post(f"{node.url}/api/generate", json={**body, "format": schema}) as resp:
        assert "city" in json.loads((await resp.json())["response"])


async def test_stop_sequences(node: SimNode, http: aiohttp.ClientSession) -> None:
    body = {"model": LLM, "prompt": "stop test", "stream": False, "options": {"num_predict": 40}}
    async with http.post(f"{node.url}/api/generate", json=body) as resp:
        full = (await resp.json())["response"]
    stop_word = full.split()[3]
    async with http.post(
        f"{node.url}/api/generate", json={**body, "options": {"num_predict": 40, "stop": [stop_word]}}
    ) as resp:
        cut = await resp.json()
    assert stop_word not in cut["response"] and cut["done_reason"] == "stop"
    assert full.startswith(cut["response"])


async def test_embedding_similarity_and_dimensions(node: SimNode, http: aiohttp.ClientSession) -> None:
    texts = [
        "What is the capital city of France?",
        "what is the capital city of france",
        "How do I bake sourdough bread at home?",
    ]
    async with http.post(f"{node.url}/api/embed", json={"model": EMBEDDER, "input": texts}) as resp:
        reply = await resp.json()
    vectors = np.array(reply["embeddings"])
    assert vectors.shape == (3, 768) and reply["prompt_eval_count"] > 0
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert near > 0.9 and far < 0.5 and near > far
    body = {"model": EMBEDDER, "input": texts[0], "dimensions": 64}
    async with http.post(f"{node.url}/api/embed", json=body) as resp:
        cut = np.array((await resp.json())["embeddings"][0])
    assert cut.shape == (64,) and abs(float(np.linalg.norm(cut)) - 1) < 1e-5
    too_long = {"model": EMBEDDER, "input": "word " * 5000, "truncate": False}
    async with http.post(f"{node.url}/api/embed", json=too_long) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "the input length exceeds the context length"


async def test_embed_empty_input_loads(node: SimNode, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{node.url}/api/embed", json={"model": EMBEDDER}) as resp:
        assert await resp.json() == {"model": EMBEDDER, "embeddings": []}
    assert node.stats()["loaded_models"] == [EMBEDDER]


async def test_openai_client(node: SimNode) -> None:
    client = openai.AsyncOpenAI(base_url=f"{node.url}/v1", api_key="ollama")
    try:
        reply = await client.chat.completions.create(
            model=LLM, messages=[{"role": "user", "content": "Hello"}], max_tokens=5
        )
        assert reply.choices[0].message.content and reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model=LLM,
                messages=[{"role": "user", "content": "Hello"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        ]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and chunks[-1].usage is not None
        emb = await client.embeddings.create(model=EMBEDDER, input=["a", "b"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 768
        models = await client.models.list()
        assert {m.id for m in models.data} == {LLM, EMBEDDER, "mistral:7b"}
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope:1b", messages=[{"role": "user", "content": "x"}])
    finally:
        await client.close()


async def test_copy_model(node: SimNode, http: aiohttp.ClientSession) -> None:
    body = {"source": LLM, "destination": "my-llama:latest"}
    async with http.post(f"{node.url}/api/copy", json=body) as resp:
        assert resp.status == 200
    async with http.post(
        f"{node.url}/api/generate", json={"model": "my-llama", "prompt": "x", "stream": False}
    ) as resp:
        assert resp.status == 200
    async with http.post(f"{node.url}/api/copy", json={"source": "nope:1b", "destination": "x"}) as resp:
        assert resp.status == 404 and (await resp.json())["error"] == 'model "nope:1b" not found'
