"""The fleet: registry, passive stats and ejections combined into versioned node views."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.health.config import HealthConfig
from services.health.outlier import EjectionState, OutlierDetector
from services.health.registry import NodeEntry, ProbeResult, Registry, UnknownNode
from services.health.scoring import (
    ModelInputs,
    ModelView,
    NodeView,
    expected_ms,
    materially_differs,
    node_state,
)
from services.health.stats import ModelStats, NodeStats, Outcome, OutcomeWindow

# NOTE: stands in for a model without outcomes yet; never written to.
_NO_SAMPLES = ModelStats(alpha=1.0, window_size=1, window_s=1.0)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Changes:
    """What changed since the previous published version."""

    version: int
    nodes: tuple[NodeView, ...]
    removed_node_ids: tuple[str, ...]


class Fleet:
    """Every node's state. Not thread-safe: used from one event loop.

    Every mutation calls `on_change` so that a publisher can collect the changes; `collect_changes`
    returns only the nodes whose routing-relevant view moved since it was last published.
    """

    def __init__(self, cfg: HealthConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self._clock = clock
        self.registry = Registry()
        self.detector = OutlierDetector(cfg.outlier)
        self._stats: dict[str, NodeStats] = {}
        self._ejections: dict[str, EjectionState] = {}
        self._published: dict[str, NodeView] = {}
        self._removed: list[str] = []
        self.version = 0
        self.on_change: Callable[[], None] = lambda: None

    # ---- registry -------------------------------------------------------------------------
    def add_node(self, node_id: str, address: str, labels: Mapping[str, str]) -> NodeView:
        """Registers a node (InvalidField / DuplicateNode on bad input)."""
        entry = self.registry.add(node_id, address, labels)
        score = self.cfg.score
        self._stats[node_id] = NodeStats(window=OutcomeWindow(score.window_size, score.window_s))
        self._ejections[node_id] = EjectionState()
        if node_id in self._removed:
            self._removed.remove(node_id)
        logger.info("node %s added at %s", node_id, entry.address)
        self.on_change()
        return self.view(node_id)

    def remove_node(self, node_id: str) -> NodeView:
        """Unregisters a node and returns its last view (UnknownNode when absent)."""
        view = self.view(node_id)
        self.registry.remove(node_id)
        del self._stats[node_id]
        del self._ejections[node_id]
        if node_id in self._published:
            self._removed.append(node_id)
        logger.info("node %s removed", node_id)
        self.on_change()
        return view

    def set_draining(self, node_id: str, draining: bool) -> NodeView:
        """Drains a node (no new traffic; in-flight requests finish) or returns it to service."""
        entry = self.registry.get(node_id)
        if entry.draining != draining:
            entry.draining = draining
            logger.info("node %s %s", node_id, "draining" if draining else "back in service")
            self.on_change()
        return self.view(node_id)

    # ---- active probes --------------------------------------------------------------------
    def wants_tags(self, node_id: str) -> bool:
        """True when the next probe of the node should read /api/tags too."""
        return self.registry.wants_tags(self.registry.get(node_id), self.cfg.tags_every_n_probes)

    def record_probe(self, node_id: str, result: ProbeResult) -> None:
        """Applies a probe; a node removed meanwhile is ignored."""
        if node_id not in self.registry:
            return
        now = self._clock()
        entry = self.registry.get(node_id)
        was_healthy = entry.healthy
        came_back = self.registry.apply_probe(entry, result, now, self.cfg.unhealthy_after_probe_failures)
        stats = self._stats[node_id]
        ejection = self._ejections[node_id]
        if came_back and entry.probes_done > 1:
            # NOTE: a node back from the dead starts on probation with clean rates; otherwise its old
            # errors would keep routers away and no new outcome could ever clear them.
            stats.reset_rates()
            logger.info("node %s is healthy again", node_id)
        elif was_healthy and not entry.healthy:
            logger.warning("node %s is unhealthy: %s", node_id, result.error)
        if result.ok and self.detector.may_return(ejection, now):
            self.detector.restore(ejection, now)
            stats.reset_rates()
            logger.info("node %s returns from ejection after a successful probe", node_id)
        self.on_change()

    # ---- passive signals ------------------------------------------------------------------
    def record_outcome(self, outcome: Outcome, reporter: str) -> bool:
        """Folds in a validated outcome; False when the node is unknown."""
        if outcome.node_id not in self.registry:
            return False
        now = self._clock()
        score = self.cfg.score
        stats = self._stats[outcome.node_id]
        stats.add(outcome, reporter, now, score.ewma_alpha, score.window_size, score.window_s)
        ejection = self._ejections[outcome.node_id]
        if not ejection.ejected:
            reason = self.detector.reason_to_eject(
                stats.consecutive_errors,
                stats.consecutive_busy,
                stats.window.count(now),
                stats.window.error_rate(now),
            )
            if reason is not None:
                ejected_now = sum(1 for e in self._ejections.values() if e.ejected)
                if self.detector.may_eject(ejected_now, len(self.registry)):
                    self.detector.eject(ejection, reason, now)
                    self.registry.get(outcome.node_id).last_error = f"ejected: {reason.value}"
                    logger.warning(
                        "node %s ejected (%s) for %.1f s",
                        outcome.node_id,
                        reason.value,
                        ejection.ejected_until - now,
                    )
        self.on_change()
        return True

    def forget_reporter(self, reporter: str) -> None:
        """Drops a closed reporter stream's in-flight counts."""
        if any([stats.forget_reporter(reporter) for stats in self._stats.values()]):
            self.on_change()

    # ---- views ----------------------------------------------------------------------------
    def view(self, node_id: str) -> NodeView:
        """The node's current view (UnknownNode when absent)."""
        entry = self.registry.get(node_id)
        return self._build_view(entry, self._clock())

    def views(self) -> list[NodeView]:
        """Every node's view, sorted by id."""
        now = self._clock()
        return [self._build_view(entry, now) for entry in self.registry]

    def snapshot(self) -> tuple[int, list[NodeView]]:
        """The current version and every node's view."""
        return self.version, self.views()

    def collect_changes(self) -> Changes | None:
        """The nodes that moved since the last call (and removals), under a new version; None if none."""
        changed = [v for v in self.views() if materially_differs(self._published.get(v.node_id), v)]
        removed = tuple(self._removed)
        if not changed and not removed:
            return None
        self._removed.clear()
        for node_id in removed:
            self._published.pop(node_id, None)
        for view in changed:
            self._published[view.node_id] = view
        self.version += 1
        return Changes(version=self.version, nodes=tuple(changed), removed_node_ids=removed)

    def _build_view(self, entry: NodeEntry, now: float) -> NodeView:
        cfg = self.cfg.score
        stats = self._stats[entry.node_id]
        ejection = self._ejections[entry.node_id]
        queue = stats.inflight(now, cfg.inflight_ttl_s)
        node_count = stats.window.count(now)
        node_error_rate = stats.window.error_rate(now)
        node_busy_rate = stats.window.busy_rate(now)
        models: list[ModelView] = []
        for name in sorted(set(entry.installed) | set(entry.loaded)):
            installed = entry.installed.get(name)
            loaded = entry.loaded.get(name)
            size_bytes = installed.size_bytes if installed else loaded.size_bytes if loaded else 0
            model_stats = stats.models.get(name) or _NO_SAMPLES
            if model_stats.window.count(now) >= cfg.min_window_samples:
                error_rate = model_stats.window.error_rate(now)
                busy_rate = model_stats.window.busy_rate(now)
            else:
                error_rate, busy_rate = node_error_rate, node_busy_rate
            latency = model_stats.latency_ms
            inputs = ModelInputs(
                loaded=loaded is not None,
                size_bytes=size_bytes,
                queue=queue,
                ewma_latency_ms=latency.value if latency.samples else None,
                error_rate=error_rate,
                busy_rate=busy_rate,
            )
            models.append(
                ModelView(
                    model=name,
                    installed=installed is not None,
                    loaded=loaded is not None,
                    expires_at=loaded.expires_at if loaded else 0.0,
                    expected_ms=expected_ms(inputs, cfg),
                    ewma_latency_ms=latency.get(cfg.prior_latency_ms),
                    ewma_ttft_ms=model_stats.ttft_ms.get(cfg.prior_ttft_ms),
                    ewma_tokens_per_s=model_stats.tokens_per_s.get(0.0),
                    error_rate=error_rate,
                    busy_rate=busy_rate,
                    # NOTE: routers report in-flight per node (Ollama queues across models on one
                    # node), so the per-model field carries the node's count.
                    inflight=queue,
                    size_bytes=size_bytes,
                    capabilities=installed.capabilities if installed else (),
                )
            )
        state = node_state(
            probed=entry.probed,
            healthy=entry.healthy,
            ejected=ejection.ejected,
            draining=entry.draining,
            error_rate=node_error_rate,
            busy_rate=node_busy_rate,
            window_count=node_count,
            cfg=cfg,
        )
        return NodeView(
            node_id=entry.node_id,
            address=entry.address,
            state=state,
            healthy=entry.healthy,
            ejected=ejection.ejected,
            draining=entry.draining,
            ejected_until=ejection.ejected_until if ejection.ejected else 0.0,
            ejection_count=ejection.ejection_count,
            models=tuple(models),
            error_rate=node_error_rate,
            inflight=queue,
            last_probe_at=entry.last_probe_at,
            probe_latency_ms=entry.probe_latency_ms,
            version=entry.version,
            last_error=entry.last_error,
            labels=tuple(sorted(entry.labels.items())),
            consecutive_probe_failures=entry.consecutive_probe_failures,
        )


__all__ = ["Changes", "Fleet", "UnknownNode"]
