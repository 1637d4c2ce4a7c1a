"""The gRPC servicer: a thin translation from RouterService RPCs to RouterCore."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from corral.v1 import router_service_pb2, router_service_pb2_grpc

from services.common.auth import current_tenant
from services.router.core import RouterCore


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's tenant: set from the API key by the auth interceptor, "default" when auth is off."""
    return current_tenant()


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left of the client's deadline, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


class RouterServicer(router_service_pb2_grpc.RouterServiceServicer):
    """Serves RouterService by delegating to RouterCore (domain errors map to status codes upstream)."""

    def __init__(self, core: RouterCore) -> None:
        self._core = core

    async def Generate(
        self, request: router_service_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> router_service_pb2.GenerateResponse:
        return await self._core.generate(request, tenant=tenant_of(context), deadline_s=deadline_of(context))

    async def GenerateStream(
        self, request: router_service_pb2.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_service_pb2.GenerateStreamResponse]:
        async for chunk in self._core.generate_stream(
            request, tenant=tenant_of(context), deadline_s=deadline_of(context)
        ):
            yield chunk

    async def Chat(
        self, request: router_service_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> router_service_pb2.ChatResponse:
        return await self._core.chat(request, tenant=tenant_of(context), deadline_s=deadline_of(context))

    async def ChatStream(
        self, request: router_service_pb2.ChatStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_service_pb2.ChatStreamResponse]:
        async for chunk in self._core.chat_stream(
            request, tenant=tenant_of(context), deadline_s=deadline_of(context)
        ):
            yield chunk

    async def Embed(
        self, request: router_service_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> router_service_pb2.EmbedResponse:
        return await self._core.embed(request, tenant=tenant_of(context), deadline_s=deadline_of(context))

    async def ListModels(
        self, request: router_service_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> router_service_pb2.ListModelsResponse:
        return await self._core.list_models(
            request, tenant=tenant_of(context), deadline_s=deadline_of(context)
        )
