"""The router's scrape-time Prometheus collector: in-flight per node, score feed, retry budget, cache calls.

It reads the state the core already keeps (the score board, the retry budget, the cache client's
counters), so requests pay nothing for these metrics; `services.router.telemetry.install` registers
it through services.common.collectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common import collectors

if TYPE_CHECKING:
    from services.router.core import RouterCore
    from services.router.near_cache import NearCache


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
        admission = core.admission
        yield GaugeMetricFamily(
            "corral_router_admission_queue_depth",
            "Requests waiting in the admission queue for a free node slot.",
            admission.depth,
        )
        yield CounterMetricFamily(
            "corral_router_admission_waits",
            "Requests that found every node full and waited in the admission queue.",
            admission.waits,
        )
        yield CounterMetricFamily(
            "corral_router_admission_wait_seconds",
            "Time requests spent in the admission queue before a slot was theirs.",
            admission.wait_s_total,
        )
        refusals = CounterMetricFamily(
            "corral_router_admission_refusals",
            "Requests the admission queue refused: queue_full, displaced, queue_timeout, deadline.",
            labels=["reason"],
        )
        for reason, count in sorted(admission.refusals.items()):
            refusals.add_metric([reason], count)
        yield refusals
        stall = core.forwarder.stall
        if stall is not None:
            stalls = CounterMetricFamily(
                "corral_router_stalls",
                "Attempts left because the node sent nothing for longer than its learned pace allows, "
                "by node and phase (first_chunk, between_chunks).",
                labels=["node", "phase"],
            )
            for (node_id, phase), count in sorted(stall.stalls.items()):
                stalls.add_metric([node_id, phase], count)
            yield stalls
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
            budgets = GaugeMetricFamily(
                "corral_router_cache_lookup_budget_seconds",
                "The time a lookup may take now, per configured budget (it follows the cache's reply "
                "times up to lookup_budget_max_ms).",
                labels=["configured_ms"],
            )
            for base, current in sorted(cache.lookup_budgets().items()):
                budgets.add_metric([f"{base * 1000:g}"], current)
            yield budgets
        near = core.near
        if near is not None:
            yield from _near_cache(near)


def _near_cache(near: NearCache) -> Iterator[Metric]:
    """The near cache's counters and size (services/router/near_cache.py)."""
    for name, doc, value in (
        ("hits", "Requests answered from the near cache.", near.hits),
        ("misses", "Near-cache lookups that found no live entry (the cache was asked).", near.misses),
        (
            "evictions",
            "Entries dropped to stay within near_cache.max_bytes (least recently used).",
            near.evictions,
        ),
        ("expirations", "Entries found past their TTL and dropped.", near.expirations),
        (
            "invalidated",
            "Entries dropped because the cache announced a store or an invalidation.",
            near.invalidations,
        ),
        ("clears", "Times the near cache was emptied because its event subscription was lost.", near.clears),
    ):
        yield CounterMetricFamily(f"corral_router_near_cache_{name}", doc, value)
    yield GaugeMetricFamily("corral_router_near_cache_bytes", "Bytes the near cache holds.", near.bytes)
    yield GaugeMetricFamily("corral_router_near_cache_entries", "Entries the near cache holds.", len(near))
    yield GaugeMetricFamily(
        "corral_router_near_cache_live",
        "1 while the near cache is subscribed to the cache's events (and so may serve).",
        1.0 if near.live else 0.0,
    )


def watch_router(core: RouterCore) -> None:
    """Exports the router's state (in-flight, feed, retry budget)."""
    collectors.install("router", RouterCollector(core))
