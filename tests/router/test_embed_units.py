"""Unit tests of embedding coalescing: deadlines of the callers of one shared node call (no I/O)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from corral.v1 import router_service_pb2

from services.common.errors import DeadlineExceeded
from services.router.embed import Embedder
from services.router.scores import Attempt
from services.router.transport import NodeError


class _Transport:
    """Answers /api/embed after `delay_s`, or times out like the real transport at `timeout_s`."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[list[str], float]] = []

    async def call_json(self, address: str, path: str, body: dict[str, Any], timeout_s: float) -> Any:
        texts = list(body["input"])
        self.calls.append((texts, timeout_s))
        if timeout_s < self.delay_s:
            await asyncio.sleep(timeout_s)
            raise NodeError(Attempt.TIMEOUT, "timed out")
        await asyncio.sleep(self.delay_s)
        return {"embeddings": [[float(len(t))] for t in texts], "prompt_eval_count": len(texts)}


class _Forwarder:
    def __init__(self, transport: _Transport) -> None:
        self.transport = transport
        self.budget = SimpleNamespace(deposit=lambda: None)
        self.board = SimpleNamespace(begin=lambda *a: None, mark_missing=lambda *a: None)

    def allow_retry(self) -> bool:
        return False

    async def choose(self, *args: Any) -> Any:
        return SimpleNamespace(node_id="n1", address="http://127.0.0.1:1")

    def finish_attempt(self, *args: Any, **kwargs: Any) -> None:
        pass

    def check_client_error(self, err: NodeError, field: str) -> None:
        pass


def _embedder(transport: _Transport) -> Embedder:
    return Embedder(
        _Forwarder(transport),  # type: ignore[arg-type]
        split_size=16,
        timeout_s=30.0,
        coalesce_size=5,
        coalesce_window_s=0.01,
    )


def _req(text: str) -> router_service_pb2.EmbedRequest:
    return router_service_pb2.EmbedRequest(model="e", inputs=[text])


async def test_a_short_deadline_fails_only_its_own_caller() -> None:
    transport = _Transport(delay_s=0.4)
    embedder = _embedder(transport)
    now = time.monotonic()
    short = asyncio.ensure_future(embedder.embed(_req("a"), "e", now + 0.2, False))
    long = asyncio.ensure_future(embedder.embed(_req("bbb"), "e", now + 5.0, False))
    results = await asyncio.gather(short, long, return_exceptions=True)
    assert isinstance(results[0], DeadlineExceeded)
    assert isinstance(results[1], router_service_pb2.EmbedResponse)
    assert [list(e.values) for e in results[1].embeddings] == [[3.0]]
    # NOTE: one shared node call, under the later deadline.
    assert len(transport.calls) == 1
    assert transport.calls[0][0] == ["a", "bbb"]
    assert transport.calls[0][1] > 4.0


async def test_a_call_with_too_little_time_left_is_sent_alone() -> None:
    transport = _Transport(delay_s=0.0)
    embedder = _embedder(transport)
    now = time.monotonic()
    # NOTE: 50 ms is more than twice the window but below the floor: sent alone, at once.
    short = asyncio.ensure_future(embedder.embed(_req("a"), "e", now + 0.05, False))
    long = asyncio.ensure_future(embedder.embed(_req("bbb"), "e", now + 5.0, False))
    await asyncio.gather(short, long)
    assert sorted(texts for texts, _ in transport.calls) == [["a"], ["bbb"]]


@pytest.mark.parametrize("delay_s", [0.0, 0.05])
async def test_callers_of_a_shared_call_get_their_own_vectors(delay_s: float) -> None:
    transport = _Transport(delay_s=delay_s)
    embedder = _embedder(transport)
    now = time.monotonic()
    replies = await asyncio.gather(*(embedder.embed(_req("x" * n), "e", now + 5.0, False) for n in (1, 2, 3)))
    assert [[list(e.values) for e in r.embeddings] for r in replies] == [[[1.0]], [[2.0]], [[3.0]]]
    assert len(transport.calls) == 1
