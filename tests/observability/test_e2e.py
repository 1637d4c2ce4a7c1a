"""End to end: traces over real OTLP from separate service processes, and metrics scraped after traffic.

One stack for the module: four simulated nodes, health, cache (real Redis and PostgreSQL), router and
prewarm, each its own process exporting spans over OTLP/gRPC to a receiver inside the test and
serving Prometheus metrics on its own port.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from corral.v1 import common_pb2

from devstack.redis import RedisServer
from services.router.balancer import rendezvous_weight
from tests.helpers.polling import wait_for
from tests.helpers.procs import ServiceProcess, free_port
from tests.observability.otlp import OtlpReceiver, ReceivedSpan, tracing_env
from tests.observability.scrape import Sample, names, scrape, value
from tests.router.stack import (
    MODEL,
    Stack,
    embedder_nodes_env,
    gen_request,
    redis_cache_env,
    start_stack,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

EXACT = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_EXACT)
BYPASS = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_BYPASS)
ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


@dataclass
class Env:
    """The running stack, the span receiver and each service's metrics port."""

    stack: Stack
    otlp: OtlpReceiver
    http: aiohttp.ClientSession
    metrics_ports: dict[str, int]
    prewarm: ServiceProcess

    async def scrape(self, service: str) -> list[Sample]:
        return await scrape(self.http, self.metrics_ports[service])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Env]:
    otlp = await OtlpReceiver().start()
    ports = {name: free_port() for name in ("router", "cache", "health", "prewarm")}
    tracing = tracing_env(otlp.endpoint)

    def service_env(name: str) -> dict[str, str]:
        return {**tracing, f"CORRAL_{name.upper()}__METRICS_PORT": str(ports[name])}

    stack = await start_stack(
        cache_env={**service_env("cache"), **redis_cache_env(redis_server.url, migrated_dsn)},
        cache_env_from_nodes=embedder_nodes_env,
        health_env=service_env("health"),
        # NOTE: a generous lookup budget, so that a loaded test machine does not turn misses and hits
        # into DEGRADED lookups (the default is 15 ms).
        router_env={
            **service_env("router"),
            "CORRAL_LOGGING__LEVEL": "INFO",
            "CORRAL_ROUTER__LOOKUP_BUDGET_MS": "3000",
            # NOTE: the HTTP API's default port is fixed (11400); off here, so parallel suites cannot clash.
            "CORRAL_ROUTER__HTTP_PORT": "0",
            # NOTE: a session keeps to its home node whatever the others' estimates (the failover
            # tests make that node busy and trace the move); on a loaded machine the learned
            # estimates can put another node under the default slack's 2x and skip home.
            "CORRAL_ROUTER__BALANCER__ECT__AFFINITY_SLACK": "1000",
        },
    )
    http = aiohttp.ClientSession()
    try:
        assert stack.health is not None and stack.cache is not None and stack.router is not None
        prewarm = await ServiceProcess(
            "services.prewarm",
            env={
                **service_env("prewarm"),
                "CORRAL_PREWARM__PORT": "0",
                "CORRAL_PREWARM__HEALTH_ADDR": f"127.0.0.1:{stack.health.port}",
                "CORRAL_PREWARM__ROUTER_ADDR": f"127.0.0.1:{stack.router.port}",
                "CORRAL_PREWARM__CACHE_ADDR": f"127.0.0.1:{stack.cache.port}",
            },
        ).start()
        stack.extra.append(prewarm)
        started = Env(stack=stack, otlp=otlp, http=http, metrics_ports=ports, prewarm=prewarm)

        # NOTE: prewarm's start-up run seeds the cache through the router; the tests count their
        # own traffic, so they start once it is over.
        async def prewarm_ran() -> bool:
            samples = await started.scrape("prewarm")
            return value(samples, "corral_prewarm_runs_total", trigger="startup") >= 1

        await wait_for(prewarm_ran, timeout_s=30)
        yield started
    finally:
        await http.close()
        await stack.close()
        await otlp.stop()


def _traceparent() -> tuple[str, str, tuple[tuple[str, str]]]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent_id, (("traceparent", f"00-{trace_id}-{parent_id}-01"),)


def _one(spans: list[ReceivedSpan], service: str, kind: str, name_suffix: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.kind == kind and s.name.endswith(name_suffix)]
    assert len(found) == 1, f"expected one {service} {kind} span '*{name_suffix}', got {found}"
    return found[0]


def _has(spans: list[ReceivedSpan], service: str, kind: str, name_suffix: str, count: int = 1) -> bool:
    found = [s for s in spans if s.service == service and s.kind == kind and s.name.endswith(name_suffix)]
    return len(found) >= count


