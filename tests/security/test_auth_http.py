"""API keys at the HTTP front (Ollama and OpenAI shapes): 401, 429, open liveness routes, the tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web

from services.common.auth import Authenticator
from services.router.config import RouterConfig
from services.router.http.app import start_http_server
from tests.http.fake_core import FakeCore
from tests.security.helpers import TENANT_A_KEY, TENANT_B_KEY, FrozenClock, key_entries

pytestmark = pytest.mark.timeout(60)
GENERATE = {"model": "llama3.2:1b", "prompt": "hi", "stream": False}


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
async def http(core: FakeCore, clock: FrozenClock) -> AsyncIterator[ClientSession]:
    auth = Authenticator(key_entries(rate_per_s=1.0, burst=2), clock=clock)
    runner: web.AppRunner
    runner, port = await start_http_server(core, RouterConfig(http_port=0), auth)
    try:
        async with ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield session
    finally:
        await runner.cleanup()


async def test_missing_and_wrong_keys_get_401_in_each_apis_shape(http: ClientSession, core: FakeCore) -> None:
    async with http.post("/api/generate", json=GENERATE) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "API key" in (await resp.json())["error"]
    async with http.post("/api/chat", json={}, headers={"Authorization": "Bearer crl_wrong"}) as resp:
        assert resp.status == 401
        assert (await resp.json()) == {"error": "invalid API key"}
    async with http.get("/v1/models", headers={"Authorization": "Basic eDp5"}) as resp:
        assert resp.status == 401
        body = await resp.json()
        assert "API key" in body["error"]["message"]
    assert core.requests == []


async def test_liveness_routes_stay_open(http: ClientSession) -> None:
    for path in ("/", "/api/version"):
        async with http.get(path) as resp:
            assert resp.status == 200, path


async def test_the_tenant_comes_from_the_key(http: ClientSession, core: FakeCore) -> None:
    for key, tenant in ((TENANT_A_KEY, "tenant-a"), (TENANT_B_KEY, "tenant-b")):
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post("/api/generate", json=GENERATE, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        assert core.requests[-1][1] == tenant


async def test_rate_limit_is_429_with_retry_after(
    http: ClientSession, core: FakeCore, clock: FrozenClock
) -> None:
    headers = {"Authorization": f"Bearer {TENANT_A_KEY}"}
    statuses = []
    for _ in range(3):
        async with http.post("/api/generate", json=GENERATE, headers=headers) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                assert "rate limit" in (await resp.json())["error"]
    assert statuses == [200, 200, 429]
    async with http.post("/v1/chat/completions", json={}, headers=headers) as resp:
        assert resp.status == 429
        assert "rate limit" in (await resp.json())["error"]["message"]
    clock.now += 1.0
    async with http.post("/api/generate", json=GENERATE, headers=headers) as resp:
        assert resp.status == 200
