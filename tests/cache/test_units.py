"""Breaker, single-flight, micro-batching and the hashing embedder."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from corral.v1 import cache_service_pb2 as pb

from services.cache.breaker import Breaker
from services.cache.embedders import EmbedderError, HashingEmbedder, MicroBatcher, Vector
from services.cache.flights import Flights


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_on_failure_and_lets_one_trial_through_per_period() -> None:
    clock = FakeClock()
    breaker = Breaker(1.0, 1, clock)
    assert breaker.allow() and not breaker.degraded
    breaker.failure()
    assert breaker.degraded and not breaker.allow()
    clock.now = 1.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.success()
    assert not breaker.degraded and breaker.allow()
    assert breaker.opened == 1


def test_breaker_needs_consecutive_failures_to_open() -> None:
    breaker = Breaker(1.0, 3, FakeClock())
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert not breaker.degraded
    breaker.failure()
    assert breaker.degraded


async def test_flight_leader_then_waiters_get_the_answer() -> None:
    flights = Flights(lease_s=60)
    leader = flights.join("k")
    assert leader.token and leader.future is None
    waiters = [flights.join("k") for _ in range(3)]
    assert all(w.future is not None and not w.token for w in waiters)
    assert flights.waiters("k") == 3
    entry = pb.CacheEntry(payload=b"answer")
    assert flights.complete("k", leader.token, entry) == 3
    assert [await w.future for w in waiters if w.future] == [entry] * 3
    assert len(flights) == 0
    assert flights.join("k").token


async def test_abandon_releases_waiters_and_unknown_tokens_are_none() -> None:
    flights = Flights(lease_s=60)
    leader = flights.join("k")
    waiter = flights.join("k")
    assert flights.abandon(leader.token) == 1
    assert waiter.future is not None and await waiter.future is None
    assert flights.abandon(leader.token) is None


async def test_lease_expiry_releases_waiters() -> None:
    flights = Flights(lease_s=0.01)
    flights.join("k")
    waiter = flights.join("k")
    assert waiter.future is not None
    assert await asyncio.wait_for(waiter.future, 5) is None
    assert len(flights) == 0


async def test_micro_batcher_batches_by_size_and_by_window() -> None:
    calls: list[list[str]] = []

    async def batch_fn(texts: list[str]) -> list[Vector]:
        calls.append(texts)
        return [np.full(2, len(t), dtype=np.float32) for t in texts]

    batcher = MicroBatcher(batch_fn, batch_size=5, window_ms=5)
    vectors = await asyncio.gather(*(batcher.submit("x" * i, 5) for i in range(1, 13)))
    assert [len(c) for c in calls] == [5, 5, 2]
    assert [float(v[0]) for v in vectors] == list(range(1, 13))


async def test_micro_batcher_delivers_failures_to_every_waiter() -> None:
    async def batch_fn(texts: list[str]) -> list[Vector]:
        raise RuntimeError("node down")

    batcher = MicroBatcher(batch_fn, batch_size=3, window_ms=1)
    results = await asyncio.gather(*(batcher.submit("t", 5) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, EmbedderError) for r in results)


async def test_micro_batcher_times_out_a_waiter_without_breaking_the_batch() -> None:
    release = asyncio.Event()

    async def batch_fn(texts: list[str]) -> list[Vector]:
        await release.wait()
        return [np.ones(2, dtype=np.float32) for _ in texts]

    batcher = MicroBatcher(batch_fn, batch_size=2, window_ms=0)
    with pytest.raises(EmbedderError):
        await batcher.submit("a", 0.01)
    release.set()
    await batcher.close()


async def test_hashing_embedder_is_deterministic_and_lexical() -> None:
    embedder = HashingEmbedder(384)
    a = await embedder.embed("How do I enable TLS on nginx?", 1)
    b = await embedder.embed("how do i enable tls on nginx", 1)
    c = await embedder.embed("Bake a chocolate cake", 1)
    assert a.shape == (384,) and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert float(a @ b) > 0.99
    assert float(a @ c) < 0.5
