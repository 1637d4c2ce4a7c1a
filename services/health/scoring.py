"""The score model: expected completion time per (node, model), node states and change detection.

The score a router minimises is the expected time, in milliseconds, until a new request sent to
this node for this model completes:

    expected_ms = (queue + 1) * service_ms          # wait behind the queue, then be served
                + load_ms                            # 0 when the model is loaded
                + error_rate * error_penalty_ms      # a failing node costs a failover
                + busy_rate * busy_penalty_ms        # a node answering 503 costs a retry

where
    queue        = requests in flight on the node, as the routers last reported them;
    service_ms   = EWMA of the successful (and timed-out) attempts' wall time for this model,
                   or prior_latency_ms before the first sample;
    load_ms      = load_base_ms + load_ms_per_gb * size_gb when installed but not loaded;
    error_rate   = share of node errors (5xx, connection, timeout, cut streams, malformed answers)
                   among the model's recent outcomes, or the node's when the model has fewer than
                   min_window_samples of them;
    busy_rate    = the same for 503 "server busy".

Fast failures never feed service_ms, and error_penalty_ms (60 s by default) dwarfs any realistic
service time, so a node that fails fast scores worse than a slow healthy one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.health.config import ScoreConfig

GB = 1_000_000_000


class NodeStateKind(enum.Enum):
    """A node's routing state (mirrors corral.v1.NodeState)."""

    UNPROBED = "unprobed"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    EJECTED = "ejected"
    DRAINING = "draining"


@dataclass(frozen=True)
class ModelView:
    """A node's score for one model."""

    model: str
    installed: bool
    loaded: bool
    expires_at: float
    expected_ms: float
    ewma_latency_ms: float
    ewma_ttft_ms: float
    ewma_tokens_per_s: float
    error_rate: float
    busy_rate: float
    inflight: int
    size_bytes: int
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class NodeView:
    """Everything a router needs about one node, at one moment."""

    node_id: str
    address: str
    state: NodeStateKind
    healthy: bool
    ejected: bool
    draining: bool
    ejected_until: float
    ejection_count: int
    models: tuple[ModelView, ...]
    error_rate: float
    inflight: int
    last_probe_at: float
    probe_latency_ms: float
    version: str
    last_error: str
    labels: tuple[tuple[str, str], ...]
    consecutive_probe_failures: int


@dataclass(frozen=True)
class ModelInputs:
    """What the formula needs for one (node, model)."""

    loaded: bool
    size_bytes: int
    queue: int
    ewma_latency_ms: float | None
    error_rate: float
    busy_rate: float


def expected_ms(inputs: ModelInputs, cfg: ScoreConfig) -> float:
    """The composite score (see the module docstring)."""
    service_ms = cfg.prior_latency_ms if inputs.ewma_latency_ms is None else inputs.ewma_latency_ms
    load_ms = 0.0 if inputs.loaded else cfg.load_base_ms + cfg.load_ms_per_gb * inputs.size_bytes / GB
    return (
        (inputs.queue + 1) * service_ms
        + load_ms
        + inputs.error_rate * cfg.error_penalty_ms
        + inputs.busy_rate * cfg.busy_penalty_ms
    )


def node_state(
    *,
    probed: bool,
    healthy: bool,
    ejected: bool,
    draining: bool,
    error_rate: float,
    busy_rate: float,
    window_count: int,
    cfg: ScoreConfig,
) -> NodeStateKind:
    """The single state shown to operators; routers use the flags (healthy, ejected, draining)."""
    if draining:
        return NodeStateKind.DRAINING
    if not probed:
        return NodeStateKind.UNPROBED
    if not healthy:
        return NodeStateKind.UNHEALTHY
    if ejected:
        return NodeStateKind.EJECTED
    if window_count >= cfg.min_window_samples and (
        error_rate >= cfg.degraded_error_rate or busy_rate >= cfg.degraded_busy_rate
    ):
        return NodeStateKind.DEGRADED
    return NodeStateKind.HEALTHY


# NOTE: a score that moves by less than this share is not news: routers pick by power of two
# choices, which tolerates small staleness, and a quiet stream of heartbeats is cheaper.
SCORE_CHANGE_SHARE = 0.1
RATE_CHANGE = 0.05


def _close(a: float, b: float, share: float = SCORE_CHANGE_SHARE) -> bool:
    return abs(a - b) <= max(1.0, share * max(abs(a), abs(b)))


def _routing_key(view: NodeView) -> tuple[object, ...]:
    return (
        view.address,
        view.state,
        view.healthy,
        view.ejected,
        view.draining,
        view.ejected_until,
        view.ejection_count,
        view.inflight,
        view.version,
        view.labels,
        tuple((m.model, m.installed, m.loaded, m.inflight) for m in view.models),
    )


def materially_differs(old: NodeView | None, new: NodeView) -> bool:
    """True when a router would route differently: flags, models, in-flight or a score moved."""
    if old is None or _routing_key(old) != _routing_key(new):
        return True
    if abs(old.error_rate - new.error_rate) > RATE_CHANGE:
        return True
    for a, b in zip(old.models, new.models, strict=True):
        if not _close(a.expected_ms, b.expected_ms):
            return True
        if abs(a.error_rate - b.error_rate) > RATE_CHANGE or abs(a.busy_rate - b.busy_rate) > RATE_CHANGE:
            return True
    return False
