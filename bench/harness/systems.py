"""The processes of a benchmark: simulated nodes, Corral's services, LiteLLM's proxy, the load generator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from services.router.config import RouterConfig
from tests.helpers.procs import ROOT, ServiceProcess, base_env, free_port

MODEL = "llama3.2:1b"
EMBED_MODEL = "nomic-embed-text:v1.5"
LITELLM_VERSION = "1.108.7"
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_KEY = "sk-corral-bench"
# NOTE: the scenarios label and judge "the default" by what a router runs with no configuration.
DEFAULT_STRATEGY = str(RouterConfig.model_fields["strategy"].default)
LITELLM_STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2")
_ADMIN = re.compile(r"admin (\d+)")

# NOTE: what a user would set for a small fleet, written down in docs/benchmarks.md. LiteLLM: two
# retries, a deployment cools down for 5 s after 3 failures in a minute (its defaults, made explicit),
# 60 s timeout. Corral: its defaults, except health probing every second (1 s probe timeout, the
# default) and a 5 s first ejection (the same recovery horizon as LiteLLM's cooldown).
LITELLM_ROUTER_SETTINGS: dict[str, Any] = {
    "num_retries": 2,
    "allowed_fails": 3,
    "cooldown_time": 5,
    "retry_after": 0,
    "timeout": 60,
}
CORRAL_HEALTH_ENV = {
    "CORRAL_HEALTH__PROBE_INTERVAL_S": "1.0",
    "CORRAL_HEALTH__HEARTBEAT_INTERVAL_S": "1.0",
    "CORRAL_HEALTH__OUTLIER__BASE_EJECTION_TIME_S": "5.0",
    "CORRAL_LOGGING__ACCESS_LOG": "false",
}


def litellm_installed() -> bool:
    """True when bench/litellm/install.sh has installed the pinned proxy."""
    return (LITELLM_VENV / f".litellm-{LITELLM_VERSION}").exists()


@dataclass
class Node:
    """A simulated Ollama node in its own process (so one can be killed and restarted on its ports)."""

    node_id: str
    args: tuple[str, ...]
    proc: ServiceProcess | None = None
    port: int = 0
    admin_port: int = 0
    # NOTE: how long a start may take to print the node's readiness line.
    start_timeout_s: ClassVar[float] = 30.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def start(self) -> Node:
        """Starts (or restarts, on the same ports) the node's process."""
        ports = ("--port", str(self.port), "--admin-port", str(self.admin_port))
        self.proc = await ServiceProcess("sim", args=(*self.args, *ports)).start(self.start_timeout_s)
        self.port = self.proc.port
        match = next((m for line in self.proc.output if (m := _ADMIN.search(line))), None)
        assert match is not None, "the simulator did not print its admin port"
        self.admin_port = int(match.group(1))
        return self

    async def kill(self) -> None:
        """SIGKILL: open connections are reset, the port refuses."""
        if self.proc is not None:
            await self.proc.kill()


async def start_nodes(
    speeds: list[float],
    time_scale: float,
    faults: dict[int, list[str]] | None = None,
    extra_args: tuple[str, ...] = (),
) -> list[Node]:
    """One process per node, ids node-1..N, seeds differ; `faults` maps a 0-based index to --fault specs."""
    nodes = []
    for i, speed in enumerate(speeds):
        args = ["--time-scale", str(time_scale), "--speed-factor", str(speed), "--seed", str(i + 1)]
        for fault in (faults or {}).get(i, []):
            args += ["--fault", fault]
        nodes.append(Node(node_id=f"node-{i + 1}", args=(*args, *extra_args)))
    await asyncio.gather(*(n.start() for n in nodes))
    return nodes


async def warm(nodes: list[Node], models: tuple[str, ...] = (MODEL,)) -> None:
    """Loads the models on every node for good (an empty generate with keep_alive -1)."""
    async with aiohttp.ClientSession() as http:
        for node in nodes:
            for model in models:
                body = {"model": model, "keep_alive": -1}
                path = "/api/embed" if "embed" in model else "/api/generate"
                if "embed" in model:
                    body["input"] = "warm"
                async with http.post(node.url + path, json=body) as resp:
                    await resp.read()


async def reset_models(nodes: list[Node], unload: tuple[str, ...], keep: tuple[str, ...] = (MODEL,)) -> None:
    """Unloads `unload` on every node (keep_alive 0) and loads `keep` for good: the state every
    segment of a mixed-model scenario starts from."""
    async with aiohttp.ClientSession() as http:
        for node in nodes:
            for model in unload:
                async with http.post(
                    node.url + "/api/generate", json={"model": model, "keep_alive": 0}
                ) as resp:
                    await resp.read()
    await warm(nodes, keep)


