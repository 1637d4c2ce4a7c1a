"""The shared server interceptor chain: domain-error mapping and the access log.

Order (outermost first): tracing (the OpenTelemetry server interceptor, prepended by
services.common.tracing when enabled) → auth (when configured) → this interceptor, which also feeds
the RPC metrics (services.common.metrics) and the span's final status. Streaming handlers are
wrapped too, so a domain error raised mid-stream still becomes a proper status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.errors import CorralError, to_status
from services.common.metrics import observe_rpc
from services.common.tracing import mark_rpc_status

logger = logging.getLogger("corral.access")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class ErrorAndAccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps CorralError to a rich status, hides unexpected errors as INTERNAL, logs one line per call."""

    def __init__(self, domain: str, access_log: bool = True) -> None:
        self._domain = domain
        self._access_log = access_log
        # NOTE: method -> (handler, wrapped handler). Servicers' handlers are built once, so the
        # wrappers are too, instead of a closure and a namedtuple copy on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        if len(self._wrapped) < 1024:
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if method.startswith(("/grpc.health.v1.", "/grpc.reflection.")):
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, method))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._wrap_unary(handler.stream_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, method))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._wrap_stream(handler.stream_stream, method))
        return handler

    async def _fail(self, exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> str:
        if isinstance(exc, CorralError):
            await context.abort_with_status(to_status(exc, self._domain))
            return str(exc.code.name)  # pragma: no cover - abort raises
        logger.error("unexpected error in %s", method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server logs")
        return "INTERNAL"  # pragma: no cover - abort raises

    def _log(self, method: str, context: grpc.aio.ServicerContext, code: str, started: float) -> None:
        observe_rpc(method, code, time.perf_counter() - started)
        mark_rpc_status(code)
        if self._access_log and logger.isEnabledFor(logging.INFO):
            logger.info(
                "rpc %s %s",
                method,
                code,
                extra={
                    "rpc_method": method,
                    "peer": context.peer(),
                    "grpc_status": code,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )

    def _wrap_unary(
        self, behavior: Callable[..., Awaitable[Any]], method: str
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except Exception as exc:
                code = exc.code.name if isinstance(exc, CorralError) else "INTERNAL"
                await self._fail(exc, context, method)
                raise  # pragma: no cover - _fail aborts
            finally:
                self._log(method, context, code, started)

        return wrapped

    def _wrap_stream(
        self, behavior: Callable[..., AsyncIterator[Any]], method: str
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = "OK"
            try:
                async for item in behavior(request, context):
                    yield item
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = _code_name(context)
                raise
            except Exception as exc:
                code = exc.code.name if isinstance(exc, CorralError) else "INTERNAL"
                await self._fail(exc, context, method)
            finally:
                self._log(method, context, code, started)

        return wrapped


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return str(code or "ABORTED")
