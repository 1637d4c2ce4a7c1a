"""Adapters to the health service: the WatchScores consumer and the batched outcome reporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

import grpc
from corral.v1 import common_pb2, health_service_pb2, health_service_pb2_grpc
from google.protobuf import timestamp_pb2

from services.common.health_watch import routable
from services.router.observe import AttemptRecord, Observer
from services.router.scores import ModelView, NodeView, ScoreBoard, normalize_model

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 5.0


def node_view(score: health_service_pb2.NodeScore) -> NodeView:
    """The router's view of one NodeScore."""
    models: dict[str, ModelView] | None = {}
    for m in score.models:
        expires = m.expires_at.seconds + m.expires_at.nanos / 1e9 if m.HasField("expires_at") else 0.0
        models[normalize_model(m.model)] = ModelView(  # type: ignore[index]
            name=m.model,
            installed=m.installed,
            loaded=m.loaded,
            ewma_latency_ms=m.ewma_latency_ms,
            error_rate=m.error_rate,
            busy_rate=m.busy_rate,
            inflight=m.inflight,
            size_bytes=m.size_bytes,
            capabilities=tuple(m.capabilities),
            expires_at_s=expires,
        )
    unprobed = score.state == health_service_pb2.NODE_STATE_UNSPECIFIED
    if not models and unprobed:
        # NOTE: not probed yet: its models are unknown, not absent.
        models = None
    return NodeView(
        node_id=score.node_id,
        address=score.address.rstrip("/"),
        routable=routable(score),
        inflight=score.inflight,
        error_rate=score.error_rate,
        state=health_service_pb2.NodeState.Name(score.state).removeprefix("NODE_STATE_").lower(),
        models=models,
        labels=dict(score.labels),
        probed_at=_monotonic_of(score.last_probe_at) if score.HasField("last_probe_at") else 0.0,
    )


def _monotonic_of(stamp: timestamp_pb2.Timestamp) -> float:
    """A wall-clock time from health as this process's monotonic clock reads it."""
    return time.monotonic() - (time.time() - (stamp.seconds + stamp.nanos / 1e9))


class Backoff:
    """Exponential reconnect delay with full jitter (AWS blog "Exponential Backoff And Jitter")."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 5.0) -> None:
        self._base_s = base_s
        self._cap_s = cap_s
        self._attempt = 0

    def reset(self) -> None:
        """After a success."""
        self._attempt = 0

    def next_s(self) -> float:
        """The next delay."""
        ceiling = min(self._cap_s, self._base_s * (2**self._attempt))
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)


class ScoreFeed:
    """Keeps the score board in step with health's WatchScores stream, reconnecting with backoff."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        board: ScoreBoard,
        subscriber: str,
        stale_after_heartbeats: float = 3.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._stub = health_service_pb2_grpc.HealthServiceStub(channel)
        self._board = board
        self._subscriber = subscriber
        self._stale_factor = stale_after_heartbeats
        # NOTE: public so that the router can wire it once its forwarder exists.
        self.on_change = on_change
        self.first_snapshot = asyncio.Event()
        self.messages = 0

    def _stale_after_s(self, msg: health_service_pb2.WatchScoresResponse) -> float:
        interval = msg.heartbeat_interval.seconds + msg.heartbeat_interval.nanos / 1e9
        return self._stale_factor * (interval if interval > 0 else DEFAULT_HEARTBEAT_S)

    def apply(self, msg: health_service_pb2.WatchScoresResponse) -> None:
        """Applies one stream message to the board."""
        self.messages += 1
        stale_after = self._stale_after_s(msg)
        if msg.kind == health_service_pb2.SCORE_UPDATE_KIND_SNAPSHOT:
            self._board.apply_snapshot([node_view(n) for n in msg.nodes], msg.version, stale_after)
            self.first_snapshot.set()
        elif msg.kind == health_service_pb2.SCORE_UPDATE_KIND_UPDATE:
            self._board.apply_update([node_view(n) for n in msg.nodes], msg.removed_node_ids, msg.version)
        self._board.heartbeat(msg.version, stale_after)
        if self.on_change is not None and msg.kind != health_service_pb2.SCORE_UPDATE_KIND_HEARTBEAT:
            self.on_change()

    async def run(self) -> None:
        """Consumes the stream forever; on loss keeps the last snapshot (stale) and reconnects."""
        backoff = Backoff()
        while True:
            call = self._stub.WatchScores(health_service_pb2.WatchScoresRequest(subscriber=self._subscriber))
            try:
                async for msg in call:
                    if msg.kind == health_service_pb2.SCORE_UPDATE_KIND_SNAPSHOT:
                        backoff.reset()
                        self._board.connected = True
                    self.apply(msg)
                logger.warning("health's score stream ended; reconnecting")
            except grpc.aio.AioRpcError as exc:
                logger.log(
                    logging.DEBUG if not self._board.connected else logging.WARNING,
                    "health's score stream failed (%s); serving on the last snapshot",
                    exc.code().name,
                )
            finally:
                self._board.connected = False
                call.cancel()
            await asyncio.sleep(backoff.next_s())


