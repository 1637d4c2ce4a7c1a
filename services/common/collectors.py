"""Scrape-time Prometheus collectors: each service's live state (counters it keeps, scores, in-flight).

They read the state the services already keep (the cache's CacheStats, health's fleet views, the
router's score board and retry budget), so the hot paths pay nothing for these metrics. Collectors
run on the service's event loop (services.common.metrics serves /metrics there).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common import metrics

if TYPE_CHECKING:
    from services.cache.engine import CacheEngine
    from services.health.engine import HealthEngine
    from services.prewarm.runs import Run, RunManager
    from services.router.core import RouterCore

_registered: dict[str, Collector] = {}


def _install(kind: str, collector: Collector) -> None:
    # NOTE: one collector per kind and process; a second in-process server (tests) replaces the first.
    old = _registered.pop(kind, None)
    if old is not None:
        metrics.REGISTRY.unregister(old)
    metrics.register(collector)
    _registered[kind] = collector


class CacheCollector(Collector):
    """Hits, misses, stores, guard rejections and tier health of the cache engine."""

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine
        s = engine.stats
        lookups = CounterMetricFamily(
            "corral_cache_lookups",
            "Tier lookups by tier and result (hit or miss).",
            labels=["tier", "result"],
        )
        stores = CounterMetricFamily("corral_cache_stores", "Entries written, by tier.", labels=["tier"])
        for tier, counters in (("exact", s.exact), ("semantic", s.semantic)):
            lookups.add_metric([tier, "hit"], counters.hits)
            lookups.add_metric([tier, "miss"], counters.misses)
            stores.add_metric([tier], counters.stores)
        yield lookups
        yield stores
        guard = CounterMetricFamily(
            "corral_cache_guard_rejections",
            "Semantic candidates refused by the near-miss guard, by reason (number, negation, entity, ...).",
            labels=["reason"],
        )
        for reason, count in sorted(s.guard_reasons.items()):
            guard.add_metric([reason], count)
        yield guard
        yield CounterMetricFamily(
            "corral_cache_coalesced_lookups",
            "Lookups answered by an identical request in flight.",
            s.coalesced,
        )
        yield CounterMetricFamily(
            "corral_cache_degraded_lookups",
            "Lookups that missed because a store was down or slow.",
            s.degraded_lookups,
        )
        yield CounterMetricFamily(
            "corral_cache_bypassed_lookups", "Lookups whose policy skipped every tier.", s.bypassed
        )
        up = GaugeMetricFamily(
            "corral_cache_tier_up", "1 when the tier's store answers, 0 when degraded.", labels=["tier"]
        )
        up.add_metric(["exact"], 0.0 if engine.exact_degraded else 1.0)
        up.add_metric(["semantic"], 0.0 if engine.semantic_degraded else 1.0)
        yield up


class HealthCollector(Collector):
    """Node states, scores (expected completion time per model), in-flight, error rates and ejections."""

    def __init__(self, engine: HealthEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        from services.health.scoring import NodeStateKind

        engine = self._engine
        views = engine.fleet.views()
        state = GaugeMetricFamily(
            "corral_health_node_state",
            "1 for the node's current state, 0 for the others.",
            labels=["node", "state"],
        )
        expected = GaugeMetricFamily(
            "corral_health_node_expected_completion_seconds",
            "The node's score for a model: expected time until a new request completes (lower is better).",
            labels=["node", "model"],
        )
        inflight = GaugeMetricFamily(
            "corral_health_node_inflight", "Requests in flight as routers report them.", labels=["node"]
        )
        errors = GaugeMetricFamily(
            "corral_health_node_error_ratio", "Share of node errors among recent outcomes.", labels=["node"]
        )
        ejections = CounterMetricFamily(
            "corral_health_ejections", "Outlier ejections since the node was registered.", labels=["node"]
        )
        for view in views:
            for kind in NodeStateKind:
                state.add_metric([view.node_id, kind.value], 1.0 if view.state is kind else 0.0)
            for model in view.models:
                if model.installed:
                    expected.add_metric([view.node_id, model.model], model.expected_ms / 1000)
            inflight.add_metric([view.node_id], view.inflight)
            errors.add_metric([view.node_id], view.error_rate)
            ejections.add_metric([view.node_id], view.ejection_count)
        yield from (state, expected, inflight, errors, ejections)
        yield CounterMetricFamily("corral_health_probes", "Active probes done.", engine.probes_done)
        yield GaugeMetricFamily(
            "corral_health_score_version", "Version of the published scores.", engine.fleet.version
        )


class RouterCollector(Collector):
    """The router's in-flight requests per node, score feed state, retry budget and cache store queue."""

    def __init__(self, core: RouterCore) -> None:
        self._core = core

    def collect(self) -> Iterator[Metric]:
        core = self._core
        board = core.board
        yield GaugeMetricFamily(
            "corral_router_requests_in_progress", "Client requests in progress.", core.limit.in_progress
        )
        yield CounterMetricFamily(
            "corral_router_retries",
            "Failovers and continuations the retry budget allowed.",
            core.budget.retries_allowed,
        )
        yield CounterMetricFamily(
            "corral_router_retry_budget_exhausted",
            "Retries refused because the retry budget was spent (the request failed instead).",
            core.budget.retries_refused,
        )
        inflight = GaugeMetricFamily(
            "corral_router_node_inflight", "This router's requests in flight per node.", labels=["node"]
        )
        routable = GaugeMetricFamily(
            "corral_router_node_routable", "1 when health lets the node take traffic.", labels=["node"]
        )
        for node_id, node in sorted(board.nodes.items()):
            inflight.add_metric([node_id], board.local(node_id).inflight)
            routable.add_metric([node_id], 1.0 if node.routable else 0.0)
        yield inflight
        yield routable
        source = GaugeMetricFamily(
            "corral_router_score_source",
            "Where the node view comes from (health, static or none).",
            labels=["source"],
        )
        for name in ("health", "static", "none"):
            source.add_metric([name], 1.0 if board.source == name else 0.0)
        yield source
        yield GaugeMetricFamily(
            "corral_router_score_feed_connected",
            "1 while health's score stream is connected.",
            1.0 if board.connected else 0.0,
        )
        cache = core.cache
        if cache is not None:
            stores = CounterMetricFamily(
                "corral_router_cache_stores", "Answers handed to the cache, by result.", labels=["result"]
            )
            stores.add_metric(["sent"], cache.stores_sent)
            stores.add_metric(["failed"], cache.stores_failed)
            stores.add_metric(["dropped"], cache.stores_dropped)
            yield stores
            calls = CounterMetricFamily(
                "corral_router_cache_lookup_calls",
                "Lookup RPCs sent to the cache: single Lookup or LookupBatch calls.",
                labels=["kind"],
            )
            calls.add_metric(["single"], cache.lookup_calls_sent - cache.lookup_batches)
            calls.add_metric(["batch"], cache.lookup_batches)
            yield calls
            yield CounterMetricFamily(
                "corral_router_cache_batched_lookups",
                "Lookups that went to the cache inside a LookupBatch call.",
                cache.lookups_batched,
            )


