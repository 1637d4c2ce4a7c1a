"""The gRPC ModelService: fleet-wide pull, delete and copy over the router's ModelAdmin (admin keys only)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from corral.v1 import model_service_pb2 as mpb
from corral.v1 import model_service_pb2_grpc

from services.router.model_admin import (
    ABSENT,
    DONE,
    FAILED,
    PULLING,
    QUEUED,
    ModelAdmin,
    NodeProgress,
    failure_summary,
)
from services.router.validation import check_model

_STATES = {
    QUEUED: mpb.NODE_MODEL_STATE_QUEUED,
    PULLING: mpb.NODE_MODEL_STATE_PULLING,
    DONE: mpb.NODE_MODEL_STATE_DONE,
    FAILED: mpb.NODE_MODEL_STATE_FAILED,
    ABSENT: mpb.NODE_MODEL_STATE_ABSENT,
}


def progress_message(node: NodeProgress) -> mpb.NodeModelProgress:
    """One node's progress on the wire."""
    return mpb.NodeModelProgress(
        node_id=node.node_id,
        state=_STATES[node.state],
        status=node.status,
        total=node.total,
        completed=node.completed,
        error=node.error,
    )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """Serves ModelService; the auth interceptor admits admin keys only (services/common/auth_grpc.py)."""

    def __init__(self, admin: ModelAdmin) -> None:
        self._admin = admin

    async def PullModel(
        self, request: mpb.PullModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[mpb.PullModelResponse]:
        # NOTE: validated before any node is asked: an empty name would fail on every node (OK with
        # every node FAILED) instead of being refused as the client's mistake.
        check_model("model", request.model, None)
        nodes = self._admin.select(request.nodes)
        events = self._admin.pull(request.model, nodes)
        try:
            async for event in events:
                snapshot = mpb.PullModelResponse(nodes=[progress_message(n) for n in event.nodes])
                if event.done:
                    snapshot.done = True
                    if any(n.state == FAILED for n in event.nodes):
                        snapshot.error = failure_summary("pull", request.model, event.nodes)
                yield snapshot
        finally:
            await events.aclose()

    async def DeleteModel(
        self, request: mpb.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> mpb.DeleteModelResponse:
        check_model("model", request.model, None)
        results = await self._admin.delete(request.model, self._admin.select(request.nodes))
        return mpb.DeleteModelResponse(nodes=[progress_message(r) for r in results])

    async def CopyModel(
        self, request: mpb.CopyModelRequest, context: grpc.aio.ServicerContext
    ) -> mpb.CopyModelResponse:
        check_model("source", request.source, None)
        check_model("destination", request.destination, None)
        nodes = self._admin.select(request.nodes)
        results = await self._admin.copy(request.source, request.destination, nodes)
        return mpb.CopyModelResponse(nodes=[progress_message(r) for r in results])