class OutcomeReporter:
    """Sends attempt outcomes to health on a client stream, in batches, never blocking a request.

    `report()` only appends to a bounded queue; when the queue is full the oldest outcome is dropped
    (recent outcomes matter more to health's scores). A background task writes batches of up to
    `batch_size`, at most every `flush_ms`, and reopens the stream with backoff when it fails.
    """

    def __init__(
        self, channel: grpc.aio.Channel, reporter: str, queue_size: int, batch_size: int, flush_ms: float
    ) -> None:
        self._stub = health_service_pb2_grpc.HealthServiceStub(channel)
        self._reporter = reporter
        self._queue: asyncio.Queue[health_service_pb2.Outcome] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._flush_s = flush_ms / 1000
        self.dropped = 0
        self.sent = 0

    def report(self, outcome: health_service_pb2.Outcome) -> None:
        """Queues an outcome (drops the oldest when full)."""
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait(outcome)

    async def _next_batch(self) -> list[health_service_pb2.Outcome]:
        batch = [await self._queue.get()]
        await asyncio.sleep(self._flush_s)
        while len(batch) < self._batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def run(self) -> None:
        """Writes batches forever, reconnecting with backoff."""
        backoff = Backoff(cap_s=5.0)
        while True:
            call = self._stub.ReportOutcomes()
            pending: list[health_service_pb2.Outcome] = []
            try:
                while True:
                    pending = await self._next_batch()
                    await call.write(
                        health_service_pb2.ReportOutcomesRequest(reporter=self._reporter, outcomes=pending)
                    )
                    self.sent += len(pending)
                    pending = []
                    backoff.reset()
            except asyncio.CancelledError:
                call.cancel()
                raise
            except Exception as exc:
                logger.debug("outcome stream to health failed (%s); %d outcomes lost", exc, len(pending))
                self.dropped += len(pending)
                call.cancel()
            await asyncio.sleep(backoff.next_s())


_KINDS: dict[str, common_pb2.RequestKind.ValueType] = {
    "generate": common_pb2.REQUEST_KIND_GENERATE,
    "chat": common_pb2.REQUEST_KIND_CHAT,
    "embed": common_pb2.REQUEST_KIND_EMBED,
}


class HealthOutcomeObserver(Observer):
    """Turns every attempt into an Outcome for health's ReportOutcomes stream."""

    def __init__(self, reporter: OutcomeReporter) -> None:
        self._reporter = reporter

    def attempt(self, record: AttemptRecord) -> None:
        outcome = health_service_pb2.Outcome(
            node_id=record.node_id,
            model=record.model,
            request_kind=_KINDS.get(record.kind, common_pb2.REQUEST_KIND_UNSPECIFIED),
            error_kind=common_pb2.ErrorKind.ValueType(record.outcome.value),
            latency_ms=record.latency_ms,
            ttft_ms=record.ttft_ms,
            tokens_per_s=record.tokens_per_s,
            prompt_tokens=record.prompt_tokens,
            eval_tokens=record.eval_tokens,
            inflight=record.inflight_after,
        )
        # NOTE: set in place; Timestamp.GetCurrentTime goes through datetime arithmetic.
        outcome.finished_at.seconds, outcome.finished_at.nanos = divmod(time.time_ns(), 1_000_000_000)
        self._reporter.report(outcome)
