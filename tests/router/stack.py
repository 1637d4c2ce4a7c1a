"""End-to-end stack for router tests: simulator nodes, health, cache and router as real processes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from corral.v1 import common_pb2, router_service_pb2, router_service_pb2_grpc

from services.router.balancer import rendezvous_weight
from tests.helpers.procs import ServiceProcess

MODEL = "llama3.2:1b"
EMBED_MODEL = "nomic-embed-text:v1.5"
_ADMIN = re.compile(r"admin (\d+)")

FAST_HEALTH_ENV = {
    "CORRAL_HEALTH__PROBE_INTERVAL_S": "0.3",
    "CORRAL_HEALTH__PROBE_TIMEOUT_S": "0.2",
    "CORRAL_HEALTH__HEARTBEAT_INTERVAL_S": "0.3",
    "CORRAL_HEALTH__MIN_UPDATE_INTERVAL_S": "0.02",
    "CORRAL_HEALTH__TAGS_EVERY_N_PROBES": "1",
    "CORRAL_HEALTH__OUTLIER__BASE_EJECTION_TIME_S": "0.5",
    "CORRAL_HEALTH__OUTLIER__MAX_EJECTION_TIME_S": "1.0",
    "CORRAL_HEALTH__SCORE__WINDOW_S": "1.0",
}


@dataclass
class SimProcess:
    """One simulator node; nodes of a fleet share a process, a solo node has its own (to be killed)."""

    node_id: str
    proc: ServiceProcess
    port: int = 0
    admin_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


@dataclass
class Stack:
    """The processes of one test and a client stub for the router."""

    nodes: list[SimProcess]
    health: ServiceProcess | None = None
    cache: ServiceProcess | None = None
    router: ServiceProcess | None = None
    channel: grpc.aio.Channel | None = None
    http: aiohttp.ClientSession | None = None
    extra: list[ServiceProcess] = field(default_factory=list)

    @property
    def stub(self) -> router_service_pb2_grpc.RouterServiceStub:
        assert self.channel is not None
        return router_service_pb2_grpc.RouterServiceStub(self.channel)

    def node(self, node_id: str) -> SimProcess:
        return next(n for n in self.nodes if n.node_id == node_id)

    async def admin(self, node_id: str, method: str, path: str, body: Any = None) -> Any:
        assert self.http is not None
        async with self.http.request(method, self.node(node_id).admin_url + path, json=body) as resp:
            return await resp.json()

    async def set_fault(self, node_id: str, **faults: Any) -> None:
        await self.admin(node_id, "POST", "/_sim/faults", faults)

    async def stats(self, node_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.admin(node_id, "GET", "/_sim/stats")
        return result

    async def transcripts(self, node_id: str) -> list[dict[str, Any]]:
        """The node's latest completions: the body each received, the text it sent, how it ended."""
        result: dict[str, Any] = await self.admin(node_id, "GET", "/_sim/requests")
        requests: list[dict[str, Any]] = result["requests"]
        return requests

    async def inference_requests(self, node_id: str) -> int:
        stats = await self.stats(node_id)
        routes = stats["requests_by_route"]
        return sum(v for k, v in routes.items() if k in ("/api/generate", "/api/chat", "/api/embed"))

    async def total_inference_requests(self) -> int:
        return sum([await self.inference_requests(n.node_id) for n in self.nodes])

    async def load(self, node_id: str, model: str = MODEL) -> None:
        assert self.http is not None
        async with self.http.post(self.node(node_id).url + "/api/generate", json={"model": model}) as resp:
            assert resp.status == 200, await resp.text()

    async def kill_node(self, node_id: str) -> None:
        """SIGKILL a solo node's process."""
        node = self.node(node_id)
        assert sum(n.proc is node.proc for n in self.nodes) == 1, "only a solo node can be killed"
        await node.proc.kill()

    async def take_down(self, node_id: str) -> None:
        """Closes a node's socket and aborts its connections (the simulator's refuse fault)."""
        await self.set_fault(node_id, refuse=True)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.http is not None:
            await self.http.close()
        procs = [p for p in (self.router, self.cache, self.health, *self.extra) if p is not None]
        procs += list({id(n.proc): n.proc for n in self.nodes}.values())
        await asyncio.gather(*(p.kill() for p in procs), return_exceptions=True)


