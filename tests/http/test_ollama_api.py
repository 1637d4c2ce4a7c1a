"""The Ollama translation layer over a fake core: shapes, streaming, errors and request protos."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import ClientSession
from corral.v1 import common_pb2 as cpb

from services.common import errors
from tests.http.conftest import MAX_BODY_BYTES
from tests.http.fake_core import FakeCore


async def _lines(resp: Any) -> list[dict[str, Any]]:
    text = await resp.text()
    assert "\n\n" not in text
    return [json.loads(line) for line in text.splitlines()]


async def test_root_version_and_head(http: ClientSession) -> None:
    async with http.get("/") as resp:
        assert resp.status == 200 and await resp.text() == "Ollama is running"
    async with http.head("/") as resp:
        assert resp.status == 200
    async with http.get("/api/version") as resp:
        assert set(await resp.json()) == {"version"}


async def test_unknown_path_and_wrong_method_as_ollama(http: ClientSession) -> None:
    async with http.get("/api/nope") as resp:
        assert resp.status == 404 and await resp.text() == "404 page not found"
    async with http.get("/api/generate") as resp:
        assert resp.status == 405


async def test_generate_stream_shape(http: ClientSession, core: FakeCore) -> None:
    async with http.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "hi"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        lines = await _lines(resp)
    assert [line["response"] for line in lines] == ["Hello", " from", " Corral", ""]
    assert all(line["model"] == "llama3.2:1b" for line in lines)
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert "done_reason" not in lines[0] and "total_duration" not in lines[0]
    final = lines[-1]
    assert final["done_reason"] == "stop"
    assert final["total_duration"] == 1_500_000_000 and final["eval_count"] == 3
    assert final["created_at"].endswith("Z")
    assert lines[0]["created_at"] == "2024-09-12T21:17:29.110811Z"
    request, tenant = core.requests[-1]
    assert tenant == "default" and request.spec.prompt == "hi"


async def test_generate_not_streamed(http: ClientSession) -> None:
    body = {"model": "llama3.2:1b", "prompt": "hi", "stream": False}
    async with http.post("/api/generate", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["X-Corral-Node"] == "node-1" and resp.headers["X-Corral-Cache"] == "miss"
        reply = await resp.json()
    assert reply["response"] == "Hello from Corral" and reply["done"] is True
    assert reply["load_duration"] == 2_000_000 and "routing" not in reply


async def test_generate_empty_prompt_is_a_load_as_one_object(http: ClientSession) -> None:
    async with http.post("/api/generate", json={"model": "llama3.2:1b"}) as resp:
        reply = await resp.json()
    assert reply["done_reason"] == "load" and reply["response"] == "" and reply["done"] is True
    async with http.post("/api/generate", json={"model": "llama3.2:1b", "keep_alive": 0}) as resp:
        assert (await resp.json())["done_reason"] == "unload"


async def test_generate_translates_options_format_images_keep_alive(
    http: ClientSession, core: FakeCore
) -> None:
    body = {
        "model": "llama3.2:1b",
        "prompt": "hi",
        "stream": False,
        "options": {"temperature": 0, "num_predict": 12.0, "stop": ["\n"], "mirostat": 2, "custom": "x"},
        "format": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "images": [base64.b64encode(b"\x89PNG").decode()],
        "keep_alive": "1h30m",
        "think": "low",
    }
    async with http.post("/api/generate", json=body) as resp:
        assert resp.status == 200
    spec = core.requests[-1][0].spec
    assert spec.options.HasField("temperature") and spec.options.temperature == 0
    assert spec.options.num_predict == 12 and list(spec.options.stop) == ["\n"]
    assert dict(spec.options.extra) == {"mirostat": 2, "custom": "x"}
    assert json.loads(spec.format)["properties"]["a"]["type"] == "integer"
    assert list(spec.images) == [b"\x89PNG"]
    assert spec.keep_alive.seconds == 5400
    assert spec.think == cpb.THINK_MODE_LOW


async def test_keep_alive_forms(http: ClientSession, core: FakeCore) -> None:
    for value, seconds in ((300, 300), ("5m", 300), (-1, -1), ("-1s", -1), (1.9, 1), ("0", 0)):
        async with http.post("/api/generate", json={"model": "llama3.2:1b", "keep_alive": value}) as resp:
            assert resp.status == 200, value
        assert core.requests[-1][0].spec.keep_alive.seconds == seconds, value
    async with http.post("/api/generate", json={"model": "llama3.2:1b", "keep_alive": "3600"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == 'time: missing unit in duration "3600"'


async def test_wrong_types_get_go_messages(http: ClientSession) -> None:
    cases = [
        ({"model": "llama3.2:1b", "prompt": 3}, "GenerateRequest.prompt of type string"),
        (
            {"model": "llama3.2:1b", "prompt": "x", "options": {"temperature": "hot"}},
            'option "temperature" must be of type float32',
        ),
        (
            {"model": "llama3.2:1b", "prompt": "x", "options": {"top_k": "many"}},
            'option "top_k" must be of type integer',
        ),
        (
            {"model": "llama3.2:1b", "prompt": "x", "options": {"stop": [1]}},
            'option "stop" must be of an array of strings',
        ),
        ({"model": "llama3.2:1b", "prompt": "x", "stream": "yes"}, "GenerateRequest.stream of type bool"),
        ({"model": "llama3.2:1b", "prompt": "x", "format": "yaml"}, "invalid format"),
        ({"model": "llama3.2:1b", "prompt": "x", "images": ["***"]}, "illegal base64"),
        ({"model": "llama3.2:1b", "prompt": "x", "raw": True, "system": "s"}, "raw mode does not support"),
    ]
    for body, message in cases:
        async with http.post("/api/generate", json=body) as resp:
            assert resp.status == 400, body
            assert message in (await resp.json())["error"], body


async def test_model_errors_as_ollama(http: ClientSession) -> None:
    async with http.post("/api/generate", json={"model": "nope", "prompt": "x"}) as resp:
        assert resp.status == 404 and (await resp.json()) == {"error": "model 'nope' not found"}
    async with http.post("/api/generate", json={"model": "", "prompt": "x"}) as resp:
        assert resp.status == 404 and (await resp.json()) == {"error": "model '' not found"}
    async with http.post("/api/chat", json={"model": "", "messages": []}) as resp:
        assert resp.status == 400 and (await resp.json()) == {"error": "model is required"}
    async with http.post("/api/embed", json={"model": "nope", "input": "x"}) as resp:
        assert (await resp.json()) == {"error": 'model "nope" not found, try pulling it first'}
    async with http.post(
        "/api/chat", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    ) as resp:
        assert resp.status == 404 and (await resp.json()) == {"error": "model 'nope' not found"}


async def test_bad_bodies(http: ClientSession) -> None:
    for raw, status in ((b"", 400), (b"{", 400), (b"[1]", 400), (b"NaN", 400), (b'{"a":1e999}', 400)):
        async with http.post("/api/generate", data=raw) as resp:
            assert resp.status == status, raw
            assert isinstance((await resp.json())["error"], str)
    async with http.post("/api/chat", data=b"x" * (MAX_BODY_BYTES + 1)) as resp:
        assert resp.status == 413
        assert "too large" in (await resp.json())["error"]


async def test_domain_errors_map_to_statuses(http: ClientSession, core: FakeCore) -> None:
    table = [
        (errors.InvalidArgument("spec.prompt", "prompt too large"), 400),
        (errors.ResourceExhausted("router busy"), 503),
        (errors.ResourceExhausted("slow down", reason="RATE_LIMITED"), 429),
        (errors.Unavailable("no healthy node serves llama3.2:1b"), 503),
        (errors.DeadlineExceeded("deadline passed"), 504),
        (errors.FailedPrecondition('"nomic-embed-text" does not support generate'), 400),
    ]
    for err, status in table:
        core.fail_before = err
        async with http.post("/api/generate", json={"model": "llama3.2:1b", "prompt": "x"}) as resp:
            assert resp.status == status, err
            assert (await resp.json()) == {"error": err.message}


async def test_mid_stream_error_is_a_final_error_line(http: ClientSession, core: FakeCore) -> None:
    core.fail_after_chunks = 2
    async with http.post(
        "/api/chat", json={"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x"}]}
    ) as resp:
        assert resp.status == 200
        lines = await _lines(resp)
    assert [line.get("message", {}).get("content") for line in lines[:2]] == ["Hello", " from"]
    assert lines[-1] == {"error": "node-1 went away"}
    assert not any(line.get("done") for line in lines)


async def test_chat_stream_and_tools(http: ClientSession, core: FakeCore) -> None:
    body: dict[str, Any] = {"model": "llama3.2:1b", "messages": [{"role": "USER", "content": "weather?"}]}
    async with http.post("/api/chat", json=body) as resp:
        lines = await _lines(resp)
    assert lines[-1]["message"] == {"role": "assistant", "content": ""} and lines[-1]["done_reason"] == "stop"
    assert core.requests[-1][0].spec.messages[0].role == "user"
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    body = {**body, "stream": False, "tools": [tool]}
    async with http.post("/api/chat", json=body) as resp:
        reply = await resp.json()
    call = reply["message"]["tool_calls"][0]
    assert call == {
        "id": "call0001",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo", "days": 3}},
    }


async def test_embed_and_legacy_embeddings(http: ClientSession, core: FakeCore) -> None:
    async with http.post(
        "/api/embed", json={"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 2}
    ) as resp:
        reply = await resp.json()
    assert reply["model"] == "nomic-embed-text" and reply["embeddings"] == [[0.5, 0.5], [0.5, 0.5]]
    assert reply["prompt_eval_count"] == 4 and "load_duration" not in reply
    async with http.post("/api/embed", json={"model": "nomic-embed-text", "input": 5}) as resp:
        assert resp.status == 400 and (await resp.json()) == {"error": "invalid input type"}
    async with http.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": "a"}) as resp:
        assert (await resp.json()) == {"embedding": [0.5] * 4}
    async with http.post("/api/embeddings", json={"prompt": "a"}) as resp:
        assert resp.status == 400 and (await resp.json()) == {"error": "model is required"}


async def test_tags_ps_show(http: ClientSession) -> None:
    async with http.get("/api/tags") as resp:
        tags = await resp.json()
    names = [m["name"] for m in tags["models"]]
    assert names == ["llama3.2:1b", "nomic-embed-text:latest"]
    llama = tags["models"][0]
    assert llama["size"] == 1_321_098_329 and llama["details"]["quantization_level"] == "Q8_0"
    assert llama["modified_at"] == "2024-09-10T20:26:40Z"
    async with http.get("/api/ps") as resp:
        ps = await resp.json()
    assert [m["name"] for m in ps["models"]] == ["llama3.2:1b"]
    assert ps["models"][0]["size"] == 1_500_000_000 and ps["models"][0]["context_length"] == 4096
    async with http.post("/api/show", json={"model": "nomic-embed-text"}) as resp:
        show = await resp.json()
    assert show["capabilities"] == ["embedding"] and show["model_info"] == {}
    async with http.post("/api/show", json={"model": "x"}) as resp:
        assert resp.status == 404 and (await resp.json()) == {"error": "model 'x' not found"}
    async with http.post("/api/show", json={}) as resp:
        assert resp.status == 400 and (await resp.json()) == {"error": "model is required"}


async def test_corral_headers_select_cache_and_session(http: ClientSession, core: FakeCore) -> None:
    headers = {"X-Corral-Cache-Mode": "bypass", "X-Corral-Session": "s-1"}
    body = {"model": "llama3.2:1b", "prompt": "x", "stream": False}
    async with http.post("/api/generate", json=body, headers=headers) as resp:
        assert resp.status == 200
    request = core.requests[-1][0]
    assert request.cache.mode == cpb.CACHE_MODE_BYPASS and request.session_id == "s-1"
    async with http.post("/api/generate", json=body, headers={"X-Corral-Cache-Mode": "sometimes"}) as resp:
        assert resp.status == 400
