"""HTTP transport to the Ollama nodes: one pooled aiohttp session, NDJSON streaming, error kinds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from services.router.scores import Attempt

if TYPE_CHECKING:
    from services.router.resilience import StallWatch

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
_MAX_ERROR_BODY_BYTES = 64 * 1024
# NOTE: after the `done` line only the chunked body's terminator should follow; a node that sends more
# than this, or takes longer than the wait, loses its connection instead of returning it to the pool.
_MAX_TRAILING_BYTES = 64 * 1024
_TRAILING_WAIT_S = 1.0
_draining: set[asyncio.Task[None]] = set()


class NodeError(Exception):
    """One node attempt failed.

    Attributes:
        kind: How it failed (decides failover and what health hears).
        status: The HTTP status, 0 when there was none.
        message: The node's error text or the transport's.
        model_missing: The node answered 404 "model not found".
    """

    def __init__(self, kind: Attempt, message: str, status: int = 0, model_missing: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.model_missing = model_missing


async def _drain_and_release(resp: aiohttp.ClientResponse) -> None:
    """Reads the rest of a finished answer (the chunked terminator) so the connection can be reused."""
    left = _MAX_TRAILING_BYTES
    try:
        async with asyncio.timeout(_TRAILING_WAIT_S):
            while left > 0 and (data := await resp.content.readany()):
                left -= len(data)
    except (TimeoutError, aiohttp.ClientError, OSError):
        resp.close()
        return
    if resp.content.is_eof():
        resp.release()
    else:
        resp.close()


def _finish(resp: aiohttp.ClientResponse) -> None:
    """Returns the connection of a completed answer to the pool, draining its tail in the background."""
    if resp.content.is_eof():
        resp.release()
        return
    task = asyncio.get_running_loop().create_task(_drain_and_release(resp))
    _draining.add(task)
    task.add_done_callback(_draining.discard)


def _chunk(line: bytes, started: bool) -> dict[str, Any] | None:
    """One NDJSON line of a streamed answer as an object (None for a blank line).

    Raises:
        NodeError: MALFORMED for a line that is not a JSON object; for an `{"error"}` line, SERVER
            before the first chunk, STREAM_CUT after it.
    """
    if not line.strip():
        return None
    try:
        chunk = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise NodeError(Attempt.MALFORMED, "the node sent a line that is not JSON") from None
    if not isinstance(chunk, dict):
        raise NodeError(Attempt.MALFORMED, "the node sent a JSON line that is not an object")
    error = chunk.get("error")
    if error is not None:
        raise NodeError(Attempt.STREAM_CUT if started else Attempt.SERVER, str(error), 200)
    return chunk


def _unread_lines(content: aiohttp.StreamReader) -> list[bytes]:
    """The complete lines a broken response had received and not yet handed out.

    Every read of aiohttp's StreamReader raises its stored error first, so the bytes are taken from
    its buffer (`_buffer`, `_buffer_offset`: internals of the pinned aiohttp; none when they change).
    """
    buffer = getattr(content, "_buffer", None)
    if not buffer:
        return []
    data = b"".join(buffer)[getattr(content, "_buffer_offset", 0) :]
    return data.split(b"\n")[:-1]


async def _lines(content: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """The lines of a streamed response; when it breaks, the complete lines already received first.

    Raises:
        aiohttp.ClientPayloadError: after those lines, for a broken response.
    """
    try:
        async for line in content:
            yield line
    except aiohttp.ClientPayloadError:
        # NOTE: aiohttp raises a broken response's error before the lines still in its buffer;
        # without these, what a node sent just before it failed would be lost, and the answer
        # continued on another node from an earlier point.
        for line in _unread_lines(content):
            yield line
        raise


def _kind_for_status(status: int) -> Attempt:
    if status == 503:
        return Attempt.BUSY
    if status >= 500:
        return Attempt.SERVER
    return Attempt.CLIENT


async def _error_from_response(resp: aiohttp.ClientResponse) -> NodeError:
    raw = await resp.content.read(_MAX_ERROR_BODY_BYTES)
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            text = parsed["error"]
    except ValueError:
        pass
    missing = resp.status == 404 and "not found" in text
    return NodeError(_kind_for_status(resp.status), text or f"HTTP {resp.status}", resp.status, missing)


class NodeTransport:
    """Talks to the nodes over one aiohttp.ClientSession with a single pooled connector.

    aiohttp rather than httpx on the hot path: on these machines plain httpx's pool collapses to
    about 220 requests/s at concurrency 32 while aiohttp sustains about 4,000 (DESIGN.md); see
    docs/router.md for the router's own measurements.
    """

    def __init__(self, *, limit_per_host: int = 512, connect_timeout_s: float = 2.0) -> None:
        self._limit_per_host = limit_per_host
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Opens the session (call from the running event loop)."""
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._limit_per_host, keepalive_timeout=30.0, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            read_bufsize=1 << 20,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def settle(self) -> None:
        """Waits until finished answers whose tails were still arriving are back in the pool."""
        if _draining:
            await asyncio.gather(*_draining, return_exceptions=True)

    async def close(self) -> None:
        """Closes the session and its connections."""
        await self.settle()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session."""
        if self._session is None:
            raise RuntimeError("NodeTransport.start() was not called")
        return self._session

    def _timeout(self, read_s: float, deadline: float | None) -> aiohttp.ClientTimeout:
        total = None if deadline is None else max(0.001, deadline - time.monotonic())
        return aiohttp.ClientTimeout(total=total, sock_connect=self._connect_timeout_s, sock_read=read_s)

    async def stream(
        self,
        address: str,
        path: str,
        body: dict[str, Any],
        *,
        read_timeout_s: float,
        deadline: float | None,
        watch: StallWatch | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POSTs a streaming request and yields each NDJSON object.

        Args:
            address: The node's base URL.
            path: "/api/generate" or "/api/chat".
            body: The JSON body (with "stream": true).
            read_timeout_s: Longest wait for the first chunk and between chunks (the TTFT budget).
            deadline: time.monotonic() by which the whole answer must be in, or None.
            watch: Told of every wait for a chunk; a stall it declares ends the attempt sooner
                than `read_timeout_s` (TTFT_TIMEOUT before the first chunk, STREAM_CUT after it).

        Raises:
            NodeError: connection errors, non-200 statuses, an `{"error"}` line, malformed JSON,
                timeouts, stalls; `kind` says which and whether a chunk had arrived (STREAM_CUT).
        """
        started = False
        resp: aiohttp.ClientResponse | None = None
        completed = False
        if watch is not None:
            watch.start()
        try:
            resp = await self.session.post(
                address + path,
                data=orjson.dumps(body),
                headers=_JSON_HEADERS,
                timeout=self._timeout(read_timeout_s, deadline),
            )
            if resp.status != 200:
                raise await _error_from_response(resp)
            async with contextlib.aclosing(_lines(resp.content)) as lines:
                async for line in lines:
                    chunk = _chunk(line, started)
                    if chunk is None:
                        continue
                    if watch is not None:
                        watch.chunk()
                    started = True
                    # NOTE: set before the yield: callers stop iterating at the `done` chunk, and a
                    # completed answer's connection goes back to the pool instead of being closed.
                    completed = bool(chunk.get("done"))
                    yield chunk
                    if completed:
                        return
                    if watch is not None:
                        watch.waiting()
            raise NodeError(
                Attempt.STREAM_CUT if started else Attempt.MALFORMED, "the node closed the stream early"
            )
        except NodeError:
            raise
        except asyncio.CancelledError:
            if watch is None or not watch.claim():
                raise
            kind = Attempt.STREAM_CUT if started else Attempt.TTFT_TIMEOUT
            raise NodeError(
                kind, f"stalled: no chunk from the node for {watch.waited_s:.3g} s ({watch.phase})"
            ) from None
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline - 0.001:
                raise NodeError(Attempt.TIMEOUT, "the request deadline passed") from None
            kind = Attempt.STREAM_CUT if started else Attempt.TTFT_TIMEOUT
            raise NodeError(kind, f"no chunk from the node within {read_timeout_s:.3g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            kind = Attempt.STREAM_CUT if started else Attempt.CONNECTION
            raise NodeError(kind, f"{type(exc).__name__}: {exc}") from None
        finally:
            if watch is not None:
                watch.close()
            if resp is not None:
                if completed:
                    _finish(resp)
                else:
                    # NOTE: closing (not releasing) drops the connection, which is how a cancelled
                    # client call cancels the request on the node.
                    resp.close()

    async def call_json(
        self,
        address: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        timeout_s: float,
        method: str = "POST",
    ) -> Any:
        """Sends one non-streaming request and returns the parsed JSON reply.

        Raises:
            NodeError: as for `stream`, with TIMEOUT for the overall timeout.
        """
        try:
            async with self.session.request(
                method,
                address + path,
                data=None if body is None else orjson.dumps(body),
                headers=_JSON_HEADERS,
                timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._connect_timeout_s),
            ) as resp:
                if resp.status != 200:
                    raise await _error_from_response(resp)
                raw = await resp.read()
        except NodeError:
            raise
        except TimeoutError:
            raise NodeError(Attempt.TIMEOUT, f"no answer from the node within {timeout_s:.3g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise NodeError(Attempt.CONNECTION, f"{type(exc).__name__}: {exc}") from None
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise NodeError(Attempt.MALFORMED, "the node sent a body that is not JSON") from None


async def gather_json(
    transport: NodeTransport, requests: list[tuple[str, str]], timeout_s: float
) -> list[Any | None]:
    """GETs several (address, path) pairs at once; a failed one gives None."""

    async def one(address: str, path: str) -> Any | None:
        try:
            return await transport.call_json(address, path, None, timeout_s=timeout_s, method="GET")
        except NodeError:
            return None

    return list(await asyncio.gather(*(one(a, p) for a, p in requests)))