async def settle(nodes: list[Node], timeout_s: float = 120.0) -> float:
    """Waits until no node has a request in flight or queued; returns the seconds it took.

    A segment must start on idle nodes: a system whose clients gave up (timeouts) leaves its
    requests running on the nodes, and the next system's segment would pay for them. The
    simulator's admin API is polled (no event reaches this process); past `timeout_s` the segment
    starts anyway and the wait says so.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        loads = [await node_stats(n) for n in nodes]
        if all(s["in_flight"] == 0 and s["queued"] == 0 for s in loads):
            break
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def node_stats(node: Node) -> dict[str, Any]:
    """The simulator's counters of one node (admin API)."""
    async with aiohttp.ClientSession() as http, http.get(node.admin_url + "/_sim/stats") as resp:
        stats: dict[str, Any] = await resp.json()
        return stats


@dataclass
class Gateway:
    """A running system under test: where clients send requests, with which protocol."""

    name: str
    protocol: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    grpc_addr: str = ""
    procs: list[Any] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    health_addr: str = ""

    async def close(self) -> None:
        for proc in reversed(self.procs):
            await proc.kill()


async def _wait_http(url: str, timeout_s: float, proc: Any = None) -> None:
    """Polls (bounded) until `url` answers 200; fails early when the process exited."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            if proc is not None and proc.returncode is not None:
                raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s} s")
            await asyncio.sleep(0.1)


def _router_module() -> str:
    # NOTE: until services/router/server.py starts the HTTP API itself, the HTTP tests' launcher
    # starts the same RouterCore with the HTTP API beside it.
    text = (ROOT / "services" / "router" / "server.py").read_text()
    return "services.router" if "start_http_server" in text else "tests.http.router_main"


async def start_corral(
    nodes: list[Node],
    strategy: str = DEFAULT_STRATEGY,
    cache_env: dict[str, str] | None = None,
    router_env: dict[str, str] | None = None,
    prewarm: bool = False,
) -> Gateway:
    """Health, optionally the cache, one router process (gRPC + Ollama-compatible HTTP API), optionally
    prewarm (warms a node's models when health sees it (re)join)."""
    node_list = json.dumps([{"id": n.node_id, "address": n.url} for n in nodes])
    health = await ServiceProcess(
        "services.health",
        env={"CORRAL_HEALTH__PORT": "0", "CORRAL_HEALTH__NODES": node_list, **CORRAL_HEALTH_ENV},
    ).start()
    procs: list[Any] = [health]
    try:
        cache_addr = ""
        if cache_env is not None:
            cache = await ServiceProcess(
                "services.cache",
                env={"CORRAL_CACHE__PORT": "0", "CORRAL_LOGGING__ACCESS_LOG": "false", **cache_env},
            ).start()
            procs.append(cache)
            cache_addr = f"127.0.0.1:{cache.port}"
        http_port = free_port()
        env = {
            "CORRAL_ROUTER__PORT": "0",
            "CORRAL_ROUTER__HTTP_PORT": str(http_port),
            "CORRAL_ROUTER__STRATEGY": strategy,
            "CORRAL_ROUTER__HEALTH_ADDR": f"127.0.0.1:{health.port}",
            "CORRAL_ROUTER__CACHE_ADDR": cache_addr,
            "CORRAL_ROUTER__NODES": "[]",
            "CORRAL_LOGGING__ACCESS_LOG": "false",
            **(router_env or {}),
        }
        router = await ServiceProcess(_router_module(), env=env).start()
        procs.append(router)
        base = f"http://127.0.0.1:{http_port}"
        await _wait_http(base + "/api/version", 15)
        gateway = Gateway(
            name=f"corral/{strategy}",
            protocol="ollama",
            base=base,
            grpc_addr=f"127.0.0.1:{router.port}",
            procs=procs,
            settings={"strategy": strategy, "health": CORRAL_HEALTH_ENV, "router": router_env or {}},
            health_addr=f"127.0.0.1:{health.port}",
        )
        if prewarm:
            pre_env = {
                "CORRAL_PREWARM__PORT": "0",
                "CORRAL_PREWARM__HEALTH_ADDR": f"127.0.0.1:{health.port}",
                "CORRAL_PREWARM__ROUTER_ADDR": f"127.0.0.1:{router.port}",
                "CORRAL_PREWARM__CACHE_ADDR": cache_addr or "127.0.0.1:1",
                "CORRAL_PREWARM__RUN_ON_START": "false",
                "CORRAL_PREWARM__SCHEDULE_INTERVAL_S": "0",
                "CORRAL_PREWARM__MODELS": json.dumps([{"name": MODEL}]),
                "CORRAL_LOGGING__ACCESS_LOG": "false",
            }
            procs.append(await ServiceProcess("services.prewarm", env=pre_env).start())
            gateway.settings["prewarm"] = {"models": [MODEL], "trigger": "node (re)joined"}
        await _wait_routable(gateway)
        return gateway
    except BaseException:
        for proc in procs:
            await proc.kill()
        raise


async def _wait_routable(gateway: Gateway, timeout_s: float = 20.0) -> None:
    """Polls until one chat through the gateway succeeds (the router knows the fleet)."""
    deadline = time.monotonic() + timeout_s
    path = "/api/chat" if gateway.protocol == "ollama" else "/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "ready?"}], "stream": False}
    body.update({"options": {"num_predict": 1}} if gateway.protocol == "ollama" else {"max_tokens": 1})
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(gateway.base + path, json=body, headers=gateway.headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gateway.name} never answered a chat")
            await asyncio.sleep(0.2)


class ExternalProcess:
    """A non-Corral process (LiteLLM's proxy) with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.argv, self.env, self.log_path, self.cwd = argv, env, log_path, cwd
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> ExternalProcess:
        log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, cwd=str(self.cwd), stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        log.close()
        return self

    async def kill(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10)


async def cache_stats(addr: str) -> Any:
    """The cache service's `Stats` reply (a StatsReply) from host:port."""
    import grpc
    from corral.v1 import cache_service_pb2, cache_service_pb2_grpc

    async with grpc.aio.insecure_channel(addr) as channel:
        return await cache_service_pb2_grpc.CacheServiceStub(channel).Stats(
            cache_service_pb2.StatsRequest(), timeout=5
        )


def litellm_config(nodes: list[Node], strategy: str, models: tuple[str, ...] = (MODEL,)) -> dict[str, Any]:
    """LiteLLM's proxy config: every node a deployment of each model's group, one routing strategy."""
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {"model": f"ollama_chat/{model}", "api_base": node.url},
                "model_info": {"id": node.node_id if model == MODEL else f"{node.node_id}/{model}"},
            }
            for model in models
            for node in nodes
        ],
        "router_settings": {"routing_strategy": strategy, **LITELLM_ROUTER_SETTINGS},
        "litellm_settings": {"telemetry": False, "request_timeout": 60},
        "general_settings": {"master_key": LITELLM_KEY},
    }


