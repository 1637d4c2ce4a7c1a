"""Health's scrape-time Prometheus collector: node states, scores, in-flight, error rates, ejections.

It reads the fleet views the engine already keeps, so probes and outcome reports pay nothing for
these metrics; services.common.collectors registers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common import collectors
from services.health.scoring import NodeStateKind

if TYPE_CHECKING:
    from services.health.engine import HealthEngine


class HealthCollector(Collector):
    """Node states, scores (expected completion time per model), in-flight, error rates and ejections."""

    def __init__(self, engine: HealthEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
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
        if engine.share is not None:
            shared = CounterMetricFamily(
                "corral_health_shared_outcomes",
                "Router outcomes shared with the other replicas (published), folded in from them "
                "(received), or dropped while PostgreSQL was away (dropped).",
                labels=["direction"],
            )
            shared.add_metric(["published"], engine.share.published)
            shared.add_metric(["received"], engine.share.received)
            shared.add_metric(["dropped"], engine.share.dropped)
            yield shared


def watch_health(engine: HealthEngine) -> None:
    """Exports health's node states and scores."""
    collectors.install("health", HealthCollector(engine))
