"""Requests that do not parse as their message type become INVALID_ARGUMENT, not UNKNOWN; well-known
types that parse but that protobuf itself calls invalid are refused by field."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from corral.v1 import common_pb2
from google.protobuf.duration_pb2 import Duration

from services.common.errors import InvalidArgument

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


# NOTE: the most items the cache takes in one call (lookups or stores of a batch, texts of an
# embeddings lookup or store): the cache refuses more with INVALID_ARGUMENT, and its clients split
# larger calls into chunks of at most this many.
CACHE_MAX_BATCH = 1024

# NOTE: google.protobuf.Duration's own bounds (about 10,000 years; nanos of the same sign as seconds).
_MAX_DURATION_S = 315_576_000_000


def check_duration(field: str, value: Duration) -> None:
    """Refuses a Duration outside protobuf's own bounds (JSON encoding and key hashing reject it)."""
    if abs(value.seconds) > _MAX_DURATION_S or abs(value.nanos) > 999_999_999:
        raise InvalidArgument(field, "not a valid duration (out of range)")
    if (value.seconds > 0 and value.nanos < 0) or (value.seconds < 0 and value.nanos > 0):
        raise InvalidArgument(field, "not a valid duration (seconds and nanos differ in sign)")


def check_keep_alive(field: str, spec: common_pb2.GenerateSpec | common_pb2.ChatSpec) -> None:
    """keep_alive may be negative (Ollama: keep loaded forever) but must be a valid Duration."""
    if spec.HasField("keep_alive"):
        check_duration(field, spec.keep_alive)


@dataclass(frozen=True)
class _Malformed:
    """Stands in for a request message whose bytes did not parse."""

    problem: str


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = type_name.full_name if type_name is not None else "the request message"

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            detail = str(exc).split(":")[-1].strip() or type(exc).__name__
            return _Malformed(f"not a valid {name} ({detail})")

    return parse


def _check(request: Any) -> None:
    if isinstance(request, _Malformed):
        raise InvalidArgument("request", request.problem, reason="MALFORMED_REQUEST")


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        _check(request)
        yield request


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Parses requests leniently and answers bytes that are not the method's message with INVALID_ARGUMENT.

    NOTE: grpcio answers a request it cannot deserialize with UNKNOWN and the DecodeError's text;
    this sits inside the error interceptor so the InvalidArgument it raises gets the usual rich
    status (reason MALFORMED_REQUEST, field "request").
    """

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        # NOTE: health's Watch writes with context.write instead of yielding: wrapped as a generator,
        # every Watch failed with UNKNOWN.
        if handler_call_details.method.startswith("/grpc.health.v1."):
            return handler
        safe = _safe(handler.request_deserializer)
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                _check(request)
                return await inner_uu(request, context)

            return handler._replace(request_deserializer=safe, unary_unary=unary_unary)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                _check(request)
                async for item in inner_us(request, context):
                    yield item

            return handler._replace(request_deserializer=safe, unary_stream=unary_stream)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return await inner_su(_checked(requests), context)

            return handler._replace(request_deserializer=safe, stream_unary=stream_unary)
        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async for item in inner_ss(_checked(requests), context):
                yield item

        return handler._replace(request_deserializer=safe, stream_stream=stream_stream)