async def start_litellm_proxy(
    config: dict[str, Any], workdir: Path, name: str
) -> tuple[ExternalProcess, str]:
    """Starts LiteLLM's proxy (one uvicorn worker, like one router process) with this config on a free
    port: the config in workdir/NAME.json, its output in workdir/NAME.log.

    Returns the process and its base URL at once; the caller waits for what it needs the proxy to answer.
    """
    config_path = workdir / f"{name}.json"
    # NOTE: JSON is valid YAML, which is what `litellm --config` reads.
    config_path.write_text(json.dumps(config, indent=2))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "PYTHON"))},
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config_path), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", "1"]
    proc = await ExternalProcess(argv, env, workdir / f"{name}.log", workdir).start()
    return proc, f"http://127.0.0.1:{port}"


async def start_litellm(
    nodes: list[Node], strategy: str, workdir: Path, models: tuple[str, ...] = (MODEL,)
) -> Gateway:
    """LiteLLM's proxy (one uvicorn worker, like one router process) over the same nodes."""
    if not litellm_installed():
        raise RuntimeError("LiteLLM is not installed: run bench/litellm/install.sh")
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a local folder, once per run)
    config = litellm_config(nodes, strategy, models)
    proc, base = await start_litellm_proxy(config, workdir, f"litellm-{strategy}")
    try:
        await _wait_http(base + "/health/liveliness", 90, proc.proc)
        gateway = Gateway(
            name=f"litellm/{strategy}",
            protocol="openai",
            base=base,
            headers={"Authorization": f"Bearer {LITELLM_KEY}"},
            procs=[proc],
            settings={"version": LITELLM_VERSION, "config": {**config, "general_settings": "master_key set"}},
        )
        await _wait_routable(gateway)
        return gateway
    except BaseException:
        await proc.kill()
        raise


async def run_load(spec: dict[str, Any], workdir: Path, name: str) -> dict[str, Any]:
    """Runs the load generator in its own process and returns its records."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a local folder, once per run)
    spec_path = workdir / f"load-{name}.json"
    out_path = workdir / f"records-{name}.json"
    spec_path.write_text(json.dumps(spec))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.harness.loadgen",
        str(spec_path),
        str(out_path),
        cwd=str(ROOT),
        env=base_env(),
    )
    code = await proc.wait()
    if code != 0:
        raise RuntimeError(f"the load generator failed for {name} (exit {code})")
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def target_of(gateway: Gateway, **kw: Any) -> dict[str, Any]:
    """The load generator's target section for a gateway."""
    return {
        "protocol": gateway.protocol,
        "base": gateway.base,
        "model": MODEL,
        "headers": gateway.headers,
        **kw,
    }
