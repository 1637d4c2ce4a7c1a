"""Translation between the health domain and corral.v1 protobuf messages."""

from __future__ import annotations

from corral.v1 import common_pb2, health_service_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from services.health.engine import MessageKind, ScoreMessage
from services.health.registry import normalize_model_name
from services.health.scoring import ModelView, NodeStateKind, NodeView
from services.health.stats import Outcome, OutcomeKind, outcome_problem

_STATES = {
    NodeStateKind.UNPROBED: health_service_pb2.NODE_STATE_UNSPECIFIED,
    NodeStateKind.HEALTHY: health_service_pb2.NODE_STATE_HEALTHY,
    NodeStateKind.DEGRADED: health_service_pb2.NODE_STATE_DEGRADED,
    NodeStateKind.UNHEALTHY: health_service_pb2.NODE_STATE_UNHEALTHY,
    NodeStateKind.EJECTED: health_service_pb2.NODE_STATE_EJECTED,
    NodeStateKind.DRAINING: health_service_pb2.NODE_STATE_DRAINING,
}

_KINDS = {
    MessageKind.SNAPSHOT: health_service_pb2.SCORE_UPDATE_KIND_SNAPSHOT,
    MessageKind.UPDATE: health_service_pb2.SCORE_UPDATE_KIND_UPDATE,
    MessageKind.HEARTBEAT: health_service_pb2.SCORE_UPDATE_KIND_HEARTBEAT,
}

_ERROR_KINDS = {
    common_pb2.ERROR_KIND_NONE: OutcomeKind.SUCCESS,
    common_pb2.ERROR_KIND_CONNECTION: OutcomeKind.CONNECTION,
    common_pb2.ERROR_KIND_TIMEOUT: OutcomeKind.TIMEOUT,
    common_pb2.ERROR_KIND_TTFT_TIMEOUT: OutcomeKind.TTFT_TIMEOUT,
    common_pb2.ERROR_KIND_BUSY: OutcomeKind.BUSY,
    common_pb2.ERROR_KIND_SERVER: OutcomeKind.SERVER,
    common_pb2.ERROR_KIND_CLIENT: OutcomeKind.IGNORED,
    common_pb2.ERROR_KIND_STREAM_CUT: OutcomeKind.STREAM_CUT,
    common_pb2.ERROR_KIND_MALFORMED: OutcomeKind.MALFORMED,
    common_pb2.ERROR_KIND_CANCELLED: OutcomeKind.IGNORED,
}


def _timestamp(epoch_s: float) -> timestamp_pb2.Timestamp | None:
    if epoch_s <= 0:
        return None
    stamp = timestamp_pb2.Timestamp()
    seconds = int(epoch_s)
    stamp.seconds = seconds
    stamp.nanos = int((epoch_s - seconds) * 1e9)
    return stamp


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def model_score(view: ModelView) -> health_service_pb2.ModelScore:
    """A ModelScore message."""
    return health_service_pb2.ModelScore(
        model=view.model,
        installed=view.installed,
        loaded=view.loaded,
        expires_at=_timestamp(view.expires_at),
        expected_ms=view.expected_ms,
        ewma_latency_ms=view.ewma_latency_ms,
        ewma_ttft_ms=view.ewma_ttft_ms,
        ewma_tokens_per_s=view.ewma_tokens_per_s,
        error_rate=view.error_rate,
        busy_rate=view.busy_rate,
        inflight=view.inflight,
        size_bytes=view.size_bytes,
        capabilities=list(view.capabilities),
    )


def node_score(view: NodeView) -> health_service_pb2.NodeScore:
    """A NodeScore message."""
    return health_service_pb2.NodeScore(
        node_id=view.node_id,
        address=view.address,
        state=_STATES[view.state],
        healthy=view.healthy,
        ejected=view.ejected,
        draining=view.draining,
        ejected_until=_timestamp(view.ejected_until),
        ejection_count=view.ejection_count,
        models=[model_score(m) for m in view.models],
        error_rate=view.error_rate,
        inflight=view.inflight,
        last_probe_at=_timestamp(view.last_probe_at),
        probe_latency_ms=view.probe_latency_ms,
        version=view.version,
        last_error=view.last_error,
        labels=dict(view.labels),
        consecutive_probe_failures=view.consecutive_probe_failures,
    )


def watch_response(
    message: ScoreMessage, heartbeat_interval_s: float, probe_interval_s: float
) -> health_service_pb2.WatchScoresResponse:
    """The wire form of a score message, encoded once per message and shared by all subscribers."""
    cached = message.encoded.get("proto")
    if isinstance(cached, health_service_pb2.WatchScoresResponse):
        return cached
    response = health_service_pb2.WatchScoresResponse(
        kind=_KINDS[message.kind],
        version=message.version,
        generated_at=_timestamp(message.generated_at),
        nodes=[node_score(v) for v in message.nodes],
        removed_node_ids=list(message.removed_node_ids),
        heartbeat_interval=_duration(heartbeat_interval_s),
        probe_interval=_duration(probe_interval_s),
    )
    message.encoded["proto"] = response
    return response


def outcome_from_proto(outcome: health_service_pb2.Outcome) -> Outcome | str:
    """A domain outcome, or the reason the message cannot be used."""
    if not outcome.node_id:
        return "node_id is required"
    if not outcome.model.strip():
        return "model is required"
    kind = _ERROR_KINDS.get(outcome.error_kind)
    if kind is None:
        return f"error_kind {outcome.error_kind} is not a known ErrorKind (unspecified is not allowed)"
    problem = outcome_problem(outcome.latency_ms, outcome.ttft_ms, outcome.tokens_per_s, outcome.inflight)
    if problem:
        return problem
    return Outcome(
        node_id=outcome.node_id,
        model=normalize_model_name(outcome.model),
        kind=kind,
        latency_ms=outcome.latency_ms,
        ttft_ms=outcome.ttft_ms,
        tokens_per_s=outcome.tokens_per_s,
        inflight=outcome.inflight,
    )
