"""A batch of generated malformed bodies against the HTTP API over a fake core: never a 5xx."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.router.config import RouterConfig
from services.router.http.app import start_http_server
from tests.http.fake_core import FakeCore
from tests.http.malformed import ENDPOINTS, raw_body_for


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    """The API over a fake core on its own event loop thread (hypothesis tests are synchronous)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        runner, port = await start_http_server(FakeCore(), RouterConfig(http_port=0, max_message_bytes=4096))
        holder["runner"], holder["port"] = runner, port
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert started.wait(10)
    with httpx.Client(base_url=f"http://127.0.0.1:{holder['port']}", timeout=10) as client:
        yield client
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)  # type: ignore[attr-defined]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(ENDPOINTS))
    return path, draw(raw_body_for(path))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=_requests())
def test_generated_bodies_never_get_a_5xx(api: httpx.Client, request: tuple[str, bytes]) -> None:
    path, body = request
    resp = api.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code < 500, (path, body, resp.text)
    if resp.status_code >= 400:
        error = resp.json()["error"]
        if path.startswith("/v1/"):
            assert isinstance(error["message"], str)
            expected = "not_found_error" if resp.status_code == 404 else "invalid_request_error"
            assert error["type"] == expected
        else:
            assert isinstance(error, str) and error


def test_oversized_body_is_413_in_both_shapes(api: httpx.Client) -> None:
    resp = api.post("/api/generate", content=b"{" + b" " * 5000 + b"}")
    assert resp.status_code == 413 and "too large" in resp.json()["error"]
    resp = api.post("/v1/chat/completions", content=b"{" + b" " * 5000 + b"}")
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "invalid_request_error"
