"""`make demo`: start the local stack, run a scripted workload, print a report, stop everything.

The workload shows, in order: prewarm loading the models on every node, score-driven routing across
the fleet, the exact and semantic cache (and the guard refusing a near-miss), failover when a node
dies (unary and mid-stream), session affinity reusing a node's prompt cache, and what agents rely on:
a tool call and a thinking model's reasoning passed through the router.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from corral.v1 import (
    common_pb2,
    health_service_pb2,
    health_service_pb2_grpc,
    prewarm_service_pb2,
    prewarm_service_pb2_grpc,
    router_service_pb2,
    router_service_pb2_grpc,
)
from rich.console import Console
from rich.table import Table

from devstack.config import make_temp_state_dir
from scripts import stack

MODEL = "llama3.2:1b"
THINKER = "qwen3:0.6b"
console = Console()
Check = tuple[str, bool, str]


def _admin_ports(state: Path) -> dict[str, int]:
    text = (state / "logs" / "sim.log").read_text()
    ports = [int(p) for p in re.findall(r"listening on 127\.0\.0\.1:\d+ admin (\d+)", text)]
    return {f"node-{i + 1}": port for i, port in enumerate(ports)}


async def _fault(http: aiohttp.ClientSession, admin_port: int, method: str, body: Any = None) -> None:
    async with http.request(method, f"http://127.0.0.1:{admin_port}/_sim/faults", json=body) as resp:
        resp.raise_for_status()


async def _wait(predicate: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.1)
    return False


def _gen(
    prompt: str, temperature: float | None = None, session: str = ""
) -> router_service_pb2.GenerateRequest:
    options = common_pb2.ModelOptions(num_predict=24)
    if temperature is not None:
        options.temperature = temperature
    return router_service_pb2.GenerateRequest(
        spec=common_pb2.GenerateSpec(model=MODEL, prompt=prompt, options=options), session_id=session
    )


async def _prewarm(channel: grpc.aio.Channel) -> Check:
    stub = prewarm_service_pb2_grpc.PrewarmServiceStub(channel)
    ok = failed = 0
    request = prewarm_service_pb2.StartRunRequest(
        steps=[prewarm_service_pb2.PREWARM_STEP_WARM_MODELS], join_if_running=True
    )
    async for reply in stub.StartRun(request, timeout=120):
        event = reply.event
        if event.outcome in (prewarm_service_pb2.STEP_OUTCOME_OK, prewarm_service_pb2.STEP_OUTCOME_SKIPPED):
            ok += 1
        elif event.outcome == prewarm_service_pb2.STEP_OUTCOME_FAILED:
            failed += 1
    return ("prewarm: models warm on every node", failed == 0 and ok > 0, f"{ok} loads done or already warm")


async def _routing(router: router_service_pb2_grpc.RouterServiceStub) -> tuple[Check, Counter[str]]:
    replies = await asyncio.gather(
        *(
            router.Generate(_gen(f"Explain maintenance step {i} of pump model X{i}"), timeout=60)
            for i in range(48)
        )
    )
    per_node = Counter(r.routing.node_id for r in replies)
    detail = ", ".join(f"{node}: {count}" for node, count in sorted(per_node.items()))
    return ("routing: 48 concurrent requests spread over the fleet", len(per_node) >= 3, detail), per_node


async def _cache(router: router_service_pb2_grpc.RouterServiceStub) -> list[Check]:
    question = "How do I reset the pressure sensor on the HX-200 pump?"
    outcome = common_pb2.CacheOutcome.Name
    first = await router.Generate(_gen(question, temperature=0), timeout=60)
    await asyncio.sleep(0.3)  # NOTE: answers are stored off the hot path.
    started = time.perf_counter()
    again = await router.Generate(_gen(question, temperature=0), timeout=60)
    hit_ms = (time.perf_counter() - started) * 1000
    exact = (
        again.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT and again.response == first.response
    )
    paraphrase = await router.Generate(
        _gen("how do I reset the pressure sensor on the HX-200 pump", 0), timeout=60
    )
    await router.Generate(_gen("How do I enable TLS on the gateway?", temperature=0), timeout=60)
    await asyncio.sleep(0.3)
    near_miss = await router.Generate(_gen("How do I disable TLS on the gateway?", temperature=0), timeout=60)
    return [
        (
            "cache: repeated question is an exact hit",
            exact,
            f"{outcome(again.routing.cache_outcome)} in {hit_ms:.1f} ms, no node contacted",
        ),
        (
            "cache: paraphrase served by the semantic tier or exact tier",
            paraphrase.routing.cache_outcome
            in (common_pb2.CACHE_OUTCOME_SEMANTIC_HIT, common_pb2.CACHE_OUTCOME_EXACT_HIT),
            outcome(paraphrase.routing.cache_outcome),
        ),
        (
            "cache: near-miss (enable vs disable) is not served from the cache",
            near_miss.routing.cache_outcome
            not in (common_pb2.CACHE_OUTCOME_SEMANTIC_HIT, common_pb2.CACHE_OUTCOME_EXACT_HIT),
            outcome(near_miss.routing.cache_outcome),
        ),
    ]


async def _failover(
    router: router_service_pb2_grpc.RouterServiceStub, http: aiohttp.ClientSession, admin: dict[str, int]
) -> list[Check]:
    await _fault(http, admin["node-2"], "POST", {"refuse": True})
    replies = await asyncio.gather(
        *(router.Generate(_gen(f"Diagnose error code E{i}"), timeout=60) for i in range(24)),
        return_exceptions=True,
    )
    errors = sum(isinstance(r, BaseException) for r in replies)
    served = Counter(r.routing.node_id for r in replies if not isinstance(r, BaseException))
    await _fault(http, admin["node-2"], "DELETE")
    checks: list[Check] = [
        (
            "failover: node-2 refuses connections, 24 requests",
            errors == 0 and "node-2" not in served,
            f"{errors} client errors; served by {', '.join(sorted(served))}",
        )
    ]
    # NOTE: three nodes cut their streams after 8 tokens, one stays healthy: a stream that starts on a
    # cutting node must be continued elsewhere (possibly more than once) and still arrive whole.
    cutting = sorted(admin)[:3]
    for node in cutting:
        await _fault(http, admin[node], "POST", {"cut": 8})
    status, resumed, words = "not started", False, 0
    for attempt in range(4):
        request = router_service_pb2.GenerateStreamRequest(
            spec=common_pb2.GenerateSpec(
                model=MODEL,
                prompt=f"Write the full checklist, part {attempt}",
                options=common_pb2.ModelOptions(num_predict=40),
            ),
            cache=common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_BYPASS),
        )
        text: list[str] = []
        try:
            async for chunk in router.GenerateStream(request, timeout=60):
                text.append(chunk.response)
                if chunk.done:
                    resumed = chunk.routing.resumed
            status = "completed"
        except grpc.aio.AioRpcError as exc:
            status = f"ended with {exc.code().name}"
        words = len("".join(text).split())
        if resumed or status != "completed":
            break
    for node in cutting:
        await _fault(http, admin[node], "DELETE")
    checks.append(
        (
            "failover: a node cuts the stream after 8 tokens",
            status == "completed" and resumed,
            f"stream {status}, resumed={resumed}, {words} words",
        )
    )
    return checks


async def _fleet_healthy(channel: grpc.aio.Channel, timeout_s: float = 15.0) -> bool:
    """Waits until health reports every node healthy again (ejections after the failover step end)."""
    stub = health_service_pb2_grpc.HealthServiceStub(channel)

    async def healthy() -> bool:
        reply = await stub.ListNodes(health_service_pb2.ListNodesRequest(), timeout=5)
        return all(node.state == health_service_pb2.NODE_STATE_HEALTHY for node in reply.nodes)

    return await _wait(healthy, timeout_s)


async def _affinity(router: router_service_pb2_grpc.RouterServiceStub) -> Check:
    messages: list[common_pb2.ChatMessage] = [
        common_pb2.ChatMessage(role="system", content="You are the technical service assistant for HX pumps.")
    ]
    nodes: list[str] = []
    evals: list[int] = []
    for turn in range(4):
        messages.append(
            common_pb2.ChatMessage(role="user", content=f"Question {turn}: what does step {turn} do?")
        )
        reply = await router.Chat(
            router_service_pb2.ChatRequest(
                spec=common_pb2.ChatSpec(
                    model=MODEL, messages=messages, options=common_pb2.ModelOptions(num_predict=24)
                ),
                session_id="demo-session",
                cache=common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_BYPASS),
            ),
            timeout=60,
        )
        messages.append(reply.message)
        nodes.append(reply.routing.node_id)
        evals.append(reply.stats.prompt_eval_count)
    same = len(set(nodes)) == 1
    return (
        "affinity: a 4-turn chat stays on one node",
        same,
        f"nodes {nodes}, prompt tokens evaluated {evals}",
    )


async def _agents(router: router_service_pb2_grpc.RouterServiceStub) -> list[Check]:
    tool = common_pb2.Tool(type="function")
    tool.function.name = "get_weather"
    tool.function.description = "Current weather of a city"
    tool.function.parameters.update(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    )
    question = common_pb2.ChatMessage(role="user", content="What is the weather in Tokyo?")
    spec = common_pb2.ChatSpec(model=MODEL, messages=[question], tools=[tool])
    reply = await router.Chat(router_service_pb2.ChatRequest(spec=spec), timeout=60)
    calls = list(reply.message.tool_calls)
    call = f"{calls[0].name}({dict(calls[0].arguments)})" if calls else "no tool call"
    thinking = common_pb2.ChatSpec(
        model=THINKER, messages=[common_pb2.ChatMessage(role="user", content="Why is the sky blue?")]
    )
    thought = await router.Chat(router_service_pb2.ChatRequest(spec=thinking), timeout=60)
    words = len(thought.message.thinking.split())
    return [
        (
            "agents: a tool call passes through the router",
            bool(calls) and calls[0].name == "get_weather",
            call,
        ),
        (
            f"agents: {THINKER} thinks before it answers",
            words > 0 and bool(thought.message.content),
            f"{words} words of thinking, then {len(thought.message.content.split())} of answer",
        ),
    ]


async def _after(first: Awaitable[Any], then: Awaitable[Check]) -> Check:
    await first
    return await then


async def _fleet(channel: grpc.aio.Channel) -> Table:
    reply = await health_service_pb2_grpc.HealthServiceStub(channel).ListNodes(
        health_service_pb2.ListNodesRequest(), timeout=5
    )
    table = Table(title="Fleet (from the health service)")
    for column in ("node", "state", "loaded models", "error rate", "expected ms"):
        table.add_column(column)
    for node in reply.nodes:
        loaded = [m.model for m in node.models if m.loaded]
        expected = min((m.expected_ms for m in node.models if m.model == MODEL), default=0.0)
        table.add_row(
            node.node_id,
            health_service_pb2.NodeState.Name(node.state).removeprefix("NODE_STATE_"),
            ", ".join(loaded) or "-",
            f"{node.error_rate:.2f}",
            f"{expected:.0f}",
        )
    return table


async def run(state: Path) -> bool:
    """Starts the stack, runs the workload and prints the report; True when every check passed."""
    ports = stack.Ports.free()
    console.print(
        "[bold]Starting[/] Redis, PostgreSQL+pgvector, 4 simulated Ollama nodes and the 4 services…"
    )
    started = time.monotonic()
    process_table = await asyncio.to_thread(
        stack.up,
        state,
        ports,
        sim_args=["--profile", "test"],
        overrides={
            "health": {
                "probe_interval_s": 0.5,
                "probe_timeout_s": 0.3,
                # NOTE: short ejections so the demo's fault steps do not linger into the next step.
                "outlier": {"base_ejection_time_s": 1.0, "max_ejection_time_s": 3.0},
            },
            "logging": {"level": "WARNING"},
        },
    )
    console.print(f"Stack up in {time.monotonic() - started:.1f} s (logs in {state / 'logs'})\n")
    # NOTE: a part whose picked port turned out taken at start-up was moved; the table has the final ones.
    ports = stack.Ports.from_table(process_table)
    checks: list[Check] = []
    admin = _admin_ports(state)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{ports.router}") as router_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{ports.health}") as health_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{ports.prewarm}") as prewarm_channel,
        aiohttp.ClientSession() as http,
    ):
        router = router_service_pb2_grpc.RouterServiceStub(router_channel)
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("prewarm", lambda: _prewarm(prewarm_channel)),
            ("routing", lambda: _routing(router)),
            ("cache", lambda: _cache(router)),
            ("failover", lambda: _failover(router, http, admin)),
            ("affinity", lambda: _after(_fleet_healthy(health_channel), _affinity(router))),
            ("agents", lambda: _agents(router)),
        ]
        for name, step in steps:
            try:
                result = await step()
            except Exception as exc:
                checks.append((f"{name}: step failed", False, f"{type(exc).__name__}: {exc}"[:200]))
                continue
            if name == "routing":
                result = result[0]
            checks.extend(result if isinstance(result, list) else [result])
        console.print(await _fleet(health_channel))
    table = Table(title="Corral demo report")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for title, ok, detail in checks:
        table.add_row(title, "[green]PASS[/]" if ok else "[red]FAIL[/]", detail)
    console.print(table)
    return all(ok for _, ok, _ in checks)


def main() -> int:
    """Entry point of `make demo`."""
    state = make_temp_state_dir("corral-demo-")
    ok = False
    try:
        ok = asyncio.run(run(state))
    except KeyboardInterrupt:
        console.print("interrupted")
    except Exception as exc:
        console.print(f"[red]demo failed:[/] {exc}")
    finally:
        console.print("Stopping everything…")
        stack.down(state)
        if "--keep-logs" not in sys.argv:
            shutil.rmtree(state, ignore_errors=True)
    console.print("[bold green]All checks passed.[/]" if ok else "[bold red]Some checks failed.[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
