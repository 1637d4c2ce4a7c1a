"""A whole Corral on fixed ports, every part restartable: Redis, PostgreSQL, nodes and the four services."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from devstack import migrate
from devstack.config import make_temp_state_dir
from devstack.ports import mentions_port_in_use
from tests.chaos.stores import REDIS_PASSWORD
from tests.helpers.procs import ROOT, PortInUse, ServiceProcess, base_env, free_port
from tests.router.stack import EMBED_MODEL, FAST_HEALTH_ENV, MODEL

SERVICES = ("health", "cache", "router", "prewarm")
_NODE_LINE = re.compile(r"listening on [^:\s]+:(\d+) admin (\d+)")
# NOTE: the ports come from devstack.ports (locked, outside the ephemeral range), so a clash needs a
# program outside Corral to bind one of them first; a few attempts are plenty.
_PORT_ATTEMPTS = 4


@dataclass
class Node:
    """A simulated node in a process of its own, on fixed ports (so a restart comes back in place)."""

    node_id: str
    port: int
    admin_port: int
    time_scale: float
    seed: int
    proc: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self) -> None:
        self.proc = ServiceProcess(
            "sim",
            args=(
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--time-scale",
                str(self.time_scale),
                "--seed",
                str(self.seed),
            ),
        )
        await self.proc.start()

    def move(self) -> None:
        """New ports, after a start found one of the old ones taken."""
        self.port, self.admin_port = free_port(), free_port()


@dataclass
class Store:
    """Redis or PostgreSQL on a fixed port, started and stopped through tests/chaos/stores.py."""

    kind: str
    state: Path
    port: int

    @property
    def url(self) -> str:
        if self.kind == "redis":
            return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"
        return f"postgresql://corral@127.0.0.1:{self.port}/corral"

    async def _run(self, action: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.chaos.stores",
            self.kind,
            action,
            str(self.state),
            str(self.port),
            env=base_env(),
            cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            text = output.decode(errors="replace")[-2000:]
            if action == "start" and mentions_port_in_use(text):
                raise PortInUse(f"{self.kind} start: port {self.port} is taken: {text}", self.port)
            raise RuntimeError(f"{self.kind} {action} failed: {text}")

    async def start(self) -> None:
        await self._run("start")

    def move(self) -> None:
        """A new port, after a start found the old one taken."""
        self.port = free_port()

    async def stop(self) -> None:
        await self._run("stop")


@dataclass
class Corral:
    """The running system of one chaos module.

    Attributes:
        nodes: Simulated Ollama nodes, one process each.
        procs: The Corral services by name.
        ports: The services' fixed gRPC ports by name.
        env: Each service's environment (reused on restart).
    """

    state: Path
    redis: Store
    postgres: Store
    nodes: list[Node]
    ports: dict[str, int]
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None

    @property
    def router_addr(self) -> str:
        return f"127.0.0.1:{self.ports['router']}"

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    # --- services -----------------------------------------------------------------------------------
    def wire(self, extra_env: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Writes each service's environment from the current ports, nodes and stores."""
        nodes = self.nodes
        ports = self.ports
        addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        self.env = {
            "health": {
                "CORRAL_HEALTH__PORT": str(ports["health"]),
                "CORRAL_HEALTH__NODES": _nodes_json(nodes, "id"),
                "CORRAL_HEALTH__GRACE_S": "1",
                **FAST_HEALTH_ENV,
            },
            "cache": {
                "CORRAL_CACHE__PORT": str(ports["cache"]),
                "CORRAL_CACHE__GRACE_S": "1",
                "CORRAL_REDIS__URL": self.redis.url,
                "CORRAL_POSTGRES__DSN": self.postgres.url,
                "CORRAL_CACHE__EMBEDDER__MODEL": EMBED_MODEL,
                "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([n.url for n in nodes]),
                "CORRAL_CACHE__BREAKER_OPEN_MS": "300",
            },
            "router": {
                "CORRAL_ROUTER__PORT": str(ports["router"]),
                "CORRAL_ROUTER__GRACE_S": "1",
                "CORRAL_ROUTER__HEALTH_ADDR": addr["health"],
                "CORRAL_ROUTER__CACHE_ADDR": addr["cache"],
                "CORRAL_ROUTER__NODES": _nodes_json(nodes, "node_id"),
                "CORRAL_ROUTER__TTFT_TIMEOUT_S": "1.0",
                "CORRAL_ROUTER__TTFT_COLD_EXTRA_S": "3.0",
                "CORRAL_ROUTER__OUTCOME_FLUSH_MS": "20",
                "CORRAL_ROUTER__STATIC_REFRESH_S": "0.5",
                "CORRAL_ROUTER__NODE_COOLDOWN_S": "0.5",
            },
            "prewarm": {
                "CORRAL_PREWARM__PORT": str(ports["prewarm"]),
                "CORRAL_PREWARM__GRACE_S": "1",
                "CORRAL_PREWARM__HEALTH_ADDR": addr["health"],
                "CORRAL_PREWARM__ROUTER_ADDR": addr["router"],
                "CORRAL_PREWARM__CACHE_ADDR": addr["cache"],
                "CORRAL_PREWARM__MODELS": json.dumps([{"name": MODEL, "keep_alive_s": 600}]),
            },
        }
        for name, env in (extra_env or {}).items():
            self.env[name].update(env)

    async def start_service(self, name: str) -> ServiceProcess:
        proc = ServiceProcess(f"services.{name}", env=self.env[name])
        self.procs[name] = proc
        await proc.start(timeout_s=40)
        return proc

    async def kill_service(self, name: str) -> None:
        """SIGKILL: no drain, no goodbye."""
        await self.procs[name].kill()

    # --- nodes --------------------------------------------------------------------------------------
    async def set_fault(self, node_id: str, **faults: Any) -> None:
        assert self.http is not None
        async with self.http.post(self.node(node_id).admin_url + "/_sim/faults", json=faults) as resp:
            assert resp.status == 200, await resp.text()

    async def clear_faults(self, node_id: str) -> None:
        assert self.http is not None
        async with self.http.delete(self.node(node_id).admin_url + "/_sim/faults") as resp:
            assert resp.status == 200, await resp.text()

    async def kill_node(self, node_id: str) -> None:
        node = self.node(node_id)
        assert node.proc is not None
        await node.proc.kill()

    async def restart_node(self, node_id: str) -> None:
        await self.node(node_id).start()

    def stop_node(self, node_id: str, sig: int = signal.SIGSTOP) -> None:
        proc = self.node(node_id).proc
        assert proc is not None
        proc.signal(sig)

    # --- teardown -----------------------------------------------------------------------------------
    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        procs = [p for p in self.procs.values()] + [n.proc for n in self.nodes if n.proc is not None]
        await asyncio.gather(*(p.kill() for p in procs), return_exceptions=True)
        await asyncio.gather(self.redis.stop(), self.postgres.stop(), return_exceptions=True)
        shutil.rmtree(self.state, ignore_errors=True)


