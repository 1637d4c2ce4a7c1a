"""End to end: the admission queue under saturation, through the router's HTTP API and gRPC.

Two simulated nodes, one request in flight per node at the router (`max_inflight_per_node` 1), room
for seven waiters, auth on with two tenant keys. Tenant A floods first, tenant B arrives later: B is
served in turns with A, the excess beyond the bound gets a 503 with `Retry-After` (RESOURCE_EXHAUSTED
over gRPC) before any byte of a stream, and once the burst is served nothing is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from corral.v1 import common_pb2, router_service_pb2, router_service_pb2_grpc

from services.common.channels import PeerSecurity, make_channel
from services.router.http.streaming import NDJSON_CONTENT_TYPE
from tests.helpers.procs import ServiceProcess, free_port
from tests.observability.scrape import scrape, value
from tests.router.stack import MODEL, SimProcess, nodes_json, start_sims
from tests.security.helpers import SERVICE_KEY, TENANT_A_KEY, TENANT_B_KEY, keys_env

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

MAX_WAITING = 7
# NOTE: 20 tokens at the simulator's 60 tokens/s, slowed so that one answer holds its node slot for
# about 3 s: long enough for every request of a burst to be queued before the first slot frees.
ANSWER_TOKENS = 20
SLOW_FACTOR = 900


@dataclass
class Saturable:
    nodes: list[SimProcess]
    router: ServiceProcess
    http_url: str
    metrics_port: int
    session: aiohttp.ClientSession

    async def metric(self, name: str, **labels: str) -> float:
        return value(await scrape(self.session, self.metrics_port), name, **labels)

    async def queue_depth_reaches(self, depth: int, timeout_s: float = 10.0) -> None:
        """Polls (bounded) the router's queue depth gauge until it shows `depth` waiters."""
        deadline = time.monotonic() + timeout_s
        while await self.metric("corral_router_admission_queue_depth") != depth:
            assert time.monotonic() < deadline, f"the admission queue never held {depth} requests"
            await asyncio.sleep(0.02)


async def _models_known(session: aiohttp.ClientSession, url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        async with session.get(url + "/api/tags", headers=_auth(TENANT_A_KEY)) as resp:
            if resp.status == 200 and MODEL in [m["name"] for m in (await resp.json())["models"]]:
                return
        assert time.monotonic() < deadline, "the router never listed the fleet's models"
        await asyncio.sleep(0.05)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def saturable() -> AsyncIterator[Saturable]:
    nodes = await start_sims(2, 0.01, 1, 1)
    http_port, metrics_port = free_port(), free_port()
    router = ServiceProcess(
        "services.router",
        env={
            "CORRAL_ROUTER__PORT": "0",
            "CORRAL_ROUTER__HTTP_PORT": str(http_port),
            "CORRAL_ROUTER__METRICS_PORT": str(metrics_port),
            "CORRAL_ROUTER__HEALTH_ADDR": "",
            "CORRAL_ROUTER__CACHE_ADDR": "",
            "CORRAL_ROUTER__STATIC_REFRESH_S": "0.5",
            "CORRAL_ROUTER__NODES": nodes_json(nodes, "node_id"),
            "CORRAL_ROUTER__BALANCER__MAX_INFLIGHT_PER_NODE": "1",
            "CORRAL_ROUTER__ADMISSION__MAX_WAITING": str(MAX_WAITING),
            "CORRAL_ROUTER__ADMISSION__RETRY_AFTER_S": "3",
            "CORRAL_AUTH__ENABLED": "true",
            "CORRAL_AUTH__KEYS": keys_env(),
            "CORRAL_AUTH__SERVICE_KEY": SERVICE_KEY,
        },
    )
    session = aiohttp.ClientSession()
    try:
        await router.start()
        url = f"http://127.0.0.1:{http_port}"
        await _models_known(session, url)
        for node in nodes:
            async with session.post(node.url + "/api/generate", json={"model": MODEL}) as resp:
                assert resp.status == 200, await resp.text()
            async with session.post(node.admin_url + "/_sim/faults", json={"slow": SLOW_FACTOR}) as resp:
                assert resp.status == 200, await resp.text()
        yield Saturable(nodes, router, url, metrics_port, session)
    finally:
        await session.close()
        await router.kill()
        await asyncio.gather(*(p.kill() for p in {id(n.proc): n.proc for n in nodes}.values()))


def _chat(name: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"request {name}"}],
        "options": {"num_predict": ANSWER_TOKENS},
    }


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    lines: list[str]


