"""Must-show, end to end with real processes: fleet-wide pull, delete and copy through the router.

Three simulator nodes, health and the router (HTTP API on); a second router with authentication on
shares the same health for the admin-key checks (HTTP 403 and gRPC PERMISSION_DENIED).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import ollama
import pytest
import pytest_asyncio
from corral.v1 import health_service_pb2, health_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

from services.common.channels import PeerSecurity, make_channel
from tests.helpers.polling import wait_for
from tests.helpers.procs import ServiceProcess, free_port, run_cli
from tests.router.stack import Stack, start_stack
from tests.security.helpers import ADMIN_KEY, SERVICE_KEY, TENANT_A_KEY, keys_env

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

NEW_MODEL = "qwen2.5:0.5b"
OTHER_MODEL = "all-minilm:l6-v2"


class Models:
    """The stack, its router's HTTP base URL and the secured router's addresses."""

    def __init__(self, stack: Stack, http_port: int, secured: ServiceProcess, secured_http: int) -> None:
        self.stack = stack
        self.base_url = f"http://127.0.0.1:{http_port}"
        self.secured_url = f"http://127.0.0.1:{secured_http}"
        self.secured_grpc = f"127.0.0.1:{secured.port}"

    async def tags(self, node_id: str) -> set[str]:
        assert self.stack.http is not None
        async with self.stack.http.get(self.stack.node(node_id).url + "/api/tags") as resp:
            return {m["name"] for m in (await resp.json())["models"]}

    async def wait_healthy(self, node_id: str) -> None:
        assert self.stack.health is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.stack.health.port}") as channel:
            health = health_service_pb2_grpc.HealthServiceStub(channel)

            async def healthy() -> bool:
                reply = await health.ListNodes(health_service_pb2.ListNodesRequest(), timeout=5)
                return any(n.node_id == node_id and n.healthy and not n.ejected for n in reply.nodes)

            await wait_for(healthy, timeout_s=15, what=f"health reporting {node_id} healthy")

    async def remove_everywhere(self, model: str) -> None:
        """Deletes `model` from every node that has it (a test's teardown: the next test starts clean)."""
        if not any([model in await self.tags(n.node_id) for n in self.stack.nodes]):
            return
        assert self.stack.http is not None
        async with self.stack.http.delete(self.base_url + "/api/delete", json={"model": model}) as resp:
            assert resp.status == 200, await resp.text()
        for node in self.stack.nodes:
            assert model not in await self.tags(node.node_id)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def models() -> AsyncIterator[Models]:
    http_port = free_port()
    stack = await start_stack(node_count=3, router_env={"CORRAL_ROUTER__HTTP_PORT": str(http_port)})
    try:
        assert stack.health is not None
        secured_http = free_port()
        secured = ServiceProcess(
            "services.router",
            env={
                "CORRAL_ROUTER__PORT": "0",
                "CORRAL_ROUTER__HTTP_PORT": str(secured_http),
                "CORRAL_ROUTER__HEALTH_ADDR": f"127.0.0.1:{stack.health.port}",
                "CORRAL_ROUTER__CACHE_ADDR": "",
                "CORRAL_ROUTER__NODES": "[]",
                "CORRAL_AUTH__ENABLED": "true",
                "CORRAL_AUTH__KEYS": keys_env(),
                "CORRAL_AUTH__SERVICE_KEY": SERVICE_KEY,
            },
        )
        stack.extra.append(secured)
        await secured.start()
        yield Models(stack, http_port, secured, secured_http)
    finally:
        await stack.close()


async def test_the_ollama_client_pulls_on_every_node_with_progress_and_success(models: Models) -> None:
    for node in models.stack.nodes:
        assert NEW_MODEL not in await models.tags(node.node_id)
    try:
        await _pull_everywhere(models)
    finally:
        await models.remove_everywhere(NEW_MODEL)


async def _pull_everywhere(models: Models) -> None:
    client = ollama.AsyncClient(host=models.base_url)
    parts = [p async for p in await client.pull(NEW_MODEL, stream=True)]
    assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
    progress = [p for p in parts if p.digest]
    assert progress and all(p.status and p.status.startswith("pulling ") for p in progress)
    assert any(p.completed and p.total and p.completed < p.total for p in progress)
    biggest = max(progress, key=lambda p: p.total or 0)
    last = [p for p in progress if p.digest == biggest.digest][-1]
    # NOTE: summed over the three nodes: the model layer counts three times the node's layer.
    assert last.total is not None and last.total > 3 * 397_000_000 and last.completed == last.total
    for node in models.stack.nodes:
        assert NEW_MODEL in await models.tags(node.node_id)


async def test_a_failing_node_is_named_and_the_others_keep_the_model(models: Models) -> None:
    stack = models.stack
    for node in stack.nodes:
        assert OTHER_MODEL not in await models.tags(node.node_id)
    await stack.set_fault("node-2", refuse=True)
    try:
        client = ollama.AsyncClient(host=models.base_url, headers={"X-Corral-Nodes": "node-1,node-2"})
        with pytest.raises(ollama.ResponseError) as caught:
            async for _ in await client.pull(OTHER_MODEL, stream=True):
                pass
        message = str(caught.value)
        assert "node-2" in message and "failed on 1 of 2 nodes" in message and "done on node-1" in message
    finally:
        await stack.admin("node-2", "DELETE", "/_sim/faults")
        # NOTE: the next test may fan out to node-2: wait until health has it healthy, not ejected.
        await models.wait_healthy("node-2")
    try:
        assert OTHER_MODEL in await models.tags("node-1")
        assert OTHER_MODEL not in await models.tags("node-2")
        assert OTHER_MODEL not in await models.tags("node-3")
    finally:
        await models.remove_everywhere(OTHER_MODEL)


async def test_copy_and_delete_fan_out(models: Models) -> None:
    client = ollama.AsyncClient(host=models.base_url)
    await client.copy("llama3.2:1b", "ops/llama:pinned")
    for node in models.stack.nodes:
        assert "ops/llama:pinned" in await models.tags(node.node_id)
    await client.delete("ops/llama:pinned")
    for node in models.stack.nodes:
        assert "ops/llama:pinned" not in await models.tags(node.node_id)
    with pytest.raises(ollama.ResponseError) as caught:
        await client.delete("ops/llama:pinned")
    assert caught.value.status_code == 404


async def test_a_tenant_key_is_refused_and_an_admin_key_is_served(models: Models) -> None:
    tenant = ollama.AsyncClient(host=models.secured_url, headers={"Authorization": f"Bearer {TENANT_A_KEY}"})
    with pytest.raises(ollama.ResponseError) as caught:
        await tenant.pull("mistral:7b", stream=False)
    assert caught.value.status_code == 403
    with pytest.raises(ollama.ResponseError) as deleting:
        await tenant.delete("llama3.2:1b")
    assert deleting.value.status_code == 403
    for node in models.stack.nodes:
        assert "llama3.2:1b" in await models.tags(node.node_id)
        assert OTHER_MODEL not in await models.tags(node.node_id)
    try:
        await _admin_pulls_and_deletes(models)
    finally:
        await models.remove_everywhere(OTHER_MODEL)


async def _admin_pulls_and_deletes(models: Models) -> None:
    request = model_service_pb2.PullModelRequest(model=OTHER_MODEL, nodes=["node-3"])
    channel = make_channel(models.secured_grpc, security=PeerSecurity(api_key=TENANT_A_KEY))
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            async for _ in stub.PullModel(request, timeout=10):
                pass
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await channel.close()
    assert OTHER_MODEL not in await models.tags("node-3")

    channel = make_channel(models.secured_grpc, security=PeerSecurity(api_key=ADMIN_KEY))
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        snapshots: list[Any] = [s async for s in stub.PullModel(request, timeout=30)]
    finally:
        await channel.close()
    assert snapshots[-1].done and not snapshots[-1].error
    assert [n.node_id for n in snapshots[-1].nodes] == ["node-3"]
    assert snapshots[-1].nodes[0].state == model_service_pb2.NODE_MODEL_STATE_DONE
    assert any(s.nodes[0].state == model_service_pb2.NODE_MODEL_STATE_PULLING for s in snapshots)
    assert OTHER_MODEL in await models.tags("node-3")
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        body = {"model": OTHER_MODEL}
        async with http.delete(models.secured_url + "/api/delete", json=body, headers=headers) as resp:
            assert resp.status == 200
    for node in models.stack.nodes:
        assert OTHER_MODEL not in await models.tags(node.node_id)


async def _corral(models: Models, *args: str) -> tuple[int, str, str]:
    """Runs the CLI as an operator would, against the stack's (unsecured) router."""
    assert models.stack.router is not None
    return await run_cli({"CORRAL_ROUTER_ADDR": f"127.0.0.1:{models.stack.router.port}"}, *args)


async def test_cli_pulls_and_removes_with_one_line_per_node_and_state(models: Models) -> None:
    for node in models.stack.nodes:
        assert NEW_MODEL not in await models.tags(node.node_id)
        assert OTHER_MODEL not in await models.tags(node.node_id)
    try:
        await _cli_pulls_and_removes(models)
    finally:
        await models.remove_everywhere(NEW_MODEL)
        await models.remove_everywhere(OTHER_MODEL)


async def _cli_pulls_and_removes(models: Models) -> None:
    code, out, err = await _corral(models, "models", "pull", "mistral:7b-q2", "--nodes", "node-1")
    assert code == 1 and "node-1" in err
    code, out, err = await _corral(models, "models", "pull", NEW_MODEL, "--nodes", "node-1,node-3")
    assert code == 0, err
    lines = out.splitlines()
    states = [line.split()[:2] for line in lines[:-1]]
    assert ["node-1", "done"] in states and ["node-3", "done"] in states
    assert all(node in ("node-1", "node-3") for node, _ in states)
    assert lines[-1] == f"pulled {NEW_MODEL} on 2 of 2 nodes"
    code, out, err = await _corral(models, "models", "rm", NEW_MODEL, "--json")
    assert code == 0, err
    reply = json.loads(out)
    # NOTE: pulled on node-1 and node-3 only: node-2 never had it.
    assert [(n["node_id"], n["state"]) for n in reply["nodes"]] == [
        ("node-1", "NODE_MODEL_STATE_DONE"),
        ("node-2", "NODE_MODEL_STATE_ABSENT"),
        ("node-3", "NODE_MODEL_STATE_DONE"),
    ]
    for node in models.stack.nodes:
        assert NEW_MODEL not in await models.tags(node.node_id)
    code, out, err = await _corral(models, "models", "pull", OTHER_MODEL, "--nodes", "node-2", "--json")
    assert code == 0, err
    snapshots = [json.loads(line) for line in out.splitlines()]
    assert snapshots[-1]["done"] and snapshots[-1]["nodes"][0]["state"] == "NODE_MODEL_STATE_DONE"
    code, out, err = await _corral(models, "models", "pull", OTHER_MODEL, "--nodes", "node-9")
    assert code == 1 and "node-9" in err


async def test_grpc_copy_and_delete_report_each_node(models: Models) -> None:
    channel = make_channel(models.secured_grpc, security=PeerSecurity(api_key=ADMIN_KEY))
    try:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        copied = await stub.CopyModel(
            model_service_pb2.CopyModelRequest(
                source="llama3.2:1b", destination="ops/copy:1", nodes=["node-1", "node-2"]
            ),
            timeout=10,
        )
        assert [(n.node_id, n.state) for n in copied.nodes] == [
            ("node-1", model_service_pb2.NODE_MODEL_STATE_DONE),
            ("node-2", model_service_pb2.NODE_MODEL_STATE_DONE),
        ]
        deleted = await stub.DeleteModel(model_service_pb2.DeleteModelRequest(model="ops/copy:1"), timeout=10)
        assert [(n.node_id, n.state) for n in deleted.nodes] == [
            ("node-1", model_service_pb2.NODE_MODEL_STATE_DONE),
            ("node-2", model_service_pb2.NODE_MODEL_STATE_DONE),
            ("node-3", model_service_pb2.NODE_MODEL_STATE_ABSENT),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.DeleteModel(model_service_pb2.DeleteModelRequest(model="ops/copy:1"), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.DeleteModel(
                model_service_pb2.DeleteModelRequest(model="llama3.2:1b", nodes=["node-9"]), timeout=10
            )
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "node-9" in (
            unknown.value.details() or ""
        )
    finally:
        await channel.close()
    for node in models.stack.nodes:
        assert "ops/copy:1" not in await models.tags(node.node_id)
        assert "llama3.2:1b" in await models.tags(node.node_id)
