"""Fleet-wide /api/pull, /api/delete and /api/copy over in-process simulator nodes (ModelAdmin + HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import ollama
import pytest

from services.common.auth import Authenticator
from services.router.scores import NodeView
from sim.node import SimNode
from tests.http.fake_core import model_admin_server
from tests.security.helpers import ADMIN_KEY, TENANT_A_KEY, key_entries

NEW_MODEL = "qwen2.5:0.5b"


class Fleet:
    """Three simulated nodes behind the HTTP API of a core with a ModelAdmin."""

    def __init__(self, nodes: list[SimNode], base_url: str) -> None:
        self.nodes = nodes
        self.base_url = base_url

    def installed(self, model: str) -> list[str]:
        return [n.config.name for n in self.nodes if any(m.startswith(model) for m in n.engine.installed)]


async def _serve(factory: Callable[..., Any], auth: Authenticator | None) -> AsyncIterator[Fleet]:
    nodes: list[SimNode] = [await factory(name=f"node-{i}") for i in (1, 2, 3)]
    views = [
        NodeView(node_id=f"node-{i}", address=n.url, labels={"gpu": "a10" if i < 3 else "t4"})
        for i, n in enumerate(nodes, start=1)
    ]
    async with model_admin_server(views, auth) as base_url:
        yield Fleet(nodes, base_url)


@pytest.fixture
async def fleet(make_node: Callable[..., Any]) -> AsyncIterator[Fleet]:
    async for f in _serve(make_node, None):
        yield f


@pytest.fixture
async def secured(make_node: Callable[..., Any]) -> AsyncIterator[Fleet]:
    async for f in _serve(make_node, Authenticator(key_entries())):
        yield f


async def test_ollama_client_pull_streams_merged_progress_then_success(fleet: Fleet) -> None:
    assert fleet.installed(NEW_MODEL) == []
    client = ollama.AsyncClient(host=fleet.base_url)
    parts = [p async for p in await client.pull(NEW_MODEL, stream=True)]
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    layered = [p for p in parts if p.digest]
    assert layered and all(p.total and p.completed is not None for p in layered)
    # NOTE: totals are summed over the nodes: the model layer's last line counts all three nodes.
    node = fleet.nodes[0]
    model_layer = max(layered, key=lambda p: p.total or 0)
    size = node.engine.catalog[next(k for k in node.engine.catalog if k.startswith(NEW_MODEL))].size_bytes
    assert model_layer.total is not None and model_layer.total > 2 * (size // 2)
    lines = [p for p in layered if p.digest == model_layer.digest]
    # NOTE: the total is the same on every line of a layer (the official CLI fixes it at the first).
    assert {p.total for p in lines} == {model_layer.total} and lines[-1].completed == lines[-1].total
    assert [p.completed for p in lines] == sorted(p.completed or 0 for p in lines)
    assert fleet.installed(NEW_MODEL) == ["node-1", "node-2", "node-3"]


async def test_pull_not_streamed_answers_one_object(fleet: Fleet) -> None:
    client = ollama.AsyncClient(host=fleet.base_url)
    reply = await client.pull(NEW_MODEL, stream=False)
    assert reply.status == "success"
    assert fleet.installed(NEW_MODEL) == ["node-1", "node-2", "node-3"]


async def test_selector_by_node_id_and_label(fleet: Fleet) -> None:
    async with aiohttp.ClientSession(base_url=fleet.base_url) as http:
        body = {"model": NEW_MODEL, "stream": False}
        async with http.post("/api/pull", json=body, headers={"X-Corral-Nodes": "node-3"}) as resp:
            assert resp.status == 200 and resp.headers["X-Corral-Nodes"] == "node-3"
        assert fleet.installed(NEW_MODEL) == ["node-3"]
        async with http.delete("/api/delete", json={"model": NEW_MODEL}, params={"nodes": "gpu=t4"}) as resp:
            assert resp.status == 200
        assert fleet.installed(NEW_MODEL) == []
        async with http.post("/api/pull", json=body, params={"nodes": "gpu=a10"}) as resp:
            assert resp.status == 200
        assert fleet.installed(NEW_MODEL) == ["node-1", "node-2"]
        async with http.post("/api/pull", json=body, params={"nodes": "node-9,gpu=h100"}) as resp:
            assert resp.status == 400
            text = (await resp.json())["error"]
            assert "node-9" in text and "gpu=h100" in text


async def test_a_failed_node_is_named_and_the_others_keep_the_model(fleet: Fleet) -> None:
    fleet.nodes[1].set_fault(refuse=True)
    client = ollama.AsyncClient(host=fleet.base_url)
    seen: list[Any] = []
    with pytest.raises(ollama.ResponseError) as caught:
        async for part in await client.pull(NEW_MODEL, stream=True):
            seen.append(part)
    assert "node-2" in str(caught.value) and "node-1" not in str(caught.value).split("(done on")[0]
    assert any(p.digest for p in seen)
    assert fleet.installed(NEW_MODEL) == ["node-1", "node-3"]
    with pytest.raises(ollama.ResponseError) as unary:
        await client.pull(NEW_MODEL, stream=False)
    assert unary.value.status_code == 502 and "node-2" in str(unary.value)


async def test_delete_and_copy_fan_out(fleet: Fleet) -> None:
    client = ollama.AsyncClient(host=fleet.base_url)
    await client.copy("llama3.2:1b", "team/llama:prod")
    assert fleet.installed("team/llama:prod") == ["node-1", "node-2", "node-3"]
    await client.delete("team/llama:prod")
    assert fleet.installed("team/llama:prod") == []
    with pytest.raises(ollama.ResponseError) as caught:
        await client.delete("team/llama:prod")
    assert caught.value.status_code == 404


async def test_create_and_push_stay_refused_with_a_reason(fleet: Fleet) -> None:
    async with aiohttp.ClientSession(base_url=fleet.base_url) as http:
        for path in ("/api/create", "/api/push"):
            async with http.post(path, json={"model": "x"}) as resp:
                assert resp.status == 501
                assert "not supported by Corral" in (await resp.json())["error"]


async def test_model_management_needs_an_admin_key(secured: Fleet) -> None:
    tenant = ollama.AsyncClient(host=secured.base_url, headers={"Authorization": f"Bearer {TENANT_A_KEY}"})
    for call in (
        lambda: tenant.pull(NEW_MODEL, stream=False),
        lambda: tenant.delete("llama3.2:1b"),
        lambda: tenant.copy("llama3.2:1b", "x:y"),
    ):
        with pytest.raises(ollama.ResponseError) as caught:
            await call()
        assert caught.value.status_code == 403 and "admin key" in str(caught.value)
    assert secured.installed(NEW_MODEL) == [] and secured.installed("x:y") == []
    admin = ollama.AsyncClient(host=secured.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert (await admin.pull(NEW_MODEL, stream=False)).status == "success"


async def test_a_model_no_node_can_pull_is_a_404_not_a_fleet_failure(fleet: Fleet) -> None:
    client = ollama.AsyncClient(host=fleet.base_url)
    with pytest.raises(ollama.ResponseError) as unary:
        await client.pull("no-such-model:7b", stream=False)
    assert unary.value.status_code == 404 and "file does not exist" in str(unary.value)
    with pytest.raises(ollama.ResponseError) as streamed:
        async for _ in await client.pull("no-such-model:7b", stream=True):
            pass
    assert "node-1" in str(streamed.value) and "node-3" in str(streamed.value)
