"""The HealthService servicer: translates protobuf to engine calls and domain errors to status codes."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

import grpc
from corral.v1 import health_service_pb2, health_service_pb2_grpc

from services.common.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from services.health.convert import node_score, outcome_from_proto, watch_response
from services.health.engine import HealthEngine
from services.health.hub import HubClosed
from services.health.registry import NODE_ID_PATTERN, DuplicateNode, InvalidField, UnknownNode
from services.health.stats import Outcome
from services.health.store import StoreUnavailable

logger = logging.getLogger(__name__)

# NOTE: one batch is what a router buffers between two flushes; larger batches are a client bug.
MAX_OUTCOMES_PER_MESSAGE = 10_000


def _node_id(value: str) -> str:
    """Validates a node id argument: empty or malformed is INVALID_ARGUMENT, not a lookup."""
    if not value:
        raise InvalidArgument("node_id", "node_id is required")
    if not NODE_ID_PATTERN.match(value):
        raise InvalidArgument("node_id", f"{value!r} is not a valid node id")
    return value


class HealthServicer(health_service_pb2_grpc.HealthServiceServicer):
    """corral.v1.HealthService over a HealthEngine."""

    def __init__(self, engine: HealthEngine) -> None:
        self._engine = engine
        self._streams = itertools.count(1)
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Ends open ReportOutcomes streams with UNAVAILABLE (at shutdown, before the drain)."""
        self._closing.set()

    async def _batches(
        self, request_iterator: AsyncIterator[health_service_pb2.ReportOutcomesRequest]
    ) -> AsyncIterator[health_service_pb2.ReportOutcomesRequest]:
        """Yields the stream's messages until it ends or the service starts shutting down."""
        # NOTE: a reporter's stream lives as long as the router; without this the drain would wait
        # the whole grace period for it.
        iterator = request_iterator.__aiter__()
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            while True:
                following = asyncio.ensure_future(iterator.__anext__())
                await asyncio.wait({following, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    raise Unavailable("health is shutting down; report to another replica")
                try:
                    yield following.result()
                except StopAsyncIteration:
                    return
        finally:
            closing.cancel()

    async def WatchScores(
        self, request: health_service_pb2.WatchScoresRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_service_pb2.WatchScoresResponse]:
        """Snapshot, then updates and heartbeats until the client leaves or the service stops."""
        name = request.subscriber or context.peer() or "anonymous"
        cfg = self._engine.cfg
        try:
            sub, snapshot = self._engine.subscribe(name)
        except HubClosed:
            raise Unavailable("the health service is shutting down; reconnect to another replica") from None
        try:
            message = snapshot
            while True:
                yield watch_response(message, cfg.heartbeat_interval_s, cfg.probe_interval_s)
                message = await sub.next_message()
        except HubClosed:
            raise Unavailable("the health service is shutting down; reconnect to another replica") from None
        finally:
            sub.unsubscribe()
            logger.info("subscriber %s left (%d resyncs)", name, sub.resyncs)

    async def ReportOutcomes(
        self,
        request_iterator: AsyncIterator[health_service_pb2.ReportOutcomesRequest],
        context: grpc.aio.ServicerContext,
    ) -> health_service_pb2.ReportOutcomesResponse:
        """Folds in every batch of the stream; answers the counts when the reporter closes it."""
        reporter_key = ""
        accepted = rejected = 0
        try:
            async for batch in self._batches(request_iterator):
                if not reporter_key:
                    reporter = batch.reporter or context.peer() or "anonymous"
                    reporter_key = f"{reporter}#{next(self._streams)}"
                if len(batch.outcomes) > MAX_OUTCOMES_PER_MESSAGE:
                    raise InvalidArgument(
                        "outcomes", f"at most {MAX_OUTCOMES_PER_MESSAGE} outcomes per message"
                    )
                valid: list[Outcome] = []
                for index, raw in enumerate(batch.outcomes):
                    parsed = outcome_from_proto(raw)
                    if isinstance(parsed, str):
                        rejected += 1
                        logger.debug("outcome %d from %s rejected: %s", index, reporter_key, parsed)
                    else:
                        valid.append(parsed)
                taken = self._engine.record_outcomes(reporter_key, valid)
                accepted += taken
                rejected += len(valid) - taken
        finally:
            if reporter_key:
                self._engine.forget_reporter(reporter_key)
        return health_service_pb2.ReportOutcomesResponse(accepted=accepted, rejected=rejected)

    async def ListNodes(
        self, request: health_service_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> health_service_pb2.ListNodesResponse:
        """Every node, sorted by id."""
        version, views = self._engine.fleet.snapshot()
        return health_service_pb2.ListNodesResponse(nodes=[node_score(v) for v in views], version=version)

    async def AddNode(
        self, request: health_service_pb2.AddNodeRequest, context: grpc.aio.ServicerContext
    ) -> health_service_pb2.AddNodeResponse:
        """Registers a node and starts probing it."""
        if not request.node_id:
            raise InvalidArgument("node_id", "node_id is required")
        try:
            view = await self._engine.admin_add(request.node_id, request.address, dict(request.labels))
        except StoreUnavailable as exc:
            raise Unavailable(str(exc)) from None
        except InvalidField as exc:
            raise InvalidArgument(exc.field, exc.detail) from None
        except DuplicateNode as exc:
            raise AlreadyExists(exc.message, reason="NODE_ALREADY_EXISTS") from None
        return health_service_pb2.AddNodeResponse(node=node_score(view))

    async def DrainNode(
        self, request: health_service_pb2.DrainNodeRequest, context: grpc.aio.ServicerContext
    ) -> health_service_pb2.DrainNodeResponse:
        """Stops new traffic to a node (routers let in-flight requests finish)."""
        try:
            view = await self._engine.admin_drain(_node_id(request.node_id), True)
        except StoreUnavailable as exc:
            raise Unavailable(str(exc)) from None
        except UnknownNode as exc:
            raise NotFound(exc.message, reason="NODE_NOT_FOUND") from None
        return health_service_pb2.DrainNodeResponse(node=node_score(view))

    async def UndrainNode(
        self, request: health_service_pb2.UndrainNodeRequest, context: grpc.aio.ServicerContext
    ) -> health_service_pb2.UndrainNodeResponse:
        """Returns a drained node to service."""
        try:
            view = await self._engine.admin_drain(_node_id(request.node_id), False)
        except StoreUnavailable as exc:
            raise Unavailable(str(exc)) from None
        except UnknownNode as exc:
            raise NotFound(exc.message, reason="NODE_NOT_FOUND") from None
        return health_service_pb2.UndrainNodeResponse(node=node_score(view))

    async def RemoveNode(
        self, request: health_service_pb2.RemoveNodeRequest, context: grpc.aio.ServicerContext
    ) -> health_service_pb2.RemoveNodeResponse:
        """Unregisters a node and stops probing it."""
        try:
            view = await self._engine.admin_remove(_node_id(request.node_id))
        except StoreUnavailable as exc:
            raise Unavailable(str(exc)) from None
        except UnknownNode as exc:
            raise NotFound(exc.message, reason="NODE_NOT_FOUND") from None
        return health_service_pb2.RemoveNodeResponse(node=node_score(view))