async def _traceparents(env: Env, node_id: str) -> list[str]:
    stats = await env.stack.stats(node_id)
    return [t["traceparent"] for t in stats["recent_traceparents"] if t["path"] == "/api/generate"]


def _home(session: str) -> str:
    return max((f"node-{i}" for i in range(1, 5)), key=lambda n: rendezvous_weight(f"s:{session}", n))


async def test_one_client_request_is_one_trace_across_router_cache_and_node(env: Env) -> None:
    trace_id, client_span_id, metadata = _traceparent()
    prompt = "why do llamas hum at night?"
    reply = await env.stack.stub.Generate(gen_request(prompt, cache=EXACT), timeout=10, metadata=metadata)
    assert reply.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS and reply.routing.node_id

    spans = await env.otlp.wait_for(
        lambda s: (
            _has(s, "corral-router", "server", "RouterService/Generate")
            and _has(s, "corral-router", "client", "CacheService/Lookup")
            and _has(s, "corral-cache", "server", "CacheService/Lookup")
            and _has(s, "corral-router", "client", "node attempt")
        ),
        trace_id,
    )
    router = _one(spans, "corral-router", "server", "RouterService/Generate")
    lookup_client = _one(spans, "corral-router", "client", "CacheService/Lookup")
    lookup_server = _one(spans, "corral-cache", "server", "CacheService/Lookup")
    attempt = _one(spans, "corral-router", "client", "node attempt")

    # The client's context is continued (same trace, its span is the parent), not replaced.
    assert router.parent_span_id == client_span_id
    assert lookup_client.parent_span_id == router.span_id
    assert lookup_server.parent_span_id == lookup_client.span_id
    assert attempt.parent_span_id == router.span_id
    assert {s.service for s in spans} == {"corral-router", "corral-cache"}

    # The node's HTTP request carried the trace: its traceparent names the attempt's client span.
    assert f"00-{trace_id}-{attempt.span_id}-01" in await _traceparents(env, reply.routing.node_id)

    assert attempt.attributes["corral.node.id"] == reply.routing.node_id
    assert attempt.attributes["gen_ai.request.model"] == MODEL
    assert attempt.attributes["corral.attempt.number"] == 1
    assert attempt.attributes["corral.attempt.outcome"] == "ok"
    assert attempt.attributes["gen_ai.usage.output_tokens"] == reply.stats.eval_count > 0
    assert attempt.attributes["corral.attempt.ttft_ms"] > 0
    assert router.attributes["corral.tenant"] == "default"
    assert router.attributes["corral.cache.outcome"] == "miss"
    assert lookup_server.attributes["corral.cache.outcome"] == "miss"

    # Never prompt or answer text unless capture_content is enabled.
    texts = [str(v) for s in spans for v in s.attributes.values()]
    assert not any(prompt in t or (reply.response and reply.response in t) for t in texts)

    # One request log line at the router, carrying the trace id.
    lines = [json.loads(line) for line in env.stack.router.output if line.startswith("{")]  # type: ignore[union-attr]
    request_lines = [line for line in lines if line.get("name") == "corral.request"]
    mine = [line for line in request_lines if line.get("trace_id") == trace_id]
    assert len(mine) == 1
    assert mine[0]["node"] == reply.routing.node_id and mine[0]["outcome"] == "OK"
    assert mine[0]["cache_outcome"] == "miss" and mine[0]["attempts"] == 1


async def test_a_failover_shows_both_attempts(env: Env) -> None:
    session = "trace-failover"
    home = _home(session)
    await env.stack.set_fault(home, busy_count=1)
    trace_id, _, metadata = _traceparent()
    reply = await env.stack.stub.Generate(
        gen_request("a question for a busy node", session_id=session, cache=BYPASS),
        timeout=10,
        metadata=metadata,
    )
    assert reply.routing.attempts == 2 and list(reply.routing.failed_node_ids) == [home]

    spans = await env.otlp.wait_for(
        lambda s: (
            _has(s, "corral-router", "server", "RouterService/Generate")
            and _has(s, "corral-router", "client", "node attempt", 2)
        ),
        trace_id,
    )
    router = _one(spans, "corral-router", "server", "RouterService/Generate")
    attempts = sorted(
        (s for s in spans if s.name == "node attempt"), key=lambda s: s.attributes["corral.attempt.number"]
    )
    assert [a.attributes["corral.attempt.number"] for a in attempts] == [1, 2]
    assert all(a.parent_span_id == router.span_id for a in attempts)
    first, second = attempts
    assert first.attributes["corral.node.id"] == home
    assert first.attributes["corral.attempt.outcome"] == "busy" and first.status_code == ERROR
    assert second.attributes["corral.node.id"] == reply.routing.node_id != home
    assert second.attributes["corral.failover.reason"] == "busy"
    assert second.attributes["corral.attempt.outcome"] == "ok"
    assert f"00-{trace_id}-{first.span_id}-01" in await _traceparents(env, home)
    assert f"00-{trace_id}-{second.span_id}-01" in await _traceparents(env, reply.routing.node_id)
    assert router.attributes["corral.attempts"] == 2


