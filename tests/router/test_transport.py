"""NodeTransport against a real HTTP server: connection reuse after streamed answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson
import pytest
from aiohttp import web

from services.router.transport import NodeTransport

pytestmark = pytest.mark.asyncio

LINES = [{"response": "a", "done": False}, {"response": "b", "done": False}, {"response": "", "done": True}]


class Node:
    """A streaming node that holds the chunked terminator back until told, and counts connections."""

    def __init__(self, trailing: bytes = b"") -> None:
        self.peers: set[object] = set()
        self.release_tail = asyncio.Event()
        self.trailing = trailing

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for line in LINES:
            await resp.write(orjson.dumps(line) + b"\n")
        await self.release_tail.wait()
        self.release_tail.clear()
        if self.trailing:
            await resp.write(self.trailing)
        await resp.write_eof()
        return resp


@pytest.fixture
async def node_url(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Node, str]]:
    node = Node(getattr(request, "param", b""))
    app = web.Application()
    app.router.add_post("/api/generate", node.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield node, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _ask(transport: NodeTransport, node: Node, url: str) -> list[str]:
    seen: list[str] = []
    async with aclosing(
        transport.stream(url, "/api/generate", {"model": "m"}, read_timeout_s=5, deadline=None)
    ) as chunks:
        async for chunk in chunks:
            seen.append(chunk["response"])
            if chunk["done"]:
                break
    # NOTE: the terminator is sent only after the caller has stopped reading at `done`.
    node.release_tail.set()
    await transport.settle()
    return seen


async def test_a_finished_stream_returns_its_connection_to_the_pool(node_url: tuple[Node, str]) -> None:
    node, url = node_url
    transport = NodeTransport()
    await transport.start()
    try:
        for _ in range(5):
            assert await _ask(transport, node, url) == ["a", "b", ""]
    finally:
        await transport.close()
    assert len(node.peers) == 1


@pytest.mark.parametrize("node_url", [b"x" * (128 * 1024)], indirect=True)
async def test_a_node_that_keeps_talking_after_done_loses_the_connection(node_url: tuple[Node, str]) -> None:
    node, url = node_url
    transport = NodeTransport()
    await transport.start()
    try:
        for _ in range(3):
            assert await _ask(transport, node, url) == ["a", "b", ""]
    finally:
        await transport.close()
    assert len(node.peers) == 3
