"""Prewarm's view of health's score stream: each NodeScore as the planner's NodeView.

The stream itself is followed by services/common/health_watch.py `HealthWatcher`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import grpc
from corral.v1 import health_service_pb2

from services.common.health_watch import HealthWatcher
from services.prewarm.planner import ModelView, NodeView, normalize_model_name

ViewListener = Callable[[Mapping[str, NodeView] | None, Mapping[str, NodeView]], None]
"""Called with (view before, view after) on every snapshot or update; before is None the first time."""

# NOTE: Ollama reports a forever keep-alive as an expiry around the year 2318; treat as never.
_FOREVER_AFTER_S = 100 * 365 * 24 * 3600.0


def node_view(score: health_service_pb2.NodeScore, now_s: float) -> NodeView:
    """Converts a NodeScore to the planner's NodeView."""
    models: dict[str, ModelView] = {}
    for m in score.models:
        if not m.installed:
            continue
        expires: float | None = None
        if m.loaded and m.HasField("expires_at"):
            expires = m.expires_at.ToNanoseconds() / 1e9
            if expires - now_s > _FOREVER_AFTER_S:
                expires = math.inf
        models[normalize_model_name(m.model)] = ModelView(
            name=m.model, loaded=m.loaded, expires_at_s=expires, capabilities=tuple(m.capabilities)
        )
    state = health_service_pb2.NodeState.Name(score.state).removeprefix("NODE_STATE_")
    return NodeView(
        node_id=score.node_id,
        address=score.address,
        state=state,
        healthy=score.healthy,
        ejected=score.ejected,
        draining=score.draining,
        models=models,
        labels=dict(score.labels),
    )


def watch_health(
    channel: grpc.aio.Channel, address: str, *, clock: Callable[[], float]
) -> HealthWatcher[NodeView]:
    """A watcher of health's scores as prewarm's planner sees the nodes."""
    return HealthWatcher(channel, address, node_view, clock=clock, subscriber="prewarm")