async def test_saturation_queues_fairly_and_refuses_the_excess_before_the_stream(
    saturable: Saturable,
) -> None:
    session, url = saturable.session, saturable.http_url
    started: list[str] = []

    async def chat(name: str, key: str) -> Reply:
        async with session.post(url + "/api/chat", json=_chat(name), headers=_auth(key)) as resp:
            # NOTE: headers arrive with the first token: this is the order in which slots were granted.
            started.append(name)
            body = await resp.text()
            return Reply(resp.status, dict(resp.headers), body.splitlines())

    # Tenant A fills both slots and queues four more; then tenant B queues three: the queue is full.
    a = [asyncio.create_task(chat(f"a{i}", TENANT_A_KEY)) for i in range(6)]
    await saturable.queue_depth_reaches(4)
    b = [asyncio.create_task(chat(f"b{i}", TENANT_B_KEY)) for i in range(3)]
    await saturable.queue_depth_reaches(MAX_WAITING)

    # Beyond the bound: refused at once with a status, not a 200 stream with an error line.
    async with session.post(url + "/api/chat", json=_chat("a-extra"), headers=_auth(TENANT_A_KEY)) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "3"
        assert resp.content_type == "application/json"
        refusal = await resp.json()
    assert set(refusal) == {"error"} and "admission queue" in refusal["error"]
    openai_body = {**_chat("a-extra-2"), "stream": True}
    async with session.post(
        url + "/v1/chat/completions", json=openai_body, headers=_auth(TENANT_A_KEY)
    ) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "3"
        assert "admission queue" in (await resp.json())["error"]["message"]
    channel = make_channel(f"127.0.0.1:{saturable.router.port}", security=PeerSecurity(api_key=TENANT_B_KEY))
    try:
        spec = common_pb2.ChatSpec(
            model=MODEL, messages=[common_pb2.ChatMessage(role="user", content="grpc extra")]
        )
        stream = router_service_pb2_grpc.RouterServiceStub(channel).ChatStream(
            router_service_pb2.ChatStreamRequest(spec=spec), timeout=30
        )
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in stream:
                received.append(message)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "admission queue" in (caught.value.details() or "")
        assert received == []
    finally:
        await channel.close()
    assert await saturable.metric("corral_router_admission_refusals_total", reason="queue_full") == 3

    # Everything admitted is served in full; B took turns with A instead of waiting behind all of A.
    replies = await asyncio.gather(*a, *b)
    for reply in replies:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith(NDJSON_CONTENT_TYPE)
        assert '"done":true' in reply.lines[-1] and '"error"' not in "".join(reply.lines)
    tenants = [name[0] for name in started]
    assert sorted(tenants[:2]) == ["a", "a"]
    assert tenants[2:6].count("b") == 2, started  # first in first out would be a, a, a, a
    assert tenants[-1] == "a", started
    assert await saturable.metric("corral_router_admission_queue_depth") == 0

    # Load gone: nothing is refused.
    after = await asyncio.gather(
        chat("a-after", TENANT_A_KEY), chat("b-after", TENANT_B_KEY), chat("a-after-2", TENANT_A_KEY)
    )
    assert [r.status for r in after] == [200, 200, 200]
    assert await saturable.metric("corral_router_admission_refusals_total", reason="queue_full") == 3
