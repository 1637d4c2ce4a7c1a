"""NodeTransport against a real HTTP server: connection reuse, a node dying in the middle of a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson
import pytest
from aiohttp import web

from services.router.scores import Attempt
from services.router.transport import NodeError, NodeTransport

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


async def test_lines_received_before_a_node_dies_are_all_handed_on() -> None:
    sent = [{"response": f"t{i}", "done": False} for i in range(5)]

    async def dying(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for line in sent:
            await resp.write(orjson.dumps(line) + b"\n")
        # NOTE: the connection ends without the `done` line or the chunked terminator, as when the
        # node's process dies; the lines above are already on their way.
        assert request.transport is not None
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_post("/api/generate", dying)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    transport = NodeTransport()
    await transport.start()
    seen: list[str] = []
    try:
        with pytest.raises(NodeError) as caught:
            async with aclosing(
                transport.stream(url, "/api/generate", {"model": "m"}, read_timeout_s=5, deadline=None)
            ) as chunks:
                async for chunk in chunks:
                    seen.append(chunk["response"])
                    # NOTE: a slow reader (a client far away): the other lines and the end of the
                    # connection reach the buffer before the next read.
                    await asyncio.sleep(0.1)
    finally:
        await transport.close()
        await runner.cleanup()
    assert caught.value.kind is Attempt.STREAM_CUT
    assert seen == [line["response"] for line in sent]
