"""Prometheus metrics: the process registry, its HTTP endpoint, bounded labels, per-service metric sets.

Names follow Prometheus conventions (base units: seconds, `_total` counters, snake_case labels) and
the OpenTelemetry semantic conventions where one applies (`rpc_*`, `gen_ai` token types). Every
label takes values from a bounded set: RPC methods, gRPC status names, outcome kinds, node ids
and model names of the fleet (capped by `BoundedLabel`); never a prompt, key or tenant id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

OTHER = "other"

# NOTE: one registry per process (each service is its own process); the default process, platform
# and GC collectors ride along so that CPU, memory and GC pauses sit next to the service's own.
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# Latency buckets: sub-millisecond cache hits up to minute-long generations.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


class BoundedLabel:
    """Keeps a label's value set bounded: values outside `allowed` or beyond `cap` distinct become "other".

    Args:
        cap: Most distinct values ever exported for the label.
        allowed: Returns the values currently legitimate (e.g. the fleet's models); None accepts any
            value up to the cap.
    """

    def __init__(self, cap: int, allowed: Callable[[], Iterable[str] | None] | None = None) -> None:
        self._cap = cap
        self._allowed = allowed
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if not value:
            return "none"
        if self._allowed is not None:
            allowed = self._allowed()
            if allowed is not None and value not in allowed:
                return OTHER
        if len(self._seen) >= self._cap:
            return OTHER
        self._seen.add(value)
        return value


def children(metric: Any) -> Callable[..., Any]:
    """A memo of `metric.labels(...)`: the labelled child per label tuple (label sets are bounded).

    NOTE: prometheus_client's `labels()` validates and locks on every call (about 10 us here);
    the hot paths look their children up in a dict instead.
    """
    found: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        hit = found.get(values)
        if hit is None:
            hit = found[values] = metric.labels(*values)
        return hit

    return child


# --- every service: the gRPC server side (fed by the shared interceptor) -----------------------------
RPC_REQUESTS = Counter(
    "corral_rpc_server_requests",
    "gRPC calls handled, by service, method and gRPC status (OTel rpc.server semantic conventions).",
    ["rpc_service", "rpc_method", "rpc_grpc_status_code"],
    registry=REGISTRY,
)
RPC_DURATION = Histogram(
    "corral_rpc_server_duration_seconds",
    "Duration of gRPC calls handled, to the last message (streams: the whole stream).",
    ["rpc_service", "rpc_method"],
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)


_rpc_requests = children(RPC_REQUESTS)
_rpc_duration = children(RPC_DURATION)


def observe_rpc(full_method: str, status: str, duration_s: float) -> None:
    """Counts one handled RPC (`/package.Service/Method`) with its status name and duration."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    _rpc_requests(service, method, status).inc()
    _rpc_duration(service, method).observe(duration_s)


# --- the metrics endpoint ------------------------------------------------------------------------------
_lock = threading.Lock()


async def _serve_metrics(request: web.Request) -> web.Response:
    # NOTE: collectors read live service state, so they run here on the service's event loop
    # (never from a scrape thread racing the loop's mutations).
    with _lock:
        body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_metrics_server(host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serves `GET /metrics` (Prometheus text format) on host:port; returns the runner and bound port."""
    app = web.Application()
    app.router.add_get("/metrics", _serve_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    bound = int(addresses[0][1]) if addresses else port
    return runner, bound


def register(collector: Collector) -> None:
    """Adds a collector that reads service state at scrape time."""
    REGISTRY.register(collector)


# --- per-service metric sets (created on first use, so each process exports only its own) -------------
class RouterMetrics:
    """The router's metrics that are observed as they happen (state is read by its collector)."""

    def __init__(self) -> None:
        r = REGISTRY
        self.requests = Counter(
            "corral_router_requests",
            "Client requests (gRPC and HTTP API) by RPC, model and outcome (gRPC status name).",
            ["rpc", "model", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "corral_router_request_duration_seconds",
            "Client request duration, to the last token.",
            ["rpc", "model", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.cache_lookups = Counter(
            "corral_router_cache_lookups",
            "Cache lookups as the router saw them, by outcome (exact_hit, semantic_hit, miss, ...).",
            ["outcome"],
            registry=r,
        )
        self.cache_lookup_duration = Histogram(
            "corral_router_cache_lookup_duration_seconds",
            "Cache lookup duration as the router saw it (bounded by the lookup budget).",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.node_attempts = Counter(
            "corral_router_node_attempts",
            "Requests sent to nodes (one per attempt), by node, model and outcome (ok or the failure kind).",
            ["node", "model", "outcome"],
            registry=r,
        )
        self.node_attempt_duration = Histogram(
            "corral_router_node_attempt_duration_seconds",
            "Duration of one node attempt, by node, model and outcome.",
            ["node", "model", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.ttft = Histogram(
            "corral_router_ttft_seconds",
            "Time from sending a request to a node to its first chunk (successful attempts).",
            ["node", "model"],
            buckets=TTFT_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "corral_router_tokens",
            "Tokens processed by the nodes, by node, model and type (input: prompt, output: generated).",
            ["node", "model", "type"],
            registry=r,
        )
        self.failovers = Counter(
            "corral_router_failovers",
            "Requests moved to another node, by the failed attempt's kind (stream_cut: continued).",
            ["reason"],
            registry=r,
        )


class PrewarmMetrics:
    """The prewarm service's run metrics."""

    def __init__(self) -> None:
        self.runs = Counter(
            "corral_prewarm_runs",
            "Finished prewarm runs by trigger and final state.",
            ["trigger", "state"],
            registry=REGISTRY,
        )
        self.run_duration = Histogram(
            "corral_prewarm_run_duration_seconds",
            "Duration of finished prewarm runs by trigger.",
            ["trigger"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=REGISTRY,
        )
        self.items = Counter(
            "corral_prewarm_items",
            "Items of finished runs (a model warmed on a node, a query seeded, ...) by outcome.",
            ["outcome"],
            registry=REGISTRY,
        )


@cache
def router_metrics() -> RouterMetrics:
    """The router's metric set (registered on first use)."""
    return RouterMetrics()


@cache
def prewarm_metrics() -> PrewarmMetrics:
    """The prewarm service's metric set (registered on first use)."""
    return PrewarmMetrics()
