"""Streaming replies: the first chunk decides the status, later errors become a final error line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aiohttp import web
from corral.v1 import router_service_pb2 as rpb

from services.common import errors
from services.router.http import encode
from services.router.http.errors import ApiError, dumps

logger = logging.getLogger(__name__)

T = TypeVar("T")
CoreChunk = TypeVar("CoreChunk", rpb.ChatStreamResponse, rpb.GenerateStreamResponse)

NDJSON_CONTENT_TYPE = "application/x-ndjson"
SSE_CONTENT_TYPE = "text/event-stream"

# NOTE: a client that went away surfaces as one of these on write; the node request is then
# cancelled by closing the core's iterator.
_CLIENT_GONE: tuple[type[BaseException], ...] = (ConnectionResetError, ConnectionError)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class StreamWriter:
    """How one streaming protocol frames its chunks and its mid-stream error."""

    content_type = NDJSON_CONTENT_TYPE

    def frame(self, obj: dict[str, Any]) -> bytes:
        """One NDJSON line."""
        return (dumps(obj) + "\n").encode()

    def error_frame(self, message: str) -> bytes:
        """Ollama's final `{"error": ...}` line (no done line follows)."""
        return self.frame({"error": message})

    def trailer(self) -> bytes:
        """Bytes after the last chunk."""
        return b""


async def stream_reply(
    request: web.Request,
    chunks: AsyncIterator[T],
    *,
    render: Callable[[T], list[dict[str, Any]]],
    is_done: Callable[[T], bool],
    headers_of: Callable[[T], dict[str, str]],
    writer: StreamWriter,
    translate: Callable[[errors.CorralError], ApiError],
) -> web.StreamResponse:
    """Streams `chunks` to the client.

    An error before the first chunk propagates (the caller answers it with a proper status, as
    Ollama does before any byte is written); after it, the stream ends with the writer's error frame.

    Args:
        request: The HTTP request.
        chunks: The core's stream.
        render: Turns a chunk into the objects to send.
        is_done: True for the last chunk.
        headers_of: Extra response headers known from the first chunk.
        writer: The framing (NDJSON or SSE).
        translate: Maps a domain error to the client-facing message.
    """
    iterator = chunks.__aiter__()
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        await _close(iterator)
        raise ApiError(502, "the router produced an empty stream") from None
    except BaseException:
        await _close(iterator)
        raise
    response = web.StreamResponse(
        status=200, headers={"Content-Type": writer.content_type, **headers_of(first)}
    )
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        chunk = first
        while True:
            for obj in render(chunk):
                await response.write(writer.frame(obj))
            if is_done(chunk):
                break
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                await response.write(writer.error_frame("stream ended before the answer was complete"))
                break
            except errors.CorralError as exc:
                await response.write(writer.error_frame(translate(exc).message))
                break
        trailer = writer.trailer()
        if trailer and is_done(chunk):
            await response.write(trailer)
        await response.write_eof()
    except _CLIENT_GONE:
        logger.debug("client left during a stream")
    except Exception:
        logger.exception("stream failed")
        with contextlib.suppress(*_CLIENT_GONE, RuntimeError):
            await response.write(writer.error_frame("internal error"))
            await response.write_eof()
    finally:
        await _close(iterator)
    return response


async def stream_core_reply(
    request: web.Request,
    chunks: AsyncIterator[CoreChunk],
    *,
    render: Callable[[CoreChunk], list[dict[str, Any]]],
    writer: StreamWriter,
    translate: Callable[[errors.CorralError], ApiError],
) -> web.StreamResponse:
    """Streams the core's chat or generate chunks: the `done` chunk ends the stream and carries the
    routing headers, and an error before the first chunk is answered with `translate`'s status."""
    try:
        return await stream_reply(
            request,
            chunks,
            render=render,
            is_done=lambda c: c.done,
            headers_of=lambda c: encode.routing_headers(c.routing) if c.done else {},
            writer=writer,
            translate=translate,
        )
    except errors.CorralError as exc:
        raise translate(exc) from None