def _nodes_json(nodes: list[Node], key: str) -> str:
    return json.dumps([{key: n.node_id, "address": n.url} for n in nodes])


async def start_corral(
    *,
    node_count: int = 3,
    time_scale: float = 0.01,
    extra_env: Mapping[str, Mapping[str, str]] | None = None,
    with_prewarm: bool = True,
) -> Corral:
    """Starts Redis, PostgreSQL (migrated), `node_count` nodes and the services, on fixed ports.

    Every node gets the same seed, so any node answers a prompt with the same text (requests also
    pin `options.seed`): a cached answer can be checked against a live one word for word.
    """
    state = make_temp_state_dir("corral-chaos-")
    redis = Store("redis", state, free_port())
    postgres = Store("postgres", state, free_port())
    nodes = [Node(f"node-{i + 1}", free_port(), free_port(), time_scale, seed=7) for i in range(node_count)]
    ports = {name: free_port() for name in SERVICES}
    corral = Corral(state=state, redis=redis, postgres=postgres, nodes=nodes, ports=ports)
    try:
        await asyncio.gather(
            _on_free_ports(redis.start, redis.move), _on_free_ports(postgres.start, postgres.move)
        )
        await asyncio.to_thread(migrate.apply, postgres.url)
        corral.http = aiohttp.ClientSession()
        await asyncio.gather(*(_on_free_ports(n.start, n.move) for n in nodes))
        corral.wire(extra_env)

        async def start(name: str) -> None:
            def move() -> None:
                # NOTE: the services started later read the new address from the rewired environment.
                corral.ports[name] = free_port()
                corral.wire(extra_env)

            async def start_once() -> None:
                await corral.start_service(name)

            await _on_free_ports(start_once, move)

        await asyncio.gather(start("health"), start("cache"))
        await start("router")
        if with_prewarm:
            await start("prewarm")
        return corral
    except BaseException:
        await corral.close()
        raise


async def _on_free_ports(start: Callable[[], Awaitable[None]], move: Callable[[], None]) -> None:
    """Runs `start`; when it finds a port taken (PortInUse), `move` picks new ports and it runs again."""
    for attempt in range(_PORT_ATTEMPTS):
        try:
            await start()
            return
        except PortInUse:
            if attempt == _PORT_ATTEMPTS - 1:
                raise
            move()


async def poll(predicate: Any, timeout_s: float, interval_s: float = 0.05) -> float:
    """Polls an external condition with a deadline; returns the seconds it took."""
    started = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval_s)
