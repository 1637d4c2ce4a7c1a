"""A non-streamed fleet pull answers 404 only when every node says the model does not exist; any other
node error (registry, DNS, disk) is a 502 naming the nodes, which clients retry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from services.router.model_admin import says_model_missing
from services.router.scores import NodeView
from tests.http.fake_core import model_admin_server

MISSING = "pull model manifest: file does not exist"
OUTAGE = (
    'pull model manifest: Get "https://registry.ollama.ai/v2/library/x/manifests/latest": '
    "dial tcp: lookup registry.ollama.ai: no such host"
)
DISK = "write /root/.ollama/models/blobs/sha256-partial: no space left on device"


def _node(error: str) -> web.Application:
    async def pull(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"status":"pulling manifest"}\n')
        await response.write((json.dumps({"error": error}) + "\n").encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/api/pull", pull)
    return app


@asynccontextmanager
async def _fleet(errors: list[str]) -> AsyncIterator[str]:
    runners: list[web.AppRunner] = []
    views: list[NodeView] = []
    for i, error in enumerate(errors, start=1):
        runner = web.AppRunner(_node(error))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runners.append(runner)
        views.append(NodeView(node_id=f"node-{i}", address=f"http://127.0.0.1:{port}"))
    try:
        async with model_admin_server(views, pull_read_timeout_s=5) as base_url:
            yield base_url
    finally:
        for runner in runners:
            await runner.cleanup()


async def _pull(base_url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/api/pull", json={"model": "x", "stream": False}) as resp,
    ):
        return resp.status, await resp.text()


@pytest.mark.parametrize(
    ("errors", "status"),
    [
        ([MISSING, MISSING], 404),
        ([OUTAGE, OUTAGE], 502),
        ([DISK, DISK], 502),
        ([MISSING, OUTAGE], 502),
    ],
)
async def test_only_a_missing_model_on_every_node_is_a_404(errors: list[str], status: int) -> None:
    async with _fleet(errors) as base_url:
        code, body = await _pull(base_url)
    assert code == status, body
    if status == 502:
        assert "node-1" in body and "node-2" in body


@pytest.mark.parametrize(
    ("message", "missing"),
    [
        (MISSING, True),
        ("model 'x' not found", True),
        (OUTAGE, False),
        (DISK, False),
        ("404 page not found", False),
        ("max retries exceeded: EOF", False),
    ],
)
def test_which_node_errors_say_the_model_does_not_exist(message: str, missing: bool) -> None:
    assert says_model_missing(message) is missing
