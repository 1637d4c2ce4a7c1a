"""HTTP API overhead: the Ollama/OpenAI translation layer alone, over an in-process core that answers at once.

The server (build_http_app over tests/http/fake_core.FakeCore) runs in a child process; an aiohttp
load generator in this process sends non-streamed /api/generate, streamed /api/chat (5 NDJSON lines)
and streamed /v1/chat/completions (SSE). What is left is the cost of parsing, translating, encoding and
aiohttp itself. Writes bench/results/http_overhead.md.

    PYTHONPATH=.:gen/python .venv/bin/python bench/http_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]
RESULTS = ROOT / "bench" / "results"

CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "/api/generate",
        {"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"temperature": 0}},
    ),
    ("/api/chat", {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]}),
    (
        "/v1/chat/completions",
        {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ),
]


def _serve(port_queue: Any) -> None:
    import uvloop

    from services.router.config import RouterConfig
    from services.router.http.app import start_http_server
    from tests.http.fake_core import FakeCore

    async def main() -> None:
        _runner, port = await start_http_server(FakeCore(), RouterConfig(http_port=0))
        port_queue.put(port)
        await asyncio.Event().wait()

    uvloop.run(main())


async def _load(url: str, body: dict[str, Any], concurrency: int, requests: int) -> tuple[float, list[float]]:
    import aiohttp

    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            async with session.post(url, json=body) as resp:
                await resp.read()

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=30)
    rows = []
    try:
        for path, body in CASES:
            for concurrency in (1, 32):
                elapsed, lat = asyncio.run(
                    _load(f"http://127.0.0.1:{port}{path}", body, concurrency, args.requests)
                )
                lat.sort()
                streamed = "yes" if body.get("stream", True) else "no"
                p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99)]
                rps = len(lat) / elapsed
                rows.append(f"| {path} | {streamed} | {concurrency} | {rps:.0f} | {p50:.2f} | {p99:.2f} |")
                print(rows[-1], flush=True)
    finally:
        server.terminate()
    load = os.getloadavg()[0]
    text = "\n".join(
        [
            "# HTTP API overhead",
            "",
            "The Ollama/OpenAI layer alone, over a core that answers at once (tests/http/fake_core.py);",
            f"server in a child process, aiohttp load generator in another; {args.requests} requests a row;",
            f"1-minute load average {load:.1f} at the end (2 cores, other suites running). Reproduce:",
            "`PYTHONPATH=.:gen/python .venv/bin/python bench/http_overhead.py`.",
            "",
            "| endpoint | streamed | concurrency | requests/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http_overhead.md").write_text(text)


if __name__ == "__main__":
    main()