_NODE_LINE = re.compile(r"listening on [^:\s]+:(\d+) admin (\d+)")


async def start_sims(
    count: int, time_scale: float, first_index: int, seed: int, models: str | None = None
) -> list[SimProcess]:
    """`count` simulated nodes in one process (fast to start); ids node-<first_index>...."""
    proc = ServiceProcess(
        "sim",
        args=(
            *(("--models", models) if models else ()),
            "--nodes",
            str(count),
            "--port",
            "0",
            "--admin-port",
            "0",
            "--time-scale",
            str(time_scale),
            "--seed",
            str(seed),
        ),
    )
    await proc.start()
    deadline = time.monotonic() + 10
    while len([line for line in proc.output if _NODE_LINE.search(line)]) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the simulator did not report every node")
        await asyncio.sleep(0.02)
    ports = [_NODE_LINE.search(line) for line in proc.output]
    found = [(int(m.group(1)), int(m.group(2))) for m in ports if m is not None]
    return [
        SimProcess(node_id=f"node-{first_index + i}", proc=proc, port=api, admin_port=admin)
        for i, (api, admin) in enumerate(found[:count])
    ]


def nodes_json(nodes: list[SimProcess], key: str) -> str:
    return json.dumps([{key: n.node_id, "address": n.url} for n in nodes])


def redis_cache_env(redis_url: str, postgres_dsn: str) -> dict[str, str]:
    """A cache's environment: its Redis and PostgreSQL, and the stack's embedding model.

    Pass `cache_env_from_nodes=embedder_nodes_env` with it: the embedder's nodes are known only
    once the nodes have started (the cache starts after them).
    """
    return {
        "CORRAL_REDIS__URL": redis_url,
        "CORRAL_POSTGRES__DSN": postgres_dsn,
        "CORRAL_CACHE__EMBEDDER__MODEL": EMBED_MODEL,
        "CORRAL_CACHE__EMBEDDER__NODE_URLS": "[]",
    }


