"""The PrewarmService servicer: translates protobuf to run-manager calls and back."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc
from corral.v1 import prewarm_service_pb2, prewarm_service_pb2_grpc
from google.protobuf import duration_pb2, timestamp_pb2

from services.common.errors import FailedPrecondition, InvalidArgument
from services.prewarm.required import FAILED, MISSING, PRESENT, PULLING, RequiredState
from services.prewarm.runs import (
    Outcome,
    ProgressEvent,
    RunInProgress,
    RunManager,
    RunRequest,
    RunState,
    RunSummary,
    Step,
    Trigger,
)

if TYPE_CHECKING:
    from services.prewarm.leader import Leadership

_REQUIRED_TO_PB = {
    MISSING: prewarm_service_pb2.REQUIRED_MODEL_STATE_MISSING,
    PULLING: prewarm_service_pb2.REQUIRED_MODEL_STATE_PULLING,
    PRESENT: prewarm_service_pb2.REQUIRED_MODEL_STATE_PRESENT,
    FAILED: prewarm_service_pb2.REQUIRED_MODEL_STATE_FAILED,
}
DEFAULT_STATUS_LIMIT = 10
MAX_STATUS_LIMIT = 1000
MAX_NAME_CHARS = 256

_STEP_TO_PB = {
    Step.WARM_MODELS: prewarm_service_pb2.PREWARM_STEP_WARM_MODELS,
    Step.SEED_CACHE: prewarm_service_pb2.PREWARM_STEP_SEED_CACHE,
    Step.MAINTENANCE: prewarm_service_pb2.PREWARM_STEP_MAINTENANCE,
}
_STEP_FROM_PB = {v: k for k, v in _STEP_TO_PB.items()}
_OUTCOME_TO_PB = {
    Outcome.STARTED: prewarm_service_pb2.STEP_OUTCOME_STARTED,
    Outcome.OK: prewarm_service_pb2.STEP_OUTCOME_OK,
    Outcome.SKIPPED: prewarm_service_pb2.STEP_OUTCOME_SKIPPED,
    Outcome.FAILED: prewarm_service_pb2.STEP_OUTCOME_FAILED,
}
_TRIGGER_TO_PB = {
    Trigger.STARTUP: prewarm_service_pb2.RUN_TRIGGER_STARTUP,
    Trigger.SCHEDULE: prewarm_service_pb2.RUN_TRIGGER_SCHEDULE,
    Trigger.NODE_JOINED: prewarm_service_pb2.RUN_TRIGGER_NODE_JOINED,
    Trigger.MANUAL: prewarm_service_pb2.RUN_TRIGGER_MANUAL,
}
_STATE_TO_PB = {
    RunState.RUNNING: prewarm_service_pb2.RUN_STATE_RUNNING,
    RunState.SUCCEEDED: prewarm_service_pb2.RUN_STATE_SUCCEEDED,
    RunState.PARTIAL: prewarm_service_pb2.RUN_STATE_PARTIAL,
    RunState.FAILED: prewarm_service_pb2.RUN_STATE_FAILED,
}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def event_to_pb(event: ProgressEvent) -> prewarm_service_pb2.ProgressEvent:
    """Converts a domain progress event."""
    return prewarm_service_pb2.ProgressEvent(
        run_id=event.run_id,
        step=_STEP_TO_PB[event.step]
        if event.step is not None
        else prewarm_service_pb2.PREWARM_STEP_UNSPECIFIED,
        node_id=event.node_id,
        model=event.model,
        done=event.done,
        total=event.total,
        outcome=_OUTCOME_TO_PB[event.outcome],
        message=event.message,
        at=_timestamp(event.at_s),
        run_finished=event.run_finished,
        duration=_duration(event.duration_s),
    )


def summary_to_pb(summary: RunSummary) -> prewarm_service_pb2.RunSummary:
    """Converts a run summary."""
    out = prewarm_service_pb2.RunSummary(
        run_id=summary.run_id,
        trigger=_TRIGGER_TO_PB[summary.trigger],
        state=_STATE_TO_PB[summary.state],
        started_at=_timestamp(summary.started_at_s),
        steps=[_STEP_TO_PB[s] for s in summary.steps],
        succeeded=summary.succeeded,
        failed=summary.failed,
        skipped=summary.skipped,
        errors=summary.errors,
        node_ids=sorted(summary.node_ids),
        maintenance_report=summary.maintenance_report,
    )
    if summary.finished_at_s is not None:
        out.finished_at.CopyFrom(_timestamp(summary.finished_at_s))
    return out


def _names(values: list[str], field: str) -> frozenset[str]:
    for i, value in enumerate(values):
        if not value.strip():
            raise InvalidArgument(f"{field}[{i}]", "must not be empty")
        if len(value) > MAX_NAME_CHARS:
            raise InvalidArgument(f"{field}[{i}]", f"longer than {MAX_NAME_CHARS} characters")
    return frozenset(v.strip() for v in values)


def request_from_pb(request: prewarm_service_pb2.StartRunRequest) -> RunRequest:
    """Validates a StartRunRequest.

    Raises:
        InvalidArgument: naming the offending field.
    """
    steps: list[Step] = []
    for i, value in enumerate(request.steps):
        step = _STEP_FROM_PB.get(value)
        if step is None:
            raise InvalidArgument(f"steps[{i}]", "must be WARM_MODELS, SEED_CACHE or MAINTENANCE")
        steps.append(step)
    node_ids = _names(list(request.node_ids), "node_ids")
    models = _names(list(request.models), "models")
    if node_ids and steps and Step.WARM_MODELS not in steps:
        raise InvalidArgument("node_ids", "only the WARM_MODELS step works per node; add it or drop node_ids")
    return RunRequest(Trigger.MANUAL, tuple(steps), node_ids, models)


class PrewarmServicer(prewarm_service_pb2_grpc.PrewarmServiceServicer):
    """Starts runs and reports on them."""

    def __init__(
        self,
        manager: RunManager,
        next_scheduled_at: Callable[[], float | None],
        required: Callable[[], list[RequiredState]] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self._manager = manager
        self._next_scheduled_at = next_scheduled_at
        self._required = required
        # NOTE: None: this replica leads, unnamed.
        self._leadership = leadership

    async def StartRun(
        self, request: prewarm_service_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[prewarm_service_pb2.StartRunResponse]:
        """Starts a run (or joins the current one) and streams its progress until it finishes."""
        run_request = request_from_pb(request)
        if self._leadership is not None and not self._leadership.holds():
            leader = self._leadership.leader or "not elected yet"
            raise FailedPrecondition(
                f"this prewarm replica stands by: only the leader ({leader}) runs;"
                " retry, or call the replica that leads",
                reason="NOT_LEADER",
            )
        try:
            run = self._manager.start(run_request, join_if_running=request.join_if_running)
        except RunInProgress as exc:
            raise FailedPrecondition(str(exc), reason="RUN_IN_PROGRESS") from None
        # NOTE: the run lives in its own task: a client that goes away stops listening, not the run.
        async for event in run.events():
            yield prewarm_service_pb2.StartRunResponse(event=event_to_pb(event))

    async def GetStatus(
        self, request: prewarm_service_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> prewarm_service_pb2.GetStatusResponse:
        """Returns the run in progress, the recent runs and the next scheduled run."""
        if request.limit < 0:
            raise InvalidArgument("limit", "must not be negative")
        limit = min(request.limit or DEFAULT_STATUS_LIMIT, MAX_STATUS_LIMIT)
        reply = prewarm_service_pb2.GetStatusResponse(
            recent=[summary_to_pb(s) for s in self._manager.recent(limit)]
        )
        current = self._manager.current
        if current is not None:
            reply.current.CopyFrom(summary_to_pb(current.snapshot()))
        next_at = self._next_scheduled_at()
        if next_at is not None and math.isfinite(next_at):
            reply.next_scheduled_at.CopyFrom(_timestamp(next_at))
        if self._leadership is not None:
            # NOTE: while this replica leads, `leader` is its own name.
            reply.leads = self._leadership.holds()
            reply.leader = self._leadership.leader
        else:
            reply.leads = True
        for state in self._required() if self._required is not None else []:
            reply.required_models.add(
                node_id=state.node_id,
                model=state.model,
                state=_REQUIRED_TO_PB[state.state],
                completed=state.completed,
                total=state.total,
                error=state.error,
            )
        return reply
