"""Fixtures: the HTTP API over a fake core, served on a free 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web

from services.router.config import RouterConfig
from services.router.http.app import start_http_server
from tests.http.fake_core import FakeCore

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
async def base_url(core: FakeCore) -> AsyncIterator[str]:
    cfg = RouterConfig(http_port=0, max_message_bytes=MAX_BODY_BYTES)
    runner: web.AppRunner
    runner, port = await start_http_server(core, cfg)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=base_url) as session:
        yield session