class PrewarmCollector(Collector):
    """Whether a prewarm run is in progress."""

    def __init__(self, manager: RunManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "corral_prewarm_run_in_progress",
            "1 while a prewarm run is in progress.",
            1.0 if self._manager.current is not None else 0.0,
        )


def watch_cache(engine: CacheEngine) -> None:
    """Exports the cache engine's counters and tier health."""
    _install("cache", CacheCollector(engine))


def watch_health(engine: HealthEngine) -> None:
    """Exports health's node states and scores."""
    _install("health", HealthCollector(engine))


def watch_router(core: RouterCore) -> None:
    """Exports the router's state (in-flight, feed, retry budget)."""
    _install("router", RouterCollector(core))


def watch_prewarm(manager: RunManager) -> None:
    """Exports prewarm's run state and counts every finished run by trigger and state."""
    _install("prewarm", PrewarmCollector(manager))
    manager.on_finished.append(_run_finished)


def _run_finished(run: Run) -> None:
    s = run.summary
    m = metrics.prewarm_metrics()
    trigger = s.trigger.name.lower()
    m.runs.labels(trigger, s.state.name.lower()).inc()
    if s.finished_at_s is not None:
        m.run_duration.labels(trigger).observe(max(0.0, s.finished_at_s - s.started_at_s))
    m.items.labels("ok").inc(s.succeeded)
    m.items.labels("skipped").inc(s.skipped)
    m.items.labels("failed").inc(s.failed)
