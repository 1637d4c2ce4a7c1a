"""Router overhead: a no-delay simulated node called directly vs through one router process.

Miss rows: short non-streaming generates (num_predict 8), unique prompts (cache misses). The load
generator runs in a separate process: a grpc.aio client for the router's gRPC API, an aiohttp client
for the node and for the router's Ollama-compatible HTTP API (`_http` rows: the same client and
request as `direct`, so the difference is the router alone). Scenarios: direct to the node;
`grpc_floor`, a bare grpc.aio server that answers Generate at once (what one Python gRPC hop costs on
this machine, the floor under any gRPC row); router without cache; router with health and the cache
(the miss path: lookup, forward, store, outcome reports).

Hit rows: HIT_CHATS (96) chats, each sent until its answer is stored and then repeated byte for byte,
the clients cycling through them, so the exact tier answers every measured request and the requests
in flight together differ (one chat repeated by 32 clients at once is mostly answered by the
router's coalescing instead, without a lookup). `router_exact_hit` (gRPC `Chat`) and
`router_exact_hit_http` (`POST /api/chat`) go through the router with the cache; `router_near_hit`
and `_http` through a router whose near cache is on (it subscribes to the cache's Redis and keeps
the exact hits it was given in process, so after the first round the cache is not asked);
`floor_hit_http` is
bench/floor_hit.py, an aiohttp handler doing one Redis GET of a prepared answer (the cheapest server
that can answer an exact hit); `litellm_exact_hit` is LiteLLM's proxy with its Redis cache answering
the same chats on `/v1/chat/completions` (skipped, with the reason in the table, when
bench/litellm/install.sh has not installed it or it does not start). All of them use the same Redis,
which requires a password as in the deployments (the cache reads it from `password_file`). Every hit
row counts what answered: `X-Corral-Cache` / `RoutingInfo.cache_outcome` (and `near_cache`) for the router,
`x-litellm-cache-key` (sent on LiteLLM's cache hits only) for LiteLLM, the status for the floor, and
for all of them the chat calls the simulated node received during the measured phase.

Besides latency and throughput, every row records the CPU time each process spent per request (from
/proc, read by the load generator right around the measured phase) and the load average before and
after, so a run on a busy machine can still be judged: on 2 cores, N requests/s need the CPU per
request summed over all processes below 2/N s. Writes bench/results/router_overhead.{json,md}.

    PYTHONPATH=.:gen/python .venv/bin/python bench/router_overhead.py [--requests 3000] [--repeat 3]
    PYTHONPATH=.:gen/python .venv/bin/python bench/router_overhead.py --smoke [--no-litellm] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

RESULTS = ROOT / "bench" / "results"
MODEL = "llama3.2:1b"
_BUFFERED = {"CORRAL_ROUTER__UNARY_NODE_STREAM": "false"}
# NOTE: `_buffered` rows run the router with `unary_node_stream: false` (docs/router.md): the node
# sends one JSON reply instead of a stream, which costs both sides less CPU.
ROUTER_VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("router_no_cache", {}),
    ("router_no_cache_buffered", _BUFFERED),
)
# NOTE: `_batched` sends the lookups that queue behind in-flight calls as one LookupBatch
# (`lookup_batch_max: 64`; the default is one Lookup call per request, docs/router.md).
CACHE_VARIANTS: tuple[tuple[str, dict[str, str]], ...] = (
    ("router_cache_miss", {}),
    ("router_cache_miss_buffered", _BUFFERED),
    ("router_cache_miss_batched", {"CORRAL_ROUTER__LOOKUP_BATCH_MAX": "64"}),
)
HTTP_ROWS = ("router_no_cache", "router_cache_miss")
# NOTE: the exact-hit rows (module docstring); the router's run with its and the cache's defaults.
NEAR_ROWS = ("router_near_hit", "router_near_hit_http")
HIT_ROWS = ("router_exact_hit", "router_exact_hit_http", *NEAR_ROWS, "floor_hit_http", "litellm_exact_hit")
SCENARIOS = (
    "direct",
    "grpc_floor",
    *(n for n, _ in ROUTER_VARIANTS),
    *(f"{n}_http" for n, _ in ROUTER_VARIANTS if n in HTTP_ROWS),
    *(n for n, _ in CACHE_VARIANTS),
    *(f"{n}_http" for n, _ in CACHE_VARIANTS if n in HTTP_ROWS),
    *HIT_ROWS,
)
SMOKE_SCENARIOS = ("direct", "grpc_floor", "router_no_cache", "router_no_cache_http", *HIT_ROWS)
# NOTE: the chats every hit row repeats, as the bytes sent (the floor keys its answers by them). One
# chat repeated by 32 clients at once would mostly be answered by the router's coalescing (an identical
# request in flight), not by a lookup: measured, 95 % `coalesced` at c32. So the clients cycle through
# HIT_CHATS distinct chats, more than the concurrency, each stored before the measured phase: every
# measured request repeats a stored one, and the requests in flight together differ.
HIT_CHATS = 96
QUESTIONS = tuple(f"FAQ {k}: what is the capital of France?" for k in range(HIT_CHATS))


def _chat_body(question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return json.dumps({"model": MODEL, "messages": messages, "stream": False, "options": {"num_predict": 8}})


def _openai_body(question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return json.dumps({"model": MODEL, "messages": messages, "max_tokens": 8, "stream": False})


CHAT_BODIES = tuple(_chat_body(q) for q in QUESTIONS)
OPENAI_BODIES = tuple(_openai_body(q) for q in QUESTIONS)
# NOTE: the simulator's routes a chat reaches it by (LiteLLM's `ollama_chat/` provider uses /api/chat).
CHAT_ROUTES = ("/api/chat", "/v1/chat/completions")
# NOTE: the settings every service gets in this benchmark, written down because they change the cost:
# the per-RPC access log is off (it is a debug aid, see docs/router.md) and logging is at WARNING.
LOGGING_ENV = {"CORRAL_LOGGING__ACCESS_LOG": "false", "CORRAL_LOGGING__LEVEL": "WARNING"}
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
_ADMIN_PORT = re.compile(r"admin (\d+)")


# --- load generator (runs in its own process) -------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads (and of reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) * _TICK_S


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live child processes (PostgreSQL's backends)."""
    total = _cpu_s(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(pid):
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    total += _cpu_s(int(entry.name))
            except (OSError, IndexError):
                continue
    return total


def is_hit(outcome: str) -> bool:
    """An answer from an exact tier: Corral's `exact-hit` (or a later exact-tier variant ending in
    `-hit`), LiteLLM's or the floor's `hit`; a semantic hit is not one."""
    return outcome.endswith("hit") and not outcome.startswith("semantic")


async def _grpc_load(
    addr: str,
    concurrency: int,
    requests: int,
    tag: str,
    outcomes: Counter[str] | None = None,
    first: int = 0,
) -> list[float]:
    """Unique generates; with `outcomes`, the hit rows' chats instead (request i sends chat i modulo
    HIT_CHATS, from i = `first`), counting `RoutingInfo.cache_outcome`."""
    import grpc
    from corral.v1 import common_pb2, router_service_pb2, router_service_pb2_grpc

    channel = grpc.aio.insecure_channel(addr)
    stub = router_service_pb2_grpc.RouterServiceStub(channel)
    latencies: list[float] = []
    counter = iter(range(first, first + requests))

    async def worker() -> None:
        for i in counter:
            spec = common_pb2.GenerateSpec(
                model=MODEL, prompt=f"{tag} question {i}", options=common_pb2.ModelOptions(num_predict=8)
            )
            started = time.perf_counter()
            await stub.Generate(router_service_pb2.GenerateRequest(spec=spec), timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)

    chats = [
        router_service_pb2.ChatRequest(
            spec=common_pb2.ChatSpec(
                model=MODEL,
                messages=[common_pb2.ChatMessage(role="user", content=question)],
                options=common_pb2.ModelOptions(num_predict=8),
            )
        )
        for question in QUESTIONS
    ]
    name = common_pb2.CacheOutcome.Name

    async def hit_worker(counts: Counter[str]) -> None:
        for i in counter:
            chat = chats[i % HIT_CHATS]
            started = time.perf_counter()
            reply = await stub.Chat(chat, timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)
            label = name(reply.routing.cache_outcome).removeprefix("CACHE_OUTCOME_")
            near = (
                reply.routing.near_cache and reply.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
            )
            counts["near-hit" if near else label.lower().replace("_", "-")] += 1

    if outcomes is None:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    else:
        await asyncio.gather(*(hit_worker(outcomes) for _ in range(concurrency)))
    await channel.close()
    return latencies


def _outcome(system: str, status: int, headers: Any) -> str:
    """What answered one hit-row request over HTTP."""
    if system == "floor":
        # NOTE: the floor answers 404 when its GET finds nothing.
        return "hit" if status == 200 else "miss"
    assert status == 200, status
    if system == "litellm":
        # NOTE: LiteLLM sends `x-litellm-cache-key` on an answer from its cache, and only then.
        return "hit" if "x-litellm-cache-key" in headers else "miss"
    return str(headers.get("X-Corral-Cache", "none"))


async def _http_load(
    url: str,
    concurrency: int,
    requests: int,
    tag: str,
    outcomes: Counter[str] | None = None,
    hit: dict[str, Any] | None = None,
    first: int = 0,
) -> list[float]:
    """Unique generates; with `hit` (path, api, headers, system), the hit rows' chats (request i
    sends body i modulo HIT_CHATS, from i = `first`), their outcomes counted into `outcomes`."""
    import aiohttp

    latencies: list[float] = []
    counter = iter(range(first, first + requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            for i in counter:
                body = {
                    "model": MODEL,
                    "prompt": f"{tag} question {i}",
                    "stream": False,
                    "options": {"num_predict": 8},
                }
                started = time.perf_counter()
                async with session.post(url + "/api/generate", json=body) as resp:
                    await resp.read()
                    assert resp.status == 200
                latencies.append((time.perf_counter() - started) * 1000)

        async def hit_worker(spec: dict[str, Any], counts: Counter[str]) -> None:
            target = url + spec["path"]
            bodies = [body.encode() for body in (OPENAI_BODIES if spec["api"] == "openai" else CHAT_BODIES)]
            headers = {"Content-Type": "application/json", **spec["headers"]}
            system = spec["system"]
            for i in counter:
                data = bodies[i % HIT_CHATS]
                started = time.perf_counter()
                async with session.post(target, data=data, headers=headers) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - started) * 1000)
                counts[_outcome(system, resp.status, resp.headers)] += 1

        if hit is None:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            counts = Counter[str]() if outcomes is None else outcomes
            await asyncio.gather(*(hit_worker(hit, counts) for _ in range(concurrency)))
    return latencies


async def _node_chats(admin_url: str) -> int:
    """Chat calls the simulated node has received (its admin API's counters)."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(admin_url + "/_sim/stats") as resp:
        stats = await resp.json()
    return sum(int(stats["requests_by_route"].get(route, 0)) for route in CHAT_ROUTES)


def run_worker(args: argparse.Namespace) -> None:
    import uvloop

    pids = {name: int(pid) for name, pid in (p.split("=") for p in args.pids.split(",") if p)}
    tree = set(args.tree.split(",")) if args.tree else set()
    hit = json.loads(args.hit) if args.hit else None

    def sample() -> dict[str, float]:
        cpu = {name: (_tree_cpu_s if name in tree else _cpu_s)(pid) for name, pid in pids.items()}
        cpu["loadgen"] = _self_cpu_s()
        return cpu

    async def load(
        concurrency: int, requests: int, tag: str, outcomes: Counter[str] | None = None, first: int = 0
    ) -> list[float]:
        if args.kind == "grpc":
            return await _grpc_load(args.target, concurrency, requests, tag, outcomes if hit else None, first)
        return await _http_load(args.target, concurrency, requests, tag, outcomes, hit, first)

    async def prime() -> int:
        """Repeats each hit chat until an answer comes from the cache: the first one stores it (in the
        background, so the next few may still miss). Returns the requests it took."""
        sent = 0
        for k in range(HIT_CHATS):
            for _ in range(200):
                probe: Counter[str] = Counter()
                await load(1, 1, "prime", probe, first=k)
                sent += 1
                if any(is_hit(label) for label in probe):
                    break
                await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"{args.target}: no cache hit after 200 repeats of chat {k}")
        return sent

    async def go() -> dict[str, Any]:
        primed = await prime() if hit else 0
        await load(min(args.concurrency, 8), args.warmup, f"warm-{args.tag}", Counter())
        chats_before = await _node_chats(args.node_admin) if args.node_admin else 0
        before = sample()
        outcomes: Counter[str] = Counter()
        started = time.perf_counter()
        latencies = await load(args.concurrency, args.requests, args.tag, outcomes)
        wall = time.perf_counter() - started
        after = sample()
        chats_after = await _node_chats(args.node_admin) if args.node_admin else 0
        cpu = {name: after[name] - before[name] for name in before}
        out: dict[str, Any] = {"latencies_ms": latencies, "wall_s": wall, "cpu_s": cpu}
        if hit:
            out["outcomes"] = dict(outcomes)
            out["primed_after"] = primed
            out["node_chat_calls"] = chats_after - chats_before if args.node_admin else None
        return out

    print(json.dumps(uvloop.run(go())), flush=True)


def run_floor_server() -> None:
    """A RouterService whose Generate answers at once: the cost of the gRPC hop alone."""
    import grpc
    import uvloop
    from corral.v1 import router_service_pb2, router_service_pb2_grpc

    reply = router_service_pb2.GenerateResponse(model=MODEL, response="floor", done_reason="stop")

    class Floor(router_service_pb2_grpc.RouterServiceServicer):
        async def Generate(
            self, request: router_service_pb2.GenerateRequest, context: grpc.aio.ServicerContext
        ) -> router_service_pb2.GenerateResponse:
            return reply

    async def serve() -> None:
        server = grpc.aio.server()
        router_service_pb2_grpc.add_RouterServiceServicer_to_server(Floor(), server)  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"serving on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    uvloop.run(serve())


# --- orchestration ---------------------------------------------------------------------------------
async def _measure(
    kind: str,
    target: str,
    concurrency: int,
    tag: str,
    pids: dict[str, int],
    args: argparse.Namespace,
    *,
    server: str,
    tree: tuple[str, ...] = (),
    hit: dict[str, Any] | None = None,
    node_admin: str = "",
) -> dict[str, Any]:
    """One row at one concurrency, measured by a load generator of its own; `server` names the
    process that serves the row (its CPU is the table's server column)."""
    load_before = os.getloadavg()
    argv = [sys.executable, __file__, "--worker", kind, "--target", target]
    argv += [
        "--concurrency",
        str(concurrency),
        "--requests",
        str(args.requests),
        "--warmup",
        str(args.warmup),
    ]
    argv += ["--tag", tag, "--pids", ",".join(f"{name}={pid}" for name, pid in pids.items())]
    argv += ["--tree", ",".join(tree), "--hit", json.dumps(hit) if hit else "", "--node-admin", node_admin]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen' / 'python'}"},
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(
            f"the load generator failed on {target} (exit {proc.returncode}):\n{err.decode()[-2000:]}"
        )
    raw = json.loads(out.decode().strip().splitlines()[-1])
    lat = sorted(raw["latencies_ms"])
    n = len(lat)
    cpu_ms = {name: round(s * 1000 / n, 3) for name, s in raw["cpu_s"].items()}
    row: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": n,
        "rps": round(n / raw["wall_s"], 1),
        "p50_ms": round(statistics.median(lat), 3),
        "p90_ms": round(lat[int(n * 0.9)], 3),
        "p99_ms": round(lat[int(n * 0.99)], 3),
        "server": server,
        "cpu_ms_per_request": {**cpu_ms, "total": round(sum(cpu_ms.values()), 3)},
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }
    if hit:
        outcomes = raw["outcomes"]
        row["hits"] = {
            "outcomes": outcomes,
            "hit_fraction": round(sum(v for k, v in outcomes.items() if is_hit(k)) / n, 4),
            "node_chat_calls": raw["node_chat_calls"],
            "primed_after": raw["primed_after"],
        }
    return row


async def _cache_counts(port: int) -> dict[str, int]:
    """The cache's lookup counters (degraded lookups show a budget too small for the load)."""
    from bench.harness.systems import cache_stats

    stats = await cache_stats(f"127.0.0.1:{port}")
    return {
        "exact_hits": int(stats.exact.hits),
        "exact_misses": int(stats.exact.misses),
        "degraded_lookups": int(stats.degraded_lookups),
        "stores": int(stats.exact.stores),
    }


def _router_env(http_port: int, args: argparse.Namespace | None = None, **extra: str) -> dict[str, str]:
    """A router's environment: the row's settings, then every `--router-setting` of the run (`args`;
    None for a caller without them, such as bench/tracing_overhead.py)."""
    settings = {f"CORRAL_ROUTER__{key.upper()}": value for key, value in _router_settings(args).items()}
    return {
        "CORRAL_ROUTER__PORT": "0",
        "CORRAL_ROUTER__HTTP_PORT": str(http_port),
        **LOGGING_ENV,
        **extra,
        **settings,
    }


def _router_settings(args: argparse.Namespace | None) -> dict[str, str]:
    """`--router-setting KEY=VALUE` of the run as a mapping (KEY as in `CORRAL_ROUTER__KEY`)."""
    return dict(getattr(args, "router_setting", None) or [])


def _setting(item: str) -> tuple[str, str]:
    """One `--router-setting` argument, checked when the command line is read."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{item!r}: expected KEY=VALUE, e.g. lookup_calls=32")
    return key.strip(), value


def _hit_spec(system: str) -> dict[str, Any]:
    """How a hit row's load generator sends the repeated chat and reads what answered it."""
    if system == "litellm":
        from bench.harness.systems import LITELLM_KEY

        auth = {"Authorization": f"Bearer {LITELLM_KEY}"}
        return {"system": system, "path": "/v1/chat/completions", "api": "openai", "headers": auth}
    return {"system": system, "path": "/api/chat", "api": "ollama", "headers": {}}


def litellm_unavailable(args: argparse.Namespace) -> str:
    """Why the LiteLLM row cannot run ("" when it can)."""
    from bench.harness.systems import litellm_installed

    if args.no_litellm:
        return "disabled (--no-litellm)"
    if not litellm_installed():
        return "LiteLLM is not installed (bench/litellm/install.sh)"
    return ""


async def _start_litellm(node_url: str, redis_port: int, password: str, workdir: Path) -> tuple[Any, str]:
    """LiteLLM's proxy (one worker, like one router process) over the node, its Redis cache on.

    Returns its process (bench.harness.systems.ExternalProcess) and URL once it answers a chat.
    """
    import aiohttp

    from bench.harness.systems import Node, litellm_config, start_litellm_proxy

    config = litellm_config(
        [Node(node_id="bench-1", args=(), port=int(node_url.rsplit(":", 1)[1]))], "simple-shuffle"
    )
    # NOTE: LiteLLM's exact response cache in the same Redis as Corral's exact tier, with its password.
    config["litellm_settings"].update(
        {
            "cache": True,
            "cache_params": {"type": "redis", "host": "127.0.0.1", "port": redis_port, "password": password},
        }
    )
    proxy, base = await start_litellm_proxy(config, workdir, "litellm-cache")
    spec = _hit_spec("litellm")
    deadline = time.monotonic() + 120
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.post(
                        base + spec["path"],
                        data=OPENAI_BODIES[0],
                        headers={"Content-Type": "application/json", **spec["headers"]},
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as resp:
                        await resp.read()
                        if resp.status == 200:
                            return proxy, base
                if proxy.proc is None or proxy.proc.returncode is not None:
                    tail = proxy.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                    raise RuntimeError(f"exited: {' '.join(tail)}")
                if time.monotonic() > deadline:
                    raise TimeoutError("answered no chat within 120 s")
                await asyncio.sleep(0.5)
    except BaseException:
        await proxy.kill()
        raise


async def _run_once(
    args: argparse.Namespace, rep: int, skipped: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    from devstack import migrate
    from devstack.config import make_temp_state_dir
    from devstack.postgres import PostgresServer
    from devstack.redis import RedisServer
    from tests.helpers.procs import ServiceProcess, free_port

    wanted = args.scenarios.split(",")
    levels = (1, 32)
    # NOTE: the admin API (its own port, idle during the miss rows) counts the chats a hit row let through.
    node = await ServiceProcess(
        "sim", args=("--profile", "no-delay", "--port", "0", "--admin-port", "0")
    ).start()
    node_url = f"http://127.0.0.1:{node.port}"
    admin = next((m for line in node.output if (m := _ADMIN_PORT.search(line))), None)
    assert admin is not None, "the simulator did not print its admin port"
    node_admin = f"http://127.0.0.1:{admin.group(1)}"
    procs: list[Any] = [node]
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        if "direct" in wanted:
            pids = {"node": node.pid}
            rows["direct"] = [
                await _measure("http", node_url, c, f"d{rep}c{c}", pids, args, server="node") for c in levels
            ]
        if "grpc_floor" in wanted:
            floor = await ServiceProcess("bench.router_overhead", args=("--floor-server",)).start()
            procs.append(floor)
            pids = {"floor": floor.pid}
            addr = f"127.0.0.1:{floor.port}"
            rows["grpc_floor"] = [
                await _measure("grpc", addr, c, f"f{rep}c{c}", pids, args, server="floor") for c in levels
            ]
            await floor.kill()
        for name, extra in ROUTER_VARIANTS:
            if name not in wanted and f"{name}_http" not in wanted:
                continue
            nodes = json.dumps([{"node_id": "bench-1", "address": node_url}])
            http_port = free_port()
            router = await ServiceProcess(
                "services.router",
                env=_router_env(
                    http_port,
                    args,
                    CORRAL_ROUTER__HEALTH_ADDR="",
                    CORRAL_ROUTER__CACHE_ADDR="",
                    CORRAL_ROUTER__NODES=nodes,
                    **extra,
                ),
            ).start()
            procs.append(router)
            pids = {"node": node.pid, "router": router.pid}
            targets = (
                ("grpc", f"127.0.0.1:{router.port}", name),
                ("http", f"http://127.0.0.1:{http_port}", f"{name}_http"),
            )
            for kind, target, label in targets:
                if label in wanted:
                    rows[label] = [
                        await _measure(kind, target, c, f"{label}{rep}c{c}", pids, args, server="router")
                        for c in levels
                    ]
            await router.kill()
        cache_variants = [
            (name, extra) for name, extra in CACHE_VARIANTS if name in wanted or f"{name}_http" in wanted
        ]
        hit_rows = [name for name in HIT_ROWS if name in wanted]
        if cache_variants or hit_rows:
            state = make_temp_state_dir("corral-bench-")
            # NOTE: Redis requires a password, as in the deployments: the cache reads it from a file
            # (`redis.password_file`), the floor server from the same file, LiteLLM from its config.
            password = secrets.token_urlsafe(18)
            password_file = state / "redis-password"
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            try:
                with (
                    RedisServer(port=0, state_dir=state, password=password) as redis,
                    PostgresServer(port=0, state_dir=state) as pg,
                ):
                    assert redis.pid is not None and pg.pid is not None
                    redis_url = f"redis://127.0.0.1:{redis.port}/0"
                    migrate.apply(pg.dsn)
                    stack = _Stack(
                        args, rep, levels, node, node_admin, redis, redis_url, password, password_file
                    )
                    procs.append(stack)
                    await stack.start(pg.dsn, pg.pid)
                    for name, extra in cache_variants:
                        rows.update(await stack.router_rows(name, extra, wanted))
                    if "router_exact_hit" in hit_rows or "router_exact_hit_http" in hit_rows:
                        rows.update(await stack.router_hit_rows(wanted))
                    if any(name in hit_rows for name in NEAR_ROWS):
                        rows.update(await stack.router_hit_rows(wanted, near=True))
                    if "floor_hit_http" in hit_rows:
                        rows["floor_hit_http"] = await stack.floor_hit_rows()
                    if "litellm_exact_hit" in hit_rows:
                        reason = litellm_unavailable(args)
                        if not reason:
                            try:
                                rows["litellm_exact_hit"] = await stack.litellm_hit_rows()
                            except Exception as exc:  # the row says why, the run goes on
                                last = (str(exc).strip().splitlines() or [""])[-1]
                                reason = f"failed: {type(exc).__name__}: {last}"
                        if reason:
                            skipped["litellm_exact_hit"] = reason
                    await stack.kill()
            finally:
                shutil.rmtree(state, ignore_errors=True)
    finally:
        for proc in procs:
            await proc.kill()
    return rows


class _Stack:
    """Health, the cache, Redis and PostgreSQL around the node: the rows that need the cache's Redis."""

    def __init__(
        self,
        args: argparse.Namespace,
        rep: int,
        levels: tuple[int, ...],
        node: Any,
        node_admin: str,
        redis: Any,
        redis_url: str,
        password: str,
        password_file: Path,
    ) -> None:
        self.args, self.rep, self.levels = args, rep, levels
        self.node, self.node_admin, self.node_url = node, node_admin, f"http://127.0.0.1:{node.port}"
        self.redis, self.redis_url = redis, redis_url
        self.password, self.password_file = password, password_file
        self.procs: list[Any] = []
        self.pids: dict[str, int] = {}
        self.cache_port = 0
        self.health_port = 0

    async def start(self, dsn: str, pg_pid: int) -> None:
        from tests.helpers.procs import ServiceProcess

        health = await ServiceProcess(
            "services.health",
            env={
                "CORRAL_HEALTH__PORT": "0",
                "CORRAL_HEALTH__NODES": json.dumps([{"id": "bench-1", "address": self.node_url}]),
                **LOGGING_ENV,
            },
        ).start()
        self.procs.append(health)
        cache = await ServiceProcess(
            "services.cache",
            env={
                "CORRAL_CACHE__PORT": "0",
                "CORRAL_REDIS__URL": self.redis_url,
                "CORRAL_REDIS__PASSWORD_FILE": str(self.password_file),
                "CORRAL_POSTGRES__DSN": dsn,
                "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([self.node_url]),
                "CORRAL_CACHE__EMBEDDER__MODEL": "nomic-embed-text:v1.5",
                **LOGGING_ENV,
            },
        ).start()
        self.procs.append(cache)
        self.cache_port, self.health_port = cache.port, health.port
        self.pids = {
            "node": self.node.pid,
            "cache": cache.pid,
            "health": health.pid,
            "redis": self.redis.pid,
            "postgres": pg_pid,
        }

    async def _router(self, extra: dict[str, str]) -> tuple[Any, int]:
        from tests.helpers.procs import ServiceProcess, free_port

        http_port = free_port()
        router = await ServiceProcess(
            "services.router",
            env=_router_env(
                http_port,
                self.args,
                CORRAL_ROUTER__HEALTH_ADDR=f"127.0.0.1:{self.health_port}",
                CORRAL_ROUTER__CACHE_ADDR=f"127.0.0.1:{self.cache_port}",
                CORRAL_ROUTER__NODES="[]",
                **extra,
            ),
        ).start()
        self.procs.append(router)
        return router, http_port

    async def _cache_rows(
        self, targets: tuple[tuple[str, str, str], ...], wanted: list[str], router_pid: int, hits: bool
    ) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {}
        pids = {**self.pids, "router": router_pid}
        for kind, target, row_name in targets:
            if row_name not in wanted:
                continue
            rows[row_name] = []
            for c in self.levels:
                before = await _cache_counts(self.cache_port)
                row = await _measure(
                    kind,
                    target,
                    c,
                    f"{row_name}{self.rep}c{c}",
                    pids,
                    self.args,
                    server="router",
                    tree=("postgres",),
                    hit=_hit_spec("corral") if hits else None,
                    node_admin=self.node_admin if hits else "",
                )
                after = await _cache_counts(self.cache_port)
                row["cache_counts"] = {k: after[k] - before[k] for k in after}
                rows[row_name].append(row)
        return rows

    async def router_rows(
        self, name: str, extra: dict[str, str], wanted: list[str], hits: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        """The rows `name` (gRPC) and `name`_http through one router with these settings."""
        router, http_port = await self._router(extra)
        targets = (
            ("grpc", f"127.0.0.1:{router.port}", name),
            ("http", f"http://127.0.0.1:{http_port}", f"{name}_http"),
        )
        rows = await self._cache_rows(targets, wanted, router.pid, hits=hits)
        await router.kill()
        return rows

    async def router_hit_rows(self, wanted: list[str], near: bool = False) -> dict[str, list[dict[str, Any]]]:
        """The repeated chats through a router with the defaults (smoke runs: a lookup budget of
        `--hit-lookup-budget-ms`, so a busy machine's slow lookups do not turn the hits into misses);
        `near`: with its near cache on, over the cache's Redis."""
        budget = self.args.hit_lookup_budget_ms
        extra = {"CORRAL_ROUTER__LOOKUP_BUDGET_MS": str(budget)} if budget else {}
        if near:
            extra["CORRAL_ROUTER__NEAR_CACHE__REDIS_URL"] = self.redis_url
            extra["CORRAL_ROUTER__NEAR_CACHE__REDIS_PASSWORD_FILE"] = str(self.password_file)
        name = "router_near_hit" if near else "router_exact_hit"
        return await self.router_rows(name, extra, wanted, hits=True)

    async def floor_hit_rows(self) -> list[dict[str, Any]]:
        """bench/floor_hit.py over the same Redis, its values the node's own answers to the chats."""
        import aiohttp
        import redis.asyncio as aioredis

        from bench.floor_hit import key_for
        from tests.helpers.procs import ServiceProcess

        headers = {"Content-Type": "application/json"}
        client = aioredis.Redis(host="127.0.0.1", port=self.redis.port, password=self.password)
        try:
            async with aiohttp.ClientSession() as http:
                for body in CHAT_BODIES:
                    async with http.post(self.node_url + "/api/chat", data=body, headers=headers) as resp:
                        answer = await resp.read()
                        assert resp.status == 200, answer
                    await client.set(key_for(body.encode()), answer)
        finally:
            await client.aclose()
        floor = await ServiceProcess(
            "bench.floor_hit",
            args=("--redis-url", self.redis_url, "--password-file", str(self.password_file)),
        ).start()
        self.procs.append(floor)
        pids = {"floor": floor.pid, "redis": self.redis.pid, "node": self.node.pid}
        rows = [
            await _measure(
                "http",
                f"http://127.0.0.1:{floor.port}",
                c,
                f"floor_hit{self.rep}c{c}",
                pids,
                self.args,
                server="floor",
                hit=_hit_spec("floor"),
                node_admin=self.node_admin,
            )
            for c in self.levels
        ]
        await floor.kill()
        return rows

    async def litellm_hit_rows(self) -> list[dict[str, Any]]:
        """LiteLLM's proxy with its Redis cache, the same chat on its OpenAI-compatible endpoint."""
        with tempfile.TemporaryDirectory(prefix="corral-bench-litellm-") as scratch:
            proxy, url = await _start_litellm(self.node_url, self.redis.port, self.password, Path(scratch))
            self.procs.append(proxy)
            assert proxy.proc is not None
            pids = {"litellm": proxy.proc.pid, "redis": self.redis.pid, "node": self.node.pid}
            try:
                return [
                    await _measure(
                        "http",
                        url,
                        c,
                        f"litellm_hit{self.rep}c{c}",
                        pids,
                        self.args,
                        server="litellm",
                        tree=("litellm",),
                        hit=_hit_spec("litellm"),
                        node_admin=self.node_admin,
                    )
                    for c in self.levels
                ]
            finally:
                await proxy.kill()

    async def kill(self) -> None:
        for proc in reversed(self.procs):
            await proc.kill()


def _summarise(runs: list[dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per scenario and concurrency: the median run (by p50 at c1, by rps at c32) and the best."""
    summary: dict[str, Any] = {}
    for name in SCENARIOS:
        for level in (1, 32):
            rows = [r for run in runs for r in run.get(name, []) if r["concurrency"] == level]
            if not rows:
                continue
            key = (lambda r: r["p50_ms"]) if level == 1 else (lambda r: -r["rps"])
            ordered = sorted(rows, key=key)
            summary.setdefault(name, {})[f"c{level}"] = {
                "median": ordered[(len(ordered) - 1) // 2],
                "best": ordered[0],
            }
    direct = summary.get("direct", {})
    for name, levels in summary.items():
        if name in HIT_ROWS:
            continue  # NOTE: a hit never reaches the node: there is nothing to add to.
        for level, pick in levels.items():
            for which in ("median", "best"):
                base = direct.get(level, {}).get(which)
                if base is not None:
                    pick[which]["added_p50_ms"] = round(pick[which]["p50_ms"] - base["p50_ms"], 3)
    return summary


def _ratios(summary: dict[str, Any]) -> list[str]:
    """The comparisons issue 20 asks for, from the medians of this run (only those whose rows ran)."""

    def pick(name: str) -> dict[str, Any] | None:
        row: dict[str, Any] | None = summary.get(name, {}).get("c32", {}).get("median")
        return row

    def server_cpu(row: dict[str, Any]) -> float:
        return float(row["cpu_ms_per_request"].get(row["server"], 0.0))

    lines = []
    hit_http, floor, litellm = (
        pick("router_exact_hit_http"),
        pick("floor_hit_http"),
        pick("litellm_exact_hit"),
    )
    grpc_floor = pick("grpc_floor")
    if hit_http and floor:
        lines.append(
            f"- exact hit over HTTP, c32 throughput: {hit_http['rps'] / floor['rps']:.2f}x the floor row"
        )
    if hit_http and litellm:
        lines.append(
            f"- exact hit over HTTP, c32 throughput: {hit_http['rps'] / litellm['rps']:.2f}x "
            "LiteLLM's cached answer"
        )
    near_http = pick("router_near_hit_http")
    if near_http and floor:
        lines.append(
            f"- near-cache hit over HTTP, c32 throughput: {near_http['rps'] / floor['rps']:.2f}x "
            "the floor row"
        )
    if near_http and litellm:
        lines.append(
            f"- near-cache hit over HTTP, c32 throughput: {near_http['rps'] / litellm['rps']:.2f}x "
            "LiteLLM's cached answer"
        )
    for name in ("router_exact_hit", "router_exact_hit_http", *NEAR_ROWS, "router_cache_miss"):
        row = pick(name)
        if row and grpc_floor and server_cpu(grpc_floor) > 0:
            ratio = server_cpu(row) / server_cpu(grpc_floor)
            lines.append(f"- `{name}` router CPU per request at c32: {ratio:.2f}x the `grpc_floor` server's")
    return lines


def _markdown(
    args: argparse.Namespace,
    summary: dict[str, Any],
    runs: int,
    skipped: dict[str, str],
    load_start: list[float],
) -> list[str]:
    lines = [
        "# Router overhead",
        "",
        "No-delay simulated node, short non-streaming generate (num_predict 8), unique prompts (misses);",
        f"the hit rows cycle through {HIT_CHATS} chats (num_predict 8), each stored before the measured run,",
        "so an exact tier answers them and the requests in flight differ: the router with the cache",
        "(`router_exact_hit` over gRPC, `_http` over `/api/chat`), `floor_hit_http` (bench/floor_hit.py: one",
        "aiohttp handler, one Redis GET) and `litellm_exact_hit` (LiteLLM's proxy with its Redis cache, on",
        "`/v1/chat/completions`), all on the same password-protected Redis.",
        f"{args.requests} requests per row, {runs} run(s) per row (the median run is shown; the best is in",
        "the JSON); load generator in its own process. `added p50` is the row's p50 minus the direct",
        "p50 of the same run ranking at the same concurrency (none for hit rows, which skip the node).",
        "`server CPU` is the row's serving process (node, floor server, router or LiteLLM's proxy); total",
        "CPU is summed over every process of the row (load generator, node, router, and cache, health,",
        "Redis, PostgreSQL where present). `exact hits` is the share of measured answers the row's exact",
        "tier gave (`X-Corral-Cache`/`RoutingInfo`, LiteLLM's `x-litellm-cache-key`, the floor's status)",
        "and the chat calls the node received meanwhile; `near` the share the router's near cache answered.",
        f"Load average (1, 5, 15 min) at the start: {', '.join(f'{v:.2f}' for v in load_start)}.",
        (
            f"The hit rows' router ran with `lookup_budget_ms: {args.hit_lookup_budget_ms:g}` "
            "(not the default)."
            if args.hit_lookup_budget_ms
            else "Every router ran with its default lookup budget: `lookup_budget_ms` 15, following the "
            'cache\'s reply times up to `lookup_budget_max_ms` 250 (docs/router.md, "The lookup budget").'
        ),
        *(
            [
                "Every router also ran with "
                + ", ".join(f"`{k}: {v}`" for k, v in settings.items())
                + " (`--router-setting`; not the defaults)."
            ]
            if (settings := _router_settings(args))
            else []
        ),
        "Reproduce: `PYTHONPATH=.:gen/python .venv/bin/python bench/router_overhead.py --repeat 3`.",
        "",
        "| scenario | conc. | requests/s | p50 ms | p90 ms | p99 ms | added p50 ms | server CPU ms/req "
        "| cache + Redis CPU ms/req | total CPU ms/req | exact hits (node calls) | degraded lookups "
        "| load avg before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, levels in summary.items():
        for pick in levels.values():
            r = pick["median"]
            cpu = r["cpu_ms_per_request"]
            counts = r.get("cache_counts")
            degraded = f"{counts['degraded_lookups'] / r['requests']:.0%}" if counts else "–"
            hits = r.get("hits")
            hit_cell = f"{hits['hit_fraction']:.0%} ({hits['node_chat_calls']})" if hits else "–"
            if hits and "near-hit" in hits["outcomes"]:
                hit_cell += f", {hits['outcomes']['near-hit'] / r['requests']:.0%} near"
            added = f"{r['added_p50_ms']:.2f}" if "added_p50_ms" in r else "–"
            store_cpu = cpu.get("cache", 0) + cpu.get("redis", 0)
            lines.append(
                f"| {name} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {added} | {cpu.get(r['server'], 0):.3f} "
                f"| {store_cpu:.3f} | {cpu['total']:.3f} | {hit_cell} | {degraded} "
                f"| {r['loadavg_before'][0]:.2f} → {r['loadavg_after'][0]:.2f} |"
            )
    for name, reason in skipped.items():
        cell = reason.replace("|", "/")
        lines.append(f"| {name} | – | not run: {cell} |" + " – |" * 10)
    ratios = _ratios(summary)
    if ratios:
        lines += ["", "Ratios from this run (c32 medians):", "", *ratios]
    return lines


def _write(out: Path, results: dict[str, Any], lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "router_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "router_overhead.md").write_text("\n".join(lines) + "\n")


async def main(args: argparse.Namespace) -> None:
    load_start = [round(v, 2) for v in os.getloadavg()]
    skipped: dict[str, str] = {}
    runs = [await _run_once(args, rep, skipped) for rep in range(args.repeat)]
    summary = _summarise(runs)
    results = {
        "summary": summary,
        "skipped": skipped,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": load_start},
        "load_generator": "own process, uvloop: grpc.aio (gRPC rows), aiohttp (the others)",
        "service_env": LOGGING_ENV,
        "parameters": {
            "hit_lookup_budget_ms": args.hit_lookup_budget_ms,
            "router_settings": _router_settings(args),
            "hit_chats": HIT_CHATS,
            "requests": args.requests,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "smoke": args.smoke,
        },
    }
    lines = _markdown(args, summary, len(runs), skipped, load_start)
    print("\n".join(lines))
    if args.out:
        _write(Path(args.out), results, lines)
    else:
        # NOTE: a smoke run without --out leaves the committed results alone.
        with tempfile.TemporaryDirectory(prefix="corral-bench-smoke-") as scratch:
            _write(Path(scratch), results, lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--requests", type=int, default=None, help="measured requests per row (3000; 40 smoke)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="unmeasured requests before each row (200; 20 smoke)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of every scenario (median and best kept)")
    parser.add_argument("--scenarios", default="", help="comma-separated subset (default: all; smoke: a few)")
    parser.add_argument("--out", default="", help="directory for the result files (default bench/results)")
    parser.add_argument(
        "--smoke", action="store_true", help="seconds-long rows, results in a temporary folder"
    )
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's row out (it says so)")
    parser.add_argument(
        "--hit-lookup-budget-ms",
        type=float,
        default=None,
        help="the hit rows' router lookup budget (default: the router's; smoke: 1000)",
    )
    parser.add_argument(
        "--router-setting",
        action="append",
        type=_setting,
        metavar="KEY=VALUE",
        help="a router setting for every router of the run (as CORRAL_ROUTER__KEY), e.g. lookup_calls=32; "
        "repeatable, recorded in the results",
    )
    parser.add_argument("--worker", dest="kind", default=None)
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--pids", default="")
    parser.add_argument("--tree", default="")
    parser.add_argument("--hit", default="")
    parser.add_argument("--node-admin", default="")
    parsed = parser.parse_args()
    if parsed.floor_server:
        run_floor_server()
    elif parsed.kind:
        run_worker(parsed)
    else:
        import uvloop

        parsed.requests = parsed.requests or (40 if parsed.smoke else 3000)
        parsed.warmup = parsed.warmup if parsed.warmup is not None else (20 if parsed.smoke else 200)
        if parsed.hit_lookup_budget_ms is None and parsed.smoke:
            parsed.hit_lookup_budget_ms = 1000
        parsed.scenarios = parsed.scenarios or ",".join(SMOKE_SCENARIOS if parsed.smoke else SCENARIOS)
        unknown = [n for n in parsed.scenarios.split(",") if n not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario {unknown[0]!r}: choose from {', '.join(SCENARIOS)}")
        parsed.out = parsed.out or ("" if parsed.smoke else str(RESULTS))
        uvloop.run(main(parsed))
