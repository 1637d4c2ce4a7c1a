"""The cache's scrape-time Prometheus collector: hits, misses, stores, guard rejections, tier health.

It reads the counters the engine already keeps (CacheStats) and its breakers, so lookups pay nothing
for these metrics; services.common.collectors registers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.cache.keys import SKIP_CATEGORIES
from services.common import collectors

if TYPE_CHECKING:
    from services.cache.engine import CacheEngine


class CacheCollector(Collector):
    """Hits, misses, stores, guard rejections and tier health of the cache engine."""

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine
        s = engine.stats
        lookups = CounterMetricFamily(
            "corral_cache_lookups",
            "Tier lookups by tier and result (hit or miss); the embeddings tier counts texts.",
            labels=["tier", "result"],
        )
        stores = CounterMetricFamily("corral_cache_stores", "Entries written, by tier.", labels=["tier"])
        for tier, counters in (("exact", s.exact), ("semantic", s.semantic), ("embeddings", s.embeddings)):
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
        skips = CounterMetricFamily(
            "corral_cache_semantic_skips",
            "Lookups that skipped the semantic tier (or every tier), by reason: mode, policy_never, "
            "temperature, no_question, disabled.",
            labels=["reason"],
        )
        for category in SKIP_CATEGORIES:
            skips.add_metric([category], s.semantic_skips[category])
        yield skips
        yield CounterMetricFamily(
            "corral_cache_shared_vectors",
            "Semantic lookups and stores whose question vector came from the embedding cache.",
            s.shared_vectors,
        )
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


def watch_cache(engine: CacheEngine) -> None:
    """Exports the cache engine's counters and tier health."""
    collectors.install("cache", CacheCollector(engine))
