"""Prewarm's Prometheus metrics: a scrape-time collector of the run in progress, and finished-run counts.

The collector reads the run manager's state; the counts are taken once per run when it finishes
(RunManager.on_finished), so the run itself pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common import collectors, metrics

if TYPE_CHECKING:
    from services.prewarm.leader import Leadership
    from services.prewarm.runs import Run, RunManager


class PrewarmCollector(Collector):
    """Whether a prewarm run is in progress, and whether this replica is the leader."""

    def __init__(self, manager: RunManager, leadership: Leadership | None = None) -> None:
        self._manager = manager
        self._leadership = leadership

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "corral_prewarm_run_in_progress",
            "1 while a prewarm run is in progress.",
            1.0 if self._manager.current is not None else 0.0,
        )
        if self._leadership is not None:
            yield GaugeMetricFamily(
                "corral_prewarm_leader",
                "1 while this replica is the prewarm leader (it acts), 0 while it stands by.",
                1.0 if self._leadership.holds() else 0.0,
            )


def watch_prewarm(manager: RunManager, leadership: Leadership | None = None) -> None:
    """Exports prewarm's run state and leadership, and counts every finished run by trigger and state."""
    collectors.install("prewarm", PrewarmCollector(manager, leadership))
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
