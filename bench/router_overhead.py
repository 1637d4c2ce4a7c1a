"""Router overhead: a no-delay simulated node called directly vs through one router process.

Short non-streaming generates (num_predict 8), unique prompts (cache misses). The load generator
runs in a separate process: a grpc.aio client for the router's gRPC API, an aiohttp client for the
node and for the router's Ollama-compatible HTTP API (`_http` rows: the same client and request as
`direct`, so the difference is the router alone). Scenarios: direct to the node; `grpc_floor`, a
bare grpc.aio server that answers Generate at once (what one Python gRPC hop costs on this machine,
the floor under any gRPC row); router without cache; router with health and the cache (the miss
path: lookup, forward, store, outcome reports). Besides latency and throughput, every row records
the CPU time each process spent per request (from /proc, read by the load generator right around
the measured phase) and the load average before and after, so a run on a busy machine can still be
judged: on 2 cores, N requests/s need the CPU per request summed over all processes below 2/N s.
Writes bench/results/router_overhead.{json,md}.

    PYTHONPATH=.:gen/python .venv/bin/python bench/router_overhead.py [--requests 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
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
SCENARIOS = (
    "direct",
    "grpc_floor",
    *(n for n, _ in ROUTER_VARIANTS),
    *(f"{n}_http" for n, _ in ROUTER_VARIANTS if n in HTTP_ROWS),
    *(n for n, _ in CACHE_VARIANTS),
    *(f"{n}_http" for n, _ in CACHE_VARIANTS if n in HTTP_ROWS),
)
# NOTE: the settings every service gets in this benchmark, written down because they change the cost:
# the per-RPC access log is off (it is a debug aid, see docs/router.md) and logging is at WARNING.
LOGGING_ENV = {"CORRAL_LOGGING__ACCESS_LOG": "false", "CORRAL_LOGGING__LEVEL": "WARNING"}
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


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


async def _grpc_load(addr: str, concurrency: int, requests: int, tag: str) -> list[float]:
    import grpc
    from corral.v1 import common_pb2, router_service_pb2, router_service_pb2_grpc

    channel = grpc.aio.insecure_channel(addr)
    stub = router_service_pb2_grpc.RouterServiceStub(channel)
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            spec = common_pb2.GenerateSpec(
                model=MODEL, prompt=f"{tag} question {i}", options=common_pb2.ModelOptions(num_predict=8)
            )
            started = time.perf_counter()
            await stub.Generate(router_service_pb2.GenerateRequest(spec=spec), timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await channel.close()
    return latencies


async def _http_load(url: str, concurrency: int, requests: int, tag: str) -> list[float]:
    import aiohttp

    latencies: list[float] = []
    counter = iter(range(requests))
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

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def run_worker(args: argparse.Namespace) -> None:
    import uvloop

    pids = {name: int(pid) for name, pid in (p.split("=") for p in args.pids.split(",") if p)}
    tree = set(args.tree.split(",")) if args.tree else set()

    def sample() -> dict[str, float]:
        cpu = {name: (_tree_cpu_s if name in tree else _cpu_s)(pid) for name, pid in pids.items()}
        cpu["loadgen"] = _self_cpu_s()
        return cpu

    async def go() -> dict[str, Any]:
        load = _grpc_load if args.kind == "grpc" else _http_load
        await load(args.target, min(args.concurrency, 8), 200, f"warm-{args.tag}")
        before = sample()
        started = time.perf_counter()
        latencies = await load(args.target, args.concurrency, args.requests, args.tag)
        wall = time.perf_counter() - started
        after = sample()
        cpu = {name: after[name] - before[name] for name in before}
        return {"latencies_ms": latencies, "wall_s": wall, "cpu_s": cpu}

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
    requests: int,
    tag: str,
    pids: dict[str, int],
    tree: tuple[str, ...] = (),
) -> dict[str, Any]:
    load_before = os.getloadavg()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--target",
        target,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--tag",
        tag,
        "--pids",
        ",".join(f"{name}={pid}" for name, pid in pids.items()),
        "--tree",
        ",".join(tree),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen' / 'python'}"},
    )
    out, _ = await proc.communicate()
    raw = json.loads(out.decode().strip().splitlines()[-1])
    lat = sorted(raw["latencies_ms"])
    n = len(lat)
    cpu_ms = {name: round(s * 1000 / n, 3) for name, s in raw["cpu_s"].items()}
    return {
        "concurrency": concurrency,
        "requests": n,
        "rps": round(n / raw["wall_s"], 1),
        "p50_ms": round(statistics.median(lat), 3),
        "p90_ms": round(lat[int(n * 0.9)], 3),
        "p99_ms": round(lat[int(n * 0.99)], 3),
        "cpu_ms_per_request": {**cpu_ms, "total": round(sum(cpu_ms.values()), 3)},
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


async def _cache_counts(port: int) -> dict[str, int]:
    """The cache's lookup counters (degraded lookups show a budget too small for the load)."""
    import grpc
    from corral.v1 import cache_service_pb2, cache_service_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stats = await cache_service_pb2_grpc.CacheServiceStub(channel).Stats(
            cache_service_pb2.StatsRequest(), timeout=5
        )
    return {
        "exact_misses": int(stats.exact.misses),
        "degraded_lookups": int(stats.degraded_lookups),
        "stores": int(stats.exact.stores),
    }