async def test_metrics_move_with_traffic(env: Env) -> None:
    router_before = await env.scrape("router")
    cache_before = await env.scrape("cache")

    def delta(after: list[Sample], before: list[Sample], name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # A miss, then (once stored) an exact hit.
    request = gen_request("how many llamas fit in a corral?", cache=EXACT)
    await env.stack.stub.Generate(request, timeout=10)

    async def stored() -> bool:
        samples = await env.scrape("cache")
        return delta(samples, cache_before, "corral_cache_stores_total", tier="exact") >= 1

    await wait_for(stored, timeout_s=10)
    hit = await env.stack.stub.Generate(request, timeout=10)
    assert hit.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT
    # A failover from a busy node.
    session = "metrics-failover"
    home = _home(session)
    await env.stack.set_fault(home, busy_count=1)
    moved = await env.stack.stub.Generate(gen_request("busy?", session_id=session, cache=BYPASS), timeout=10)
    assert moved.routing.attempts == 2

    router = await env.scrape("router")
    cache = await env.scrape("cache")
    ok = {"rpc": "Generate", "model": MODEL, "outcome": "OK"}
    assert delta(router, router_before, "corral_router_requests_total", **ok) == 3
    assert delta(router, router_before, "corral_router_request_duration_seconds_count", **ok) == 3
    assert delta(router, router_before, "corral_router_cache_lookups_total", outcome="miss") == 1
    assert delta(router, router_before, "corral_router_cache_lookups_total", outcome="exact_hit") == 1
    # NOTE: one request at a time: every lookup is its own call, none is batched.
    assert delta(router, router_before, "corral_router_cache_lookup_calls_total", kind="single") == 2
    assert delta(router, router_before, "corral_router_cache_lookup_calls_total", kind="batch") == 0
    assert delta(router, router_before, "corral_router_cache_batched_lookups_total") == 0
    assert delta(router, router_before, "corral_router_failovers_total", reason="busy") == 1
    assert delta(router, router_before, "corral_router_retries_total") == 1
    assert delta(router, router_before, "corral_router_node_attempts_total", node=home, outcome="busy") == 1
    assert delta(router, router_before, "corral_router_node_attempts_total", outcome="ok") == 2
    assert delta(router, router_before, "corral_router_ttft_seconds_count", model=MODEL) == 2
    assert delta(router, router_before, "corral_router_tokens_total", type="output") > 0
    assert value(router, "corral_router_score_source", source="health") == 1
    assert {s.labels["node"] for s in router if s.name == "corral_router_node_inflight"} == {
        f"node-{i}" for i in range(1, 5)
    }
    assert delta(cache, cache_before, "corral_cache_lookups_total", tier="exact", result="miss") == 1
    assert delta(cache, cache_before, "corral_cache_lookups_total", tier="exact", result="hit") == 1
    assert delta(cache, cache_before, "corral_rpc_server_requests_total", rpc_method="Lookup") == 2
    assert value(cache, "corral_cache_tier_up", tier="exact") == 1

    # Client-supplied model names never become label values (the readiness probe asked for one).
    models = {s.labels.get("model") for s in router if s.name == "corral_router_requests_total"}
    assert "other" in models and not any(m and "no-such-model" in m for m in models)

    health = await env.scrape("health")
    for i in range(1, 5):
        # One state per node (a node that just answered 503 may be "degraded" for a while).
        assert value(health, "corral_health_node_state", node=f"node-{i}") == 1
    assert value(health, "corral_health_node_state", state="healthy") >= 2
    assert value(health, "corral_health_probes_total") > 0
    assert value(health, "corral_health_node_expected_completion_seconds", node="node-1", model=MODEL) > 0
    assert "corral_health_ejections_total" in names(health)

    prewarm = await env.scrape("prewarm")
    assert value(prewarm, "corral_prewarm_runs_total", trigger="startup") == 1
    assert value(prewarm, "corral_prewarm_run_duration_seconds_count", trigger="startup") >= 1
    assert "process_cpu_seconds_total" in names(prewarm)