def embedder_nodes_env(nodes: list[SimProcess]) -> dict[str, str]:
    """The cache's embedder calls every node of the stack."""
    return {"CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([n.url for n in nodes])}


async def start_stack(
    *,
    node_count: int = 4,
    time_scale: float = 0.01,
    solo_time_scales: tuple[float, ...] = (),
    fleet_models: str | None = None,
    health: bool = True,
    cache_env: dict[str, str] | None = None,
    router_env: dict[str, str] | None = None,
    health_env: dict[str, str] | None = None,
    static_nodes: bool = False,
    cache_env_from_nodes: Callable[[list[SimProcess]], dict[str, str]] | None = None,
) -> Stack:
    """Starts nodes, then health (and cache), then the router; waits until the router knows the models.

    `node_count` nodes run in one simulator process; each entry of `solo_time_scales` adds one more
    node in a process of its own, which a test may SIGKILL.
    """
    groups = [start_sims(node_count, time_scale, 1, 1, fleet_models)] if node_count else []
    groups += [start_sims(1, scale, node_count + 1 + i, 100 + i) for i, scale in enumerate(solo_time_scales)]
    nodes = [n for group in await asyncio.gather(*groups) for n in group]
    stack = Stack(nodes=nodes)
    try:
        stack.http = aiohttp.ClientSession()
        env: dict[str, str] = {
            "CORRAL_ROUTER__PORT": "0",
            "CORRAL_ROUTER__TTFT_TIMEOUT_S": "1.0",
            "CORRAL_ROUTER__TTFT_COLD_EXTRA_S": "5.0",
            "CORRAL_ROUTER__OUTCOME_FLUSH_MS": "20",
            "CORRAL_ROUTER__STATIC_REFRESH_S": "0.5",
            "CORRAL_ROUTER__HEALTH_ADDR": "",
            "CORRAL_ROUTER__CACHE_ADDR": "",
            "CORRAL_ROUTER__NODES": nodes_json(nodes, "node_id") if static_nodes or not health else "[]",
        }
        starting: list[asyncio.Task[ServiceProcess]] = []
        if health:
            stack.health = ServiceProcess(
                "services.health",
                env={
                    "CORRAL_HEALTH__PORT": "0",
                    "CORRAL_HEALTH__NODES": nodes_json(nodes, "id"),
                    **FAST_HEALTH_ENV,
                    **(health_env or {}),
                },
            )
            starting.append(asyncio.create_task(stack.health.start()))
        if cache_env is not None:
            extra_env = cache_env_from_nodes(nodes) if cache_env_from_nodes is not None else {}
            stack.cache = ServiceProcess(
                "services.cache", env={"CORRAL_CACHE__PORT": "0", **cache_env, **extra_env}
            )
            starting.append(asyncio.create_task(stack.cache.start()))
        await asyncio.gather(*starting)
        if stack.health is not None:
            env["CORRAL_ROUTER__HEALTH_ADDR"] = f"127.0.0.1:{stack.health.port}"
        if stack.cache is not None:
            env["CORRAL_ROUTER__CACHE_ADDR"] = f"127.0.0.1:{stack.cache.port}"
        env.update(router_env or {})
        stack.router = await ServiceProcess("services.router", env=env).start()
        stack.channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.router.port}")
        await wait_until_models_known(stack)
        return stack
    except BaseException:
        await stack.close()
        raise


async def wait_until_models_known(stack: Stack, timeout_s: float = 15.0) -> None:
    """Polls (bounded) until the router rejects an unknown model, i.e. it knows the fleet's models."""
    deadline = time.monotonic() + timeout_s
    probe = router_service_pb2.GenerateRequest(
        spec=common_pb2.GenerateSpec(model="no-such-model", prompt="x")
    )
    while True:
        try:
            await stack.stub.Generate(probe, timeout=2)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("the router never learned the fleet's models")
        await asyncio.sleep(0.05)


def gen_request(prompt: str, **kw: Any) -> router_service_pb2.GenerateRequest:
    options = kw.pop("options", None)
    spec = common_pb2.GenerateSpec(model=kw.pop("model", MODEL), prompt=prompt, options=options)
    return router_service_pb2.GenerateRequest(spec=spec, **kw)


def chat_spec(*turns: tuple[str, str], model: str = MODEL) -> common_pb2.ChatSpec:
    return common_pb2.ChatSpec(
        model=model, messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in turns]
    )


def embedding_vectors(reply: router_service_pb2.EmbedResponse) -> list[list[float]]:
    return [list(e.values) for e in reply.embeddings]


async def node_embeds(stack: Stack) -> int:
    """/api/embed calls the stack's nodes have received."""
    total = 0
    for node in stack.nodes:
        stats = await stack.stats(node.node_id)
        total += int(stats["requests_by_route"].get("/api/embed", 0))
    return total


def sigkill(proc: ServiceProcess) -> None:
    proc.signal(signal.SIGKILL)


def rendezvous_order(session: str, node_ids: list[str]) -> list[str]:
    """The nodes in the order a session's affinity key tries them (its home first)."""
    return sorted(node_ids, key=lambda n: rendezvous_weight(f"s:{session}", n), reverse=True)


async def seeded_answer(stack: Stack, node_id: str, body: dict[str, Any], seed: int) -> str:
    """The whole seeded answer a node gives to a chat body, asked directly."""
    assert stack.http is not None
    request = {**body, "stream": False, "options": {"seed": seed}}
    async with stack.http.post(stack.node(node_id).url + "/api/chat", json=request) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["message"]["content"])
