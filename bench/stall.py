"""Stall: latency of streaming chats while one node is frozen (SIGSTOP), stall detection on and off.

    python -m bench.stall                       # both configurations, results printed
    python -m bench.stall --out bench/results   # and written as stall.{json,md}

Each configuration runs its own stack as processes (tests/router/stack.py): four simulated nodes
(node-4 in its own process, so that it alone can be frozen), health and the router, with the
default `ttft_timeout_s` of 10 s. `--clients` streaming chats run in a loop for `--warmup` seconds,
then node-4 is frozen for `--freeze` seconds, then traffic goes on for `--after` seconds. Reported
per configuration: p50/p99 of the streams that ended before the freeze (fault-free), of all
streams, and of the streams node-4 held when it froze (those it failed, answered elsewhere), with
the failed streams, and the stalls the router declared per node and phase (any on another node
than node-4 would be a false one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from corral.v1 import router_service_pb2

from bench.harness.stats import percentile
from tests.helpers.procs import free_port
from tests.observability.scrape import scrape, value
from tests.router.stack import Stack, chat_spec, start_stack

ROOT = Path(__file__).resolve().parents[1]
FROZEN = "node-4"


@dataclass
class Stream:
    started: float
    ended: float = 0.0
    ok: bool = False
    failed: tuple[str, ...] = ()

    @property
    def ms(self) -> float:
        return (self.ended - self.started) * 1000


async def _client(stack: Stack, index: int, stop: asyncio.Event, streams: list[Stream]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        spec = chat_spec(("user", f"client {index} question {n}: tell me something"))
        stream = Stream(time.monotonic())
        streams.append(stream)
        try:
            call = stack.stub.ChatStream(router_service_pb2.ChatStreamRequest(spec=spec), timeout=60)
            last = None
            async for chunk in call:
                last = chunk
            stream.ok = last is not None and last.done
            if last is not None:
                stream.failed = tuple(last.routing.failed_node_ids)
        except grpc.aio.AioRpcError:
            stream.ok = False
        stream.ended = time.monotonic()


def _pcts(streams: list[Stream]) -> dict[str, Any]:
    done = sorted(s.ms for s in streams if s.ended)
    if not done:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "failed": 0}
    return {
        "n": len(done),
        "p50_ms": round(percentile(done, 50) or 0),
        "p99_ms": round(percentile(done, 99) or 0),
        "max_ms": round(done[-1]),
        "failed": sum(not s.ok for s in streams if s.ended),
    }


async def run(
    stall: bool, clients: int, warmup_s: float, freeze_s: float, after_s: float, scale: float
) -> dict[str, Any]:
    """One configuration: a fresh stack, traffic, node-4 frozen in the middle."""
    metrics_port = free_port()
    stack = await start_stack(
        node_count=3,
        time_scale=scale,
        solo_time_scales=(scale,),
        router_env={
            "CORRAL_ROUTER__TTFT_TIMEOUT_S": "10",
            "CORRAL_ROUTER__TTFT_COLD_EXTRA_S": "60",
            "CORRAL_ROUTER__STALL__ENABLED": "true" if stall else "false",
            "CORRAL_ROUTER__METRICS_PORT": str(metrics_port),
        },
    )
    frozen = stack.node(FROZEN)
    streams: list[Stream] = []
    stop = asyncio.Event()
    try:
        tasks = [asyncio.create_task(_client(stack, i, stop, streams)) for i in range(clients)]
        await asyncio.sleep(warmup_s)
        frozen_at = time.monotonic()
        frozen.proc.signal(signal.SIGSTOP)
        await asyncio.sleep(freeze_s)
        frozen.proc.signal(signal.SIGCONT)
        await asyncio.sleep(after_s)
        stop.set()
        await asyncio.gather(*tasks)
        assert stack.http is not None
        samples = await scrape(stack.http, metrics_port)
        stalls = {
            f"{node.node_id} {phase}": value(
                samples, "corral_router_stalls_total", node=node.node_id, phase=phase
            )
            for node in stack.nodes
            for phase in ("first_chunk", "between_chunks")
        }
    finally:
        frozen.proc.signal(signal.SIGCONT)
        await stack.close()
    before = [s for s in streams if s.ended and s.ended < frozen_at]
    held = [s for s in streams if FROZEN in s.failed]
    return {
        "stall_detection": stall,
        "stalls": stalls,
        "fault_free": _pcts(before),
        "all": _pcts(streams),
        "held_by_frozen_node": _pcts(held),
    }


def _md(result: dict[str, Any]) -> str:
    lines = [
        "# Stall: streams while one node is frozen",
        "",
        f"{result['clients']} streaming clients, node-4 frozen (SIGSTOP) for {result['freeze_s']} s after "
        f"{result['warmup_s']} s, `ttft_timeout_s` 10; {result['host']}, load {result['load']}.",
        "",
        "| stall detection | streams | p50 ms | p99 ms | max ms | failed |",
        "|---|---|---:|---:|---:|---:|",
    ]
    notes = []
    for row in result["runs"]:
        name = "on" if row["stall_detection"] else "off"
        for label, key in (
            ("fault-free", "fault_free"),
            ("all", "all"),
            ("held by node-4", "held_by_frozen_node"),
        ):
            r = row[key]
            cells = [f"{label} ({r['n']})", r["p50_ms"], r["p99_ms"], r["max_ms"], r["failed"]]
            lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
        if row["stall_detection"]:
            notes.append(", ".join(f"{k} {v:.0f}" for k, v in row["stalls"].items() if v))
    if notes:
        lines += ["", "Stalls declared (node, phase): " + ("; ".join(notes) or "none") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="stall", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent streaming clients (default 16)")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of traffic before the freeze")
    parser.add_argument("--freeze", type=float, default=10.0, help="seconds node-4 stays frozen")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of traffic after the freeze")
    parser.add_argument("--time-scale", type=float, default=0.2, help="the simulator's time scale")
    parser.add_argument("--only", choices=("on", "off"), help="run one configuration")
    parser.add_argument("--out", type=Path, help="write stall.json and stall.md into this folder")
    args = parser.parse_args(argv)
    configs = [c == "on" for c in (args.only,)] if args.only else [True, False]
    runs = [
        asyncio.run(run(stall, args.clients, args.warmup, args.freeze, args.after, args.time_scale))
        for stall in configs
    ]
    result = {
        "clients": args.clients,
        "warmup_s": args.warmup,
        "freeze_s": args.freeze,
        "time_scale": args.time_scale,
        "host": f"{platform.machine()}, {os.cpu_count()} cores",
        "load": round(os.getloadavg()[0], 2),
        "runs": runs,
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "stall.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "stall.md").write_text(_md(result))
    print(_md(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
