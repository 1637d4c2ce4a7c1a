"""gRPC side of authentication: the server interceptor, the method access table and the client key."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.auth import Access, Authenticator, KeyState, RateLimited, set_principal
from services.common.errors import CorralError

logger = logging.getLogger("corral.auth")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

# NOTE: deny by default: a method missing from this table needs an admin key. Prefix rules end in "/".
# The service role exists for Corral's own calls: the cache takes the tenant as a request field,
# so a tenant key must never reach it directly (tenant isolation), only through the router.
METHOD_ACCESS: Mapping[str, Access] = {
    "/grpc.health.v1.Health/": Access.OPEN,
    "/grpc.reflection.": Access.OPEN,
    "/corral.debug.DebugService/": Access.OPEN,
    "/corral.v1.RouterService/": Access.TENANT,
    # NOTE: model management changes every node for every tenant: admin keys only.
    "/corral.v1.ModelService/": Access.ADMIN,
    "/corral.v1.CacheService/Invalidate": Access.ADMIN,
    # NOTE: RunMaintenance stays at service level: prewarm runs it on its schedule with its service key.
    "/corral.v1.CacheService/": Access.SERVICE,
    "/corral.v1.HealthService/AddNode": Access.ADMIN,
    "/corral.v1.HealthService/DrainNode": Access.ADMIN,
    "/corral.v1.HealthService/UndrainNode": Access.ADMIN,
    "/corral.v1.HealthService/RemoveNode": Access.ADMIN,
    "/corral.v1.HealthService/": Access.SERVICE,
    "/corral.v1.PrewarmService/StartRun": Access.ADMIN,
    "/corral.v1.PrewarmService/": Access.SERVICE,
}


def access_of(method: str, table: Mapping[str, Access] = METHOD_ACCESS) -> Access:
    """The access a full method name ("/pkg.Service/Method") needs: exact match, else longest prefix."""
    exact = table.get(method)
    if exact is not None:
        return exact
    best: tuple[int, Access] | None = None
    for prefix, access in table.items():
        if prefix.endswith(("/", ".")) and method.startswith(prefix):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), access)
    return Access.ADMIN if best is None else best[1]


def key_from_metadata(metadata: Any) -> str | None:
    """The API key of a call: `authorization: Bearer <key>` metadata."""
    for item in metadata or ():
        name, value = item
        if name == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _status(err: CorralError, domain: str) -> grpc.Status:
    """google.rpc.Status with ErrorInfo and, for a rate limit, RetryInfo."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=domain))
    details = [info]
    if isinstance(err, RateLimited):
        seconds = max(err.retry_after_s, 0.001)
        delay = duration_pb2.Duration(seconds=int(seconds), nanos=int(math.modf(seconds)[0] * 1e9))
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    status = status_pb2.Status(code=getattr(code_pb2, err.code.name), message=err.message, details=details)
    return rpc_status.to_status(status)


def _reject(handler: grpc.RpcMethodHandler, status: grpc.Status) -> grpc.RpcMethodHandler:
    """A handler of the method's own shape (so its serializers still apply) that only aborts."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort_with_status(status)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort_with_status(status)
        yield  # pragma: no cover - abort raises

    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary)
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=unary)
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=stream)
    return handler._replace(stream_stream=stream)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks the API key, the role the method needs and the key's limits; sets the caller's principal.

    Rejections go through a handler that only aborts (UNAUTHENTICATED, PERMISSION_DENIED or
    RESOURCE_EXHAUSTED with an ErrorInfo reason), so no servicer code runs for them.

    Args:
        authenticator: The keys and their limits (shared with the HTTP API in the router).
        domain: The ErrorInfo domain, e.g. "router.corral".
        table: Method access rules (defaults to METHOD_ACCESS).
    """

    def __init__(
        self, authenticator: Authenticator, domain: str, table: Mapping[str, Access] = METHOD_ACCESS
    ) -> None:
        self._auth = authenticator
        self._domain = domain
        self._table = table
        self._rejects: dict[tuple[str, str], grpc.Status] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        needed = access_of(method, self._table)
        handler = await continuation(handler_call_details)
        if handler is None or needed is Access.OPEN:
            return handler
        try:
            state = self._auth.authenticate(key_from_metadata(handler_call_details.invocation_metadata))
            self._auth.authorize(state, needed, method)
            self._auth.admit(state)
        except CorralError as exc:
            logger.info("auth: %s refused: %s (%s)", method, exc.reason, exc.message)
            return _reject(handler, self._status_for(exc))
        return self._wrap(handler, state)

    def _status_for(self, exc: CorralError) -> grpc.Status:
        # NOTE: statuses are built once per distinct message; rate-limit ones carry their own wait.
        if isinstance(exc, RateLimited):
            return _status(exc, self._domain)
        cache_key = (exc.reason, exc.message)
        status = self._rejects.get(cache_key)
        if status is None:
            if len(self._rejects) > 1024:
                self._rejects.clear()
            status = self._rejects[cache_key] = _status(exc, self._domain)
        return status

    def _wrap(self, handler: grpc.RpcMethodHandler, state: KeyState) -> grpc.RpcMethodHandler:
        auth = self._auth
        domain = self._domain

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    auth.enter(state)
                except CorralError as exc:
                    await context.abort_with_status(_status(exc, domain))
                set_principal(state.principal)
                try:
                    return await behavior(request, context)
                finally:
                    auth.leave(state)

            return wrapped

        def streaming(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    auth.enter(state)
                except CorralError as exc:
                    await context.abort_with_status(_status(exc, domain))
                set_principal(state.principal)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    auth.leave(state)

            return wrapped

        if handler.unary_unary is not None:
            return handler._replace(unary_unary=unary(handler.unary_unary))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=unary(handler.stream_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=streaming(handler.unary_stream))
        return handler._replace(stream_stream=streaming(handler.stream_stream))


def _with_key(details: grpc.aio.ClientCallDetails, header: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if "authorization" not in metadata:
        metadata.add(*header)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _KeyInterceptor:
    def __init__(self, key: str) -> None:
        self._header = ("authorization", f"Bearer {key}")

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._header), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details, self._header), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_with_key(details, self._header), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(_with_key(details, self._header), request_iterator)


class _UnaryUnaryKey(_KeyInterceptor, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    pass


class _UnaryStreamKey(_KeyInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    pass


class _StreamUnaryKey(_KeyInterceptor, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    pass


class _StreamStreamKey(_KeyInterceptor, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    pass


def key_interceptors(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that send `authorization: Bearer <key>` on every call of a channel."""
    return [_UnaryUnaryKey(key), _UnaryStreamKey(key), _StreamUnaryKey(key), _StreamStreamKey(key)]
