"""Follows health's WatchScores stream: a local view of the nodes, and callbacks on every change."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping

import grpc
from corral.v1 import health_service_pb2, health_service_pb2_grpc

from services.prewarm.planner import ModelView, NodeView, normalize_model_name

logger = logging.getLogger(__name__)

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


class HealthWatcher:
    """Keeps a view of the nodes from health's score stream, reconnecting when the stream breaks."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        *,
        clock: Callable[[], float],
        reconnect_max_s: float = 2.0,
    ) -> None:
        self._stub = health_service_pb2_grpc.HealthServiceStub(channel)
        self._address = address
        self._clock = clock
        self._reconnect_max_s = reconnect_max_s
        self._view: dict[str, NodeView] | None = None
        self._live = asyncio.Event()
        self.listeners: list[ViewListener] = []

    @property
    def address(self) -> str:
        """The health service's address."""
        return self._address

    @property
    def view(self) -> Mapping[str, NodeView] | None:
        """The last known view (possibly stale), None before the first snapshot."""
        return self._view

    @property
    def live(self) -> bool:
        """True while the stream is up and has delivered its snapshot."""
        return self._live.is_set()

    async def current(self, wait_s: float) -> Mapping[str, NodeView] | None:
        """The view, waiting up to wait_s for the stream to be up; None when it is not."""
        if not self._live.is_set():
            try:
                async with asyncio.timeout(wait_s):
                    await self._live.wait()
            except TimeoutError:
                return None
        return dict(self._view or {})

    async def run(self) -> None:
        """Follows the stream until cancelled, reconnecting with a growing backoff."""
        backoff_s = 0.1
        reported = False
        while True:
            problem = "ended"
            try:
                await self._follow()
            except grpc.aio.AioRpcError as exc:
                problem = f"failed: {exc.code().name} {exc.details() or ''}".rstrip()
            except TimeoutError:
                problem = "went silent (no heartbeat)"
            except Exception:
                logger.exception("score stream from %s: unexpected error", self._address)
                problem = "failed"
            if self._live.is_set():
                backoff_s, reported = 0.1, False
            self._live.clear()
            # NOTE: one warning per outage; a health service that stays down is not news every 2 s.
            if not reported:
                logger.warning("score stream from %s %s; reconnecting", self._address, problem)
                reported = True
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, self._reconnect_max_s)

    async def _follow(self) -> None:
        call = self._stub.WatchScores(health_service_pb2.WatchScoresRequest(subscriber="prewarm"))
        silence_s: float | None = None
        try:
            while True:
                async with asyncio.timeout(silence_s):
                    message = await call.read()
                if message is grpc.aio.EOF:
                    return
                assert isinstance(message, health_service_pb2.WatchScoresResponse)
                if message.HasField("heartbeat_interval"):
                    heartbeat_s = message.heartbeat_interval.ToNanoseconds() / 1e9
                    # NOTE: three missed heartbeats make the stream stale, as the contract suggests.
                    silence_s = max(3 * heartbeat_s, 1.0) if heartbeat_s > 0 else None
                self._apply(message)
        finally:
            call.cancel()

    def _apply(self, message: health_service_pb2.WatchScoresResponse) -> None:
        kind = message.kind
        if kind == health_service_pb2.SCORE_UPDATE_KIND_HEARTBEAT:
            return
        now_s = self._clock()
        before = self._view
        if kind == health_service_pb2.SCORE_UPDATE_KIND_SNAPSHOT:
            after = {s.node_id: node_view(s, now_s) for s in message.nodes}
        elif kind == health_service_pb2.SCORE_UPDATE_KIND_UPDATE:
            if before is None or not self._live.is_set():
                return
            after = dict(before)
            for score in message.nodes:
                after[score.node_id] = node_view(score, now_s)
            for node_id in message.removed_node_ids:
                after.pop(node_id, None)
        else:
            return
        self._view = after
        self._live.set()
        for listener in self.listeners:
            try:
                listener(before, after)
            except Exception:
                logger.exception("score listener failed")