def _router_env(http_port: int, **extra: str) -> dict[str, str]:
    return {"CORRAL_ROUTER__PORT": "0", "CORRAL_ROUTER__HTTP_PORT": str(http_port), **LOGGING_ENV, **extra}


async def _run_once(args: argparse.Namespace, rep: int) -> dict[str, list[dict[str, Any]]]:
    from devstack import migrate
    from devstack.config import make_temp_state_dir
    from devstack.postgres import PostgresServer
    from devstack.redis import RedisServer
    from tests.helpers.procs import ServiceProcess, free_port

    wanted = args.scenarios.split(",")
    levels = (1, 32)
    node = await ServiceProcess("sim", args=("--profile", "no-delay", "--port", "0", "--no-admin")).start()
    node_url = f"http://127.0.0.1:{node.port}"
    procs: list[ServiceProcess] = [node]
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        if "direct" in wanted:
            pids = {"node": node.pid}
            rows["direct"] = [
                await _measure("http", node_url, c, args.requests, f"d{rep}c{c}", pids) for c in levels
            ]
        if "grpc_floor" in wanted:
            floor = await ServiceProcess("bench.router_overhead", args=("--floor-server",)).start()
            procs.append(floor)
            pids = {"router": floor.pid}
            addr = f"127.0.0.1:{floor.port}"
            rows["grpc_floor"] = [
                await _measure("grpc", addr, c, args.requests, f"f{rep}c{c}", pids) for c in levels
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
                        await _measure(kind, target, c, args.requests, f"{label}{rep}c{c}", pids)
                        for c in levels
                    ]
            await router.kill()
        cache_variants = [
            (name, extra) for name, extra in CACHE_VARIANTS if name in wanted or f"{name}_http" in wanted
        ]
        if cache_variants:
            state = make_temp_state_dir("corral-bench-")
            with RedisServer(port=0, state_dir=state) as redis, PostgresServer(port=0, state_dir=state) as pg:
                migrate.apply(pg.dsn)
                health = await ServiceProcess(
                    "services.health",
                    env={
                        "CORRAL_HEALTH__PORT": "0",
                        "CORRAL_HEALTH__NODES": json.dumps([{"id": "bench-1", "address": node_url}]),
                        **LOGGING_ENV,
                    },
                ).start()
                cache = await ServiceProcess(
                    "services.cache",
                    env={
                        "CORRAL_CACHE__PORT": "0",
                        "CORRAL_REDIS__URL": redis.url,
                        "CORRAL_POSTGRES__DSN": pg.dsn,
                        "CORRAL_CACHE__EMBEDDER__NODE_URLS": json.dumps([node_url]),
                        "CORRAL_CACHE__EMBEDDER__MODEL": "nomic-embed-text:v1.5",
                        **LOGGING_ENV,
                    },
                ).start()
                procs += [health, cache]
                assert redis.pid is not None and pg.pid is not None
                for name, extra in cache_variants:
                    http_port = free_port()
                    router = await ServiceProcess(
                        "services.router",
                        env=_router_env(
                            http_port,
                            CORRAL_ROUTER__HEALTH_ADDR=f"127.0.0.1:{health.port}",
                            CORRAL_ROUTER__CACHE_ADDR=f"127.0.0.1:{cache.port}",
                            CORRAL_ROUTER__NODES="[]",
                            **extra,
                        ),
                    ).start()
                    procs.append(router)
                    pids = {
                        "node": node.pid,
                        "router": router.pid,
                        "cache": cache.pid,
                        "health": health.pid,
                        "redis": redis.pid,
                        "postgres": pg.pid,
                    }
                    targets = (
                        ("grpc", f"127.0.0.1:{router.port}", name),
                        ("http", f"http://127.0.0.1:{http_port}", f"{name}_http"),
                    )
                    for kind, target, row_name in targets:
                        if row_name not in wanted:
                            continue
                        rows[row_name] = []
                        for c in levels:
                            before = await _cache_counts(cache.port)
                            row = await _measure(
                                kind, target, c, args.requests, f"{row_name}{rep}c{c}", pids, ("postgres",)
                            )
                            after = await _cache_counts(cache.port)
                            row["cache_counts"] = {k: after[k] - before[k] for k in after}
                            rows[row_name].append(row)
                    await router.kill()
                for proc in (cache, health):
                    await proc.kill()
    finally:
        for proc in procs:
            await proc.kill()
    return rows


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
    for levels in summary.values():
        for level, pick in levels.items():
            for which in ("median", "best"):
                base = direct.get(level, {}).get(which)
                if base is not None:
                    pick[which]["added_p50_ms"] = round(pick[which]["p50_ms"] - base["p50_ms"], 3)
    return summary


