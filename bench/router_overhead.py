"""Router overhead: a no-delay simulated node called directly vs through one router process.

Short non-streaming generates (num_predict 8), unique prompts (cache misses). The load generator
runs in a separate process: a grpc.aio client for the router, an aiohttp client for the node.
Scenarios: direct to the node; router without cache; router with health and the cache (the miss
path: lookup, forward, store, outcome reports). Writes bench/results/router_overhead.{json,md}.

    PYTHONPATH=.:gen/python .venv/bin/python bench/router_overhead.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]

RESULTS = ROOT / "bench" / "results"
MODEL = "llama3.2:1b"


# --- load generator (runs in its own process) -------------------------------------------------------
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

    async def go() -> dict[str, Any]:
        load = _grpc_load if args.kind == "grpc" else _http_load
        await load(args.target, min(args.concurrency, 8), 200, f"warm-{args.tag}")
        started = time.perf_counter()
        latencies = await load(args.target, args.concurrency, args.requests, args.tag)
        wall = time.perf_counter() - started
        return {"latencies_ms": latencies, "wall_s": wall}

    print(json.dumps(uvloop.run(go())), flush=True)


# --- orchestration ---------------------------------------------------------------------------------
async def _measure(kind: str, target: str, concurrency: int, requests: int, tag: str) -> dict[str, Any]:
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
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen' / 'python'}"},
    )
    out, _ = await proc.communicate()
    raw = json.loads(out.decode().strip().splitlines()[-1])
    lat = sorted(raw["latencies_ms"])
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "rps": round(len(lat) / raw["wall_s"], 1),
        "p50_ms": round(statistics.median(lat), 3),
        "p90_ms": round(lat[int(len(lat) * 0.9)], 3),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 3),
    }


async def main(args: argparse.Namespace) -> None:
    from devstack import migrate
    from devstack.config import make_temp_state_dir
    from devstack.postgres import PostgresServer
    from devstack.redis import RedisServer
    from tests.helpers.procs import ServiceProcess

    state = make_temp_state_dir("corral-bench-")
    node = await ServiceProcess("sim", args=("--profile", "no-delay", "--port", "0", "--no-admin")).start()
    node_url = f"http://127.0.0.1:{node.port}"
    nodes = json.dumps([{"node_id": "bench-1", "address": node_url}])
    procs: list[ServiceProcess] = [node]
    results: dict[str, Any] = {"scenarios": {}}
    try:
        results["scenarios"]["direct"] = [
            await _measure("http", node_url, c, args.requests, f"direct{c}") for c in (1, 32)
        ]
        router = await ServiceProcess(
            "services.router",
            env={
                "CORRAL_ROUTER__PORT": "0",
                "CORRAL_ROUTER__HEALTH_ADDR": "",
                "CORRAL_ROUTER__CACHE_ADDR": "",
                "CORRAL_ROUTER__NODES": nodes,
                "CORRAL_LOGGING__ACCESS_LOG": "false",
            },
        ).start()
        procs.append(router)
        results["scenarios"]["router_no_cache"] = [
            await _measure("grpc", f"127.0.0.1:{router.port}", c, args.requests, f"plain{c}") for c in (1, 32)
        ]
        await router.kill()
        if not args.skip_cache:
            with RedisServer(port=0, state_dir=state) as redis, PostgresServer(port=0, state_dir=state) as pg:
                migrate.apply(pg.dsn)
                health = await ServiceProcess(
                    "services.health",
                    env={
                        "CORRAL_HEALTH__PORT": "0",
                        "CORRAL_HEALTH__NODES": json.dumps([{"id": "bench-1", "address": node_url}]),
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
                        "CORRAL_LOGGING__ACCESS_LOG": "false",
                    },
                ).start()
                procs += [health, cache]
                router = await ServiceProcess(
                    "services.router",
                    env={
                        "CORRAL_ROUTER__PORT": "0",
                        "CORRAL_ROUTER__HEALTH_ADDR": f"127.0.0.1:{health.port}",
                        "CORRAL_ROUTER__CACHE_ADDR": f"127.0.0.1:{cache.port}",
                        "CORRAL_ROUTER__NODES": "[]",
                        "CORRAL_LOGGING__ACCESS_LOG": "false",
                    },
                ).start()
                procs.append(router)
                results["scenarios"]["router_cache_miss"] = [
                    await _measure("grpc", f"127.0.0.1:{router.port}", c, args.requests, f"miss{c}")
                    for c in (1, 32)
                ]
                for proc in (router, cache, health):
                    await proc.kill()
    finally:
        for proc in procs:
            await proc.kill()
    direct = {r["concurrency"]: r for r in results["scenarios"]["direct"]}
    summary: dict[str, Any] = {}
    for name, rows in results["scenarios"].items():
        for row in rows:
            row["added_p50_ms"] = round(row["p50_ms"] - direct[row["concurrency"]]["p50_ms"], 3)
        summary[name] = {f"c{r['concurrency']}": r for r in rows}
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    results["load_generator"] = "separate process: grpc.aio client (router) / aiohttp (direct), uvloop"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "router_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Router overhead",
        "",
        "No-delay simulated node, short non-streaming generate (num_predict 8), unique prompts (misses);",
        f"{args.requests} requests per row; load generator in its own process. `added p50` is the router's",
        "p50 minus the direct p50 at the same concurrency. Reproduce: `PYTHONPATH=.:gen/python",
        ".venv/bin/python bench/router_overhead.py`.",
        "",
        "| scenario | concurrency | requests/s | p50 ms | p90 ms | p99 ms | added p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results["scenarios"].items():
        for r in rows:
            lines.append(
                f"| {name} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['added_p50_ms']:.2f} |"
            )
    (RESULTS / "router_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--skip-cache", action="store_true")
    parser.add_argument("--worker", dest="kind", default=None)
    parser.add_argument("--target", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--tag", default="")
    parsed = parser.parse_args()
    if parsed.kind:
        run_worker(parsed)
    else:
        import uvloop

        uvloop.run(main(parsed))
