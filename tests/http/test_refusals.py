"""A request refused before its first token gets HTTP 503 with `Retry-After`, not a 200 stream."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientSession

from services.common import errors
from services.router.admission import Saturated
from tests.http.fake_core import FakeCore

MODEL = "llama3.2:1b"
CHAT = [{"role": "user", "content": "hi"}]

# (path, body, OpenAI error shape)
ENDPOINTS: list[tuple[str, dict[str, Any], bool]] = [
    ("/api/chat", {"model": MODEL, "messages": CHAT}, False),
    ("/api/chat", {"model": MODEL, "messages": CHAT, "stream": False}, False),
    ("/api/generate", {"model": MODEL, "prompt": "hi"}, False),
    ("/api/embed", {"model": MODEL, "input": "hi"}, False),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT, "stream": True}, True),
    ("/v1/chat/completions", {"model": MODEL, "messages": CHAT}, True),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "stream": True}, True),
    ("/v1/responses", {"model": MODEL, "input": "hi", "stream": True}, True),
    ("/v1/embeddings", {"model": MODEL, "input": "hi"}, True),
]


def _message(body: dict[str, Any], openai: bool) -> str:
    if openai:
        assert body["error"]["type"] == "api_error"
        return str(body["error"]["message"])
    assert set(body) == {"error"}
    return str(body["error"])


@pytest.mark.parametrize(("path", "body", "openai"), ENDPOINTS)
async def test_saturation_is_a_503_with_retry_after(
    http: ClientSession, core: FakeCore, path: str, body: dict[str, Any], openai: bool
) -> None:
    core.fail_before = Saturated("every node serving model 'llama3.2:1b' is full", retry_after_s=2.5)
    async with http.post(path, json=body) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "3"
        assert resp.content_type == "application/json"
        assert _message(await resp.json(), openai) == core.fail_before.message


@pytest.mark.parametrize(
    "error",
    [
        errors.Unavailable("no node can serve model 'llama3.2:1b' now", reason="NO_NODE_AVAILABLE"),
        errors.Unavailable("no node could answer (tried node-1): retry budget exhausted"),
        errors.ResourceExhausted("the router has 1024 requests in progress", reason="ROUTER_OVERLOADED"),
    ],
)
async def test_other_refusals_before_the_stream_suggest_a_second(
    http: ClientSession, core: FakeCore, error: errors.CorralError
) -> None:
    core.fail_before = error
    async with http.post("/api/chat", json={"model": MODEL, "messages": CHAT}) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert await resp.json() == {"error": error.message}


async def test_a_rate_limit_is_no_503(http: ClientSession, core: FakeCore) -> None:
    core.fail_before = errors.ResourceExhausted("slow down", reason="RATE_LIMITED")
    async with http.post("/api/chat", json={"model": MODEL, "messages": CHAT}) as resp:
        assert resp.status == 429


async def test_an_error_after_the_first_token_stays_in_the_stream(
    http: ClientSession, core: FakeCore
) -> None:
    core.fail_after_chunks = 1
    core.fail_error = Saturated("every node is full", retry_after_s=2)
    async with http.post("/api/chat", json={"model": MODEL, "messages": CHAT}) as resp:
        assert resp.status == 200 and "Retry-After" not in resp.headers
        text = await resp.text()
    assert text.rstrip().endswith('{"error":"every node is full"}')