def _markdown(args: argparse.Namespace, summary: dict[str, Any], runs: int) -> list[str]:
    lines = [
        "# Router overhead",
        "",
        "No-delay simulated node, short non-streaming generate (num_predict 8), unique prompts (misses);",
        f"{args.requests} requests per row, {runs} run(s) per row (the median run is shown; the best is in",
        "the JSON); load generator in its own process. `added p50` is the router's p50 minus the direct",
        "p50 of the same run ranking at the same concurrency. CPU ms/request is summed over every process",
        "of the row (load generator, node, router, and cache, health, Redis, PostgreSQL where present).",
        "Reproduce: `PYTHONPATH=.:gen/python .venv/bin/python bench/router_overhead.py --repeat 3`.",
        "",
        "| scenario | conc. | requests/s | p50 ms | p90 ms | p99 ms | added p50 ms | router CPU ms/req "
        "| total CPU ms/req | degraded lookups | load avg before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, levels in summary.items():
        for pick in levels.values():
            r = pick["median"]
            cpu = r["cpu_ms_per_request"]
            counts = r.get("cache_counts")
            degraded = f"{counts['degraded_lookups'] / r['requests']:.0%}" if counts else "–"
            lines.append(
                f"| {name} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r.get('added_p50_ms', 0):.2f} | {cpu.get('router', 0):.3f} "
                f"| {cpu['total']:.3f} | {degraded} "
                f"| {r['loadavg_before'][0]:.2f} → {r['loadavg_after'][0]:.2f} |"
            )
    return lines


def _write(out: Path, results: dict[str, Any], lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "router_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "router_overhead.md").write_text("\n".join(lines) + "\n")


async def main(args: argparse.Namespace) -> None:
    runs = [await _run_once(args, rep) for rep in range(args.repeat)]
    summary = _summarise(runs)
    results = {
        "summary": summary,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "load_generator": "own process, uvloop: grpc.aio (gRPC rows), aiohttp (direct, _http rows)",
        "service_env": LOGGING_ENV,
    }
    lines = _markdown(args, summary, len(runs))
    print("\n".join(lines))
    _write(Path(args.out), results, lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of every scenario (median and best kept)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    parser.add_argument("--out", default=str(RESULTS), help="directory for the result files")
    parser.add_argument("--worker", dest="kind", default=None)
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--tag", default="")
    parser.add_argument("--pids", default="")
    parser.add_argument("--tree", default="")
    parsed = parser.parse_args()
    if parsed.floor_server:
        run_floor_server()
    elif parsed.kind:
        run_worker(parsed)
    else:
        import uvloop

        uvloop.run(main(parsed))
