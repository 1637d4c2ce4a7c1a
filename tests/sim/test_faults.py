"""Each fault mode as a client sees it, injected through the Python API and the admin endpoint."""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import ollama
import pytest

from sim.config import Faults, NodeConfig
from sim.faults import RUNNER_ERROR
from sim.node import SimNode

LLM = "llama3.2:1b"
BUSY = "server busy, please try again.  maximum pending requests exceeded"
GENERATE = {"model": LLM, "prompt": "Why is the sky blue?", "stream": False}


async def _refused(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/api/version") as resp:
            await resp.read()
    except aiohttp.ClientConnectorError as exc:
        return exc.os_error.errno == errno.ECONNREFUSED
    return False


async def test_refuse_closes_the_socket_until_cleared(node: SimNode, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{node.url}/api/version") as resp:
        assert resp.status == 200
    node.set_fault(refuse=True)
    assert await _refused(http, node.url)
    with pytest.raises(ConnectionError):
        await ollama.AsyncClient(host=node.url).list()
    node.clear_faults()
    async with aiohttp.ClientSession() as fresh, fresh.get(f"{node.url}/api/version") as resp:
        assert resp.status == 200


async def test_refuse_at_start_up(make_node: Callable[..., Any], http: aiohttp.ClientSession) -> None:
    node: SimNode = await make_node(faults={"refuse": True})
    assert node.port > 0
    assert await _refused(http, node.url)
    node.set_fault(refuse=False)
    async with aiohttp.ClientSession() as fresh, fresh.get(f"{node.url}/") as resp:
        assert await resp.text() == "Ollama is running"


async def test_refuse_drops_open_connections(node: SimNode, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{node.url}/api/generate", json=GENERATE) as resp:
        assert resp.status == 200
    node.set_fault(refuse=True)
    # The pooled keep-alive connection was dropped: the next request cannot reuse it.
    with pytest.raises(aiohttp.ClientError):
        async with http.post(f"{node.url}/api/generate", json=GENERATE) as resp:
            await resp.read()


async def test_hang_accepts_and_never_answers(node: SimNode) -> None:
    node.set_fault(hang=True)
    timeout = aiohttp.ClientTimeout(total=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for path in ("/api/version", "/api/tags"):
            with pytest.raises(asyncio.TimeoutError):
                async with session.get(f"{node.url}{path}") as resp:
                    await resp.read()
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(f"{node.url}/api/generate", json=GENERATE) as resp:
                await resp.read()
    node.clear_faults()
    async with aiohttp.ClientSession() as session, session.get(f"{node.url}/api/version") as resp:
        assert resp.status == 200


async def test_slow_multiplies_costs(make_node: Callable[..., Any]) -> None:
    node: SimNode = await make_node(seed=3)
    client = ollama.AsyncClient(host=node.url)
    base = await client.generate(LLM, "the same question")
    node.set_fault(slow_factor=3)
    slow = await client.generate(LLM, "the same question")
    assert slow.response == base.response and slow.eval_count == base.eval_count
    assert slow.eval_duration == pytest.approx(3 * (base.eval_duration or 0), rel=1e-3)


async def test_error_rate_one_fails_every_inference(node: SimNode, http: aiohttp.ClientSession) -> None:
    node.set_fault(error_rate=1.0)
    with pytest.raises(ollama.ResponseError) as exc:
        await ollama.AsyncClient(host=node.url).chat(LLM, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 500 and exc.value.error == RUNNER_ERROR
    async with http.get(f"{node.url}/api/version") as resp:
        assert resp.status == 200  # probes are not inference: they keep working
    async with http.post(f"{node.url}/v1/chat/completions", json={"model": LLM, "messages": []}) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"]["message"] == RUNNER_ERROR


async def test_error_rate_share_is_deterministic(make_node: Callable[..., Any]) -> None:
    async def statuses(node: SimNode) -> list[int]:
        result = []
        async with aiohttp.ClientSession() as session:
            for _ in range(40):
                async with session.post(f"{node.url}/api/generate", json=GENERATE) as resp:
                    result.append(resp.status)
        return result

    a: SimNode = await make_node(seed=5, faults={"error_rate": 0.5})
    b: SimNode = await make_node(seed=5, faults={"error_rate": 0.5})
    first = await statuses(a)
    assert set(first) == {200, 500}
    assert first == await statuses(b)


async def test_busy_burst_then_recovery(node: SimNode, http: aiohttp.ClientSession) -> None:
    node.set_fault(busy_count=3)
    seen = []
    for _ in range(5):
        async with http.post(f"{node.url}/api/generate", json=GENERATE) as resp:
            seen.append((resp.status, (await resp.json()).get("error")))
    assert seen[:3] == [(503, BUSY)] * 3
    assert [s for s, _ in seen[3:]] == [200, 200]
    assert node.faults.current.busy_count == 0


async def test_busy_until_cleared(node: SimNode) -> None:
    node.set_fault(busy_count=-1)
    client = ollama.AsyncClient(host=node.url)
    for _ in range(3):
        with pytest.raises(ollama.ResponseError) as exc:
            await client.embed("nomic-embed-text:v1.5", "hi")
        assert exc.value.status_code == 503 and exc.value.error == BUSY
    node.clear_faults()
    assert (await client.embed("nomic-embed-text:v1.5", "hi")).embeddings


async def test_cut_stream_after_n_tokens(node: SimNode, http: aiohttp.ClientSession) -> None:
    node.set_fault(cut_after_tokens=3)
    lines: list[dict[str, Any]] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{node.url}/api/generate", json={**GENERATE, "stream": True}) as resp:
            assert resp.status == 200
            async for raw in resp.content:
                lines.append(json.loads(raw))
    assert len(lines) == 3 and not any(line["done"] for line in lines)


async def test_cut_non_streamed_drops_the_connection(node: SimNode, http: aiohttp.ClientSession) -> None:
    node.set_fault(cut_after_tokens=0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(f"{node.url}/api/generate", json=GENERATE) as resp:
            await resp.read()


async def test_malformed_json(node: SimNode, http: aiohttp.ClientSession) -> None:
    node.set_fault(malformed=True)
    for method, path, body in (
        ("POST", "/api/generate", GENERATE),
        ("GET", "/api/tags", None),
        ("POST", "/api/embed", {"model": "nomic-embed-text:v1.5", "input": "x"}),
    ):
        async with http.request(method, f"{node.url}{path}", json=body) as resp:
            assert resp.status == 200
            with pytest.raises(ValueError):
                json.loads(await resp.read())
    with pytest.raises(json.JSONDecodeError):
        async for _ in await ollama.AsyncClient(host=node.url).chat(
            LLM, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


async def test_extra_latency_delays_answers(node: SimNode) -> None:
    node.set_fault(extra_latency_ms=5000)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.get(f"{node.url}/api/version") as resp:
                await resp.read()


async def test_admin_endpoint_controls_faults(node: SimNode, http: aiohttp.ClientSession) -> None:
    admin = node.admin_url
    assert admin is not None
    async with http.post(f"{admin}/_sim/faults", json={"busy": 1, "slow_factor": 2}) as resp:
        assert resp.status == 200
        assert (await resp.json())["busy_count"] == 1
    async with http.get(f"{admin}/_sim/faults") as resp:
        assert (await resp.json())["slow_factor"] == 2
    async with http.post(f"{node.url}/api/generate", json=GENERATE) as resp:
        assert resp.status == 503
    async with http.post(f"{admin}/_sim/faults", json={"refuse": True}) as resp:
        assert resp.status == 200
    assert await _refused(http, node.url)
    async with http.get(f"{admin}/_sim/stats") as resp:
        stats = await resp.json()
        assert stats["busy_rejections"] == 1 and stats["faults"]["refuse"] is True
    async with http.delete(f"{admin}/_sim/faults") as resp:
        assert await resp.json() == Faults().model_dump()
    async with (
        aiohttp.ClientSession() as fresh,
        fresh.post(f"{node.url}/api/generate", json=GENERATE) as resp,
    ):
        assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"no_such_fault": True}, "no_such_fault"),
        ({"slow_factor": "fast"}, "slow_factor"),
    ],
)
async def test_admin_rejects_bad_faults(
    node: SimNode, http: aiohttp.ClientSession, body: dict[str, Any], needle: str
) -> None:
    async with http.post(f"{node.admin_url}/_sim/faults", json=body) as resp:
        assert resp.status == 400
        assert needle in (await resp.json())["error"]
    assert node.faults.current == Faults()


async def test_restart_brings_a_cold_node_back(node: SimNode, http: aiohttp.ClientSession) -> None:
    port = node.port
    await node.load_model(LLM)
    node.set_fault(hang=True)
    await node.restart()
    assert node.port == port and node.stats()["loaded_models"] == [] and not node.faults.current.hang
    async with aiohttp.ClientSession() as fresh, fresh.get(f"{node.url}/api/ps") as resp:
        assert await resp.json() == {"models": []}


async def test_faults_from_config(http: aiohttp.ClientSession) -> None:
    async with SimNode(NodeConfig(time_scale=0, faults=Faults(busy_count=-1))) as node:
        async with http.post(f"{node.url}/api/generate", json=GENERATE) as resp:
            assert resp.status == 503
