"""Fuzzing every HTTP route of the drop-in APIs: malformed, oversized, deeply nested, wrongly typed bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import examples
from tests.fuzz.protostrategies import KNOWN_MODELS
from tests.fuzz.servers import MAX_MESSAGE_BYTES, Servers

pytestmark = [pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]

POST_ROUTES = (
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/api/pull",
    "/v1/chat/completions",
    "/v1/embeddings",
)
GET_ROUTES = ("/", "/api/version", "/api/tags", "/api/ps", "/v1/models", "/v1/models/llama3.2:1b")
# NOTE: every request here is answered promptly, bad input included: the node is a no-delay simulator
# and nothing else loads the router (the slowest request of a run took ~0.13 s). So no input has a
# reason to take the 5 s a hang is given, nor to get 503 (no node could answer, on an idle healthy
# fleet: the input broke the node or the router) or 504 (the router's own deadline ran out: a hang).
CALL_TIMEOUT_S = 5.0
# Keys the routes read, so that wrongly typed values reach the field checks and not only "missing".
KEYS = (
    "model",
    "prompt",
    "messages",
    "stream",
    "options",
    "format",
    "keep_alive",
    "system",
    "template",
    "raw",
    "images",
    "input",
    "truncate",
    "think",
    "suffix",
    "context",
    "tools",
    "role",
    "content",
    "max_tokens",
    "temperature",
    "stop",
    "seed",
    "n",
    "stream_options",
    "response_format",
    "encoding_format",
    "dimensions",
    "name",
)


def _json() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.sampled_from(KNOWN_MODELS),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=5),
        ),
        max_leaves=20,
    )


def _messages() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {},
        optional={
            "role": st.one_of(st.sampled_from(("user", "system", "assistant", "tool", "bogus")), _json()),
            "content": st.one_of(st.text(max_size=30), _json()),
            "images": _json(),
        },
    )
    return st.one_of(st.lists(message, max_size=4), _json())


def _bodies() -> st.SearchStrategy[bytes]:
    request = st.fixed_dictionaries(
        {},
        optional={
            "model": st.one_of(st.sampled_from(KNOWN_MODELS), _json()),
            "prompt": st.one_of(st.text(max_size=40), _json()),
            "messages": _messages(),
            "input": _json(),
            "stream": st.one_of(st.booleans(), _json()),
            "options": _json(),
            "format": _json(),
            "keep_alive": st.one_of(st.sampled_from(("5m", "-1", "0", "1h30m", "x")), _json()),
        },
    ).flatmap(lambda base: st.dictionaries(st.sampled_from(KEYS), _json(), max_size=3).map(base.__or__))
    deep = st.integers(min_value=50, max_value=200_000).map(lambda n: b"[" * n + b"]" * n)
    deep_objects = st.integers(min_value=50, max_value=50_000).map(
        lambda n: b'{"model":' * n + b"1" + b"}" * n
    )
    return st.one_of(
        request.map(lambda v: json.dumps(v).encode()),
        _json().map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.text(max_size=50).map(str.encode),
        deep,
        deep_objects,
        st.just(b'{"model": "llama3.2:1b", "prompt": "' + b"y" * (MAX_MESSAGE_BYTES + 1) + b'"}'),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(servers: Servers) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(servers.http_app)) as test_client:
        yield test_client


async def ask(client: TestClient[Any, Any], method: str, path: str, **kw: Any) -> tuple[int, bytes, str]:
    """The reply's status, body and content type; fails naming the route when none comes in time."""
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S), client.request(method, path, **kw) as resp:
            return resp.status, await resp.read(), resp.content_type
    except TimeoutError:
        pytest.fail(f"{method} {path}: no answer within {CALL_TIMEOUT_S} s: it hangs on this input")


async def check_reply(status: int, body: bytes, content_type: str, path: str) -> None:
    """The property: no 5xx but 501; an error names the problem in the API's own error shape."""
    assert status != 500, f"{path}: 500 {body[:300]!r}"
    assert status < 500 or status == 501, f"{path}: {status} {body[:300]!r}"
    if status < 400:
        return
    if content_type.startswith("text/plain"):
        assert body.strip(), f"{path}: {status} with an empty body"
        return
    error = json.loads(body)["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert isinstance(message, str) and message.strip(), f"{path}: {status} {body[:300]!r}"


@pytest.mark.parametrize("path", POST_ROUTES)
@settings(max_examples=examples(0.6, 10))
@given(body=_bodies())
async def test_post_routes(client: TestClient[Any, Any], path: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    await check_reply(*await ask(client, "POST", path, data=body, headers=headers), path)


@pytest.mark.parametrize("path", GET_ROUTES)
@settings(max_examples=examples(0.25, 5))
@given(
    query=st.dictionaries(st.sampled_from(KEYS), st.text(max_size=10), max_size=3),
    body=st.binary(max_size=50),
)
async def test_get_routes(
    client: TestClient[Any, Any], path: str, query: dict[str, str], body: bytes
) -> None:
    await check_reply(*await ask(client, "GET", path, params=query, data=body), path)


@given(
    method=st.sampled_from(("PUT", "PATCH", "DELETE", "OPTIONS", "GET", "POST")),
    # NOTE: a path that starts with "//" reads as a scheme-relative URL ("//host/..."), which the test
    # client refuses to send; the slashes after the first are kept.
    path=st.one_of(
        st.sampled_from(POST_ROUTES + GET_ROUTES), st.text(max_size=20).map(lambda s: "/" + s.lstrip("/"))
    ),
)
async def test_any_method_on_any_path(client: TestClient[Any, Any], method: str, path: str) -> None:
    if any(c in path for c in "?#%\\") or not path.isprintable():
        path = "/api/unknown"
    await check_reply(*await ask(client, method, path), path)
