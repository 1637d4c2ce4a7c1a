"""Follows health's WatchScores stream: a local view of the nodes, and callbacks on every change.

Shared by the services that need the fleet without routing to it: prewarm (what to warm, where) and
the cache (where its embedder sends texts). Each passes its own conversion of a `NodeScore`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

import grpc
from corral.v1 import health_service_pb2, health_service_pb2_grpc

logger = logging.getLogger(__name__)

T = TypeVar("T")

Convert = Callable[[health_service_pb2.NodeScore, float], T]
"""A NodeScore (and the clock's now) to the caller's view of one node."""

_UNROUTABLE = {
    health_service_pb2.NODE_STATE_UNHEALTHY,
    health_service_pb2.NODE_STATE_EJECTED,
    health_service_pb2.NODE_STATE_DRAINING,
}


def routable(score: health_service_pb2.NodeScore) -> bool:
    """Health says the node may take traffic: probed, and not unhealthy, ejected or draining.

    NOTE: a node health has not probed yet (just added) takes no traffic: its models are not known,
    and a model it lacks (a required model still to be pulled) must not reach it.
    """
    unprobed = score.state == health_service_pb2.NODE_STATE_UNSPECIFIED
    return not unprobed and not score.ejected and not score.draining and score.state not in _UNROUTABLE


class HealthWatcher(Generic[T]):
    """Keeps a view of the nodes from health's score stream, reconnecting when the stream breaks.

    Args:
        channel: A channel to the health service.
        address: Its address (for logs).
        convert: Builds the view of one node from its NodeScore.
        clock: Wall clock (seconds), passed to `convert`.
        subscriber: The name this watcher subscribes with.
        reconnect_max_s: Longest pause between two reconnection attempts.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        address: str,
        convert: Convert[T],
        *,
        clock: Callable[[], float],
        subscriber: str,
        reconnect_max_s: float = 2.0,
    ) -> None:
        self._stub = health_service_pb2_grpc.HealthServiceStub(channel)
        self._address = address
        self._convert = convert
        self._subscriber = subscriber
        self._clock = clock
        self._reconnect_max_s = reconnect_max_s
        self._view: dict[str, T] | None = None
        self._live = asyncio.Event()
        self.listeners: list[Callable[[Mapping[str, T] | None, Mapping[str, T]], None]] = []

    @property
    def address(self) -> str:
        """The health service's address."""
        return self._address

    @property
    def view(self) -> Mapping[str, T] | None:
        """The last known view (possibly stale), None before the first snapshot."""
        return self._view

    @property
    def live(self) -> bool:
        """True while the stream is up and has delivered its snapshot."""
        return self._live.is_set()

    async def current(self, wait_s: float) -> Mapping[str, T] | None:
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
        call = self._stub.WatchScores(health_service_pb2.WatchScoresRequest(subscriber=self._subscriber))
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
            after = {s.node_id: self._convert(s, now_s) for s in message.nodes}
        elif kind == health_service_pb2.SCORE_UPDATE_KIND_UPDATE:
            if before is None or not self._live.is_set():
                return
            after = dict(before)
            for score in message.nodes:
                after[score.node_id] = self._convert(score, now_s)
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
