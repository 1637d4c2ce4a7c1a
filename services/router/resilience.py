"""Named resilience pieces: retry budget, TTFT timeout, concurrency limit, background admission."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import ResourceExhausted, Unavailable
from services.router.config import RetryBudgetConfig

Clock = Callable[[], float]


class RetryBudget:
    """Finagle's RetryBudget: retries may add a share of recent requests plus a small floor.

    Every request deposits one token and every retry (a failover or a continuation) withdraws
    `1 / percent_can_retry` tokens; tokens expire after `ttl_s`. A reserve of
    `min_retries_per_s x ttl_s` retries is always allowed, so a quiet router can still retry,
    while during a fleet-wide outage retries stay at about 20 % of traffic instead of multiplying
    it (Finagle `RetryBudget.apply()`: ttl 10 s, minRetriesPerSec 10, percentCanRetry 0.2; Envoy's
    `retry_budget` has the same shape with budget_percent 20 % and min_retry_concurrency).
    """

    _BUCKETS = 20
    # NOTE: integer token arithmetic as in Finagle's TokenRetryBudget (scale 1000), so that 100
    # deposits of 20 % make exactly 20 retries.
    _SCALE = 1000

    def __init__(self, cfg: RetryBudgetConfig | None = None, clock: Clock = time.monotonic) -> None:
        cfg = cfg or RetryBudgetConfig()
        self._clock = clock
        self._bucket_s = cfg.ttl_s / self._BUCKETS
        self._deposit = round(cfg.percent_can_retry * self._SCALE)
        self._reserve = round(cfg.min_retries_per_s * cfg.ttl_s * self._SCALE)
        self._sums = [0] * self._BUCKETS
        self._stamps = [-1] * self._BUCKETS
        self.retries_allowed = 0
        self.retries_refused = 0

    def _slot(self) -> int:
        tick = int(self._clock() / self._bucket_s)
        index = tick % self._BUCKETS
        if self._stamps[index] != tick:
            self._stamps[index] = tick
            self._sums[index] = 0
        return index

    def _balance(self) -> int:
        tick = int(self._clock() / self._bucket_s)
        live = sum(s for s, t in zip(self._sums, self._stamps, strict=True) if tick - t < self._BUCKETS)
        return live + self._reserve

    def deposit(self) -> None:
        """Records one request (its first attempt)."""
        self._sums[self._slot()] += self._deposit

    def try_withdraw(self) -> bool:
        """Asks for one retry; True when the budget allows it (and charges it)."""
        if self._balance() >= self._SCALE:
            self._sums[self._slot()] -= self._SCALE
            self.retries_allowed += 1
            return True
        self.retries_refused += 1
        return False


@dataclass(frozen=True, slots=True)
class TtftTimeout:
    """Time-to-first-token budget of one attempt.

    A node that accepts a request and then says nothing (hung, or stuck behind a long queue) is
    left for another node after `timeout_s`; when the model must first be loaded the budget grows
    by `cold_extra_s`. The same limit applies to silence between two chunks of a stream.
    """

    timeout_s: float
    cold_extra_s: float

    def budget_s(self, loaded: bool, remaining_s: float | None, base_s: float | None = None) -> float:
        """The TTFT budget of an attempt, never beyond the request's remaining time.

        `base_s` replaces `timeout_s` for an attempt whose first byte is the whole answer (a
        non-streamed unary call).
        """
        budget = (self.timeout_s if base_s is None else base_s) + (0.0 if loaded else self.cold_extra_s)
        return budget if remaining_s is None else max(0.0, min(budget, remaining_s))


class ConcurrencyLimit:
    """At most `limit` requests in progress; more get RESOURCE_EXHAUSTED at once (no queue)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_progress = 0

    def acquire(self) -> None:
        """Takes a place or raises ResourceExhausted."""
        if self.in_progress >= self.limit:
            raise ResourceExhausted(
                f"the router has {self.in_progress} requests in progress (max_concurrent_requests "
                f"{self.limit}); retry later",
                reason="ROUTER_OVERLOADED",
            )
        self.in_progress += 1

    def release(self) -> None:
        """Gives the place back."""
        self.in_progress -= 1


class BackgroundGate:
    """Admission of background (prewarm) requests so that they yield to interactive traffic.

    Background requests run at most `max_inflight` at a time across the router, and the score board
    offers them only nodes with fewer than the node threshold of interactive requests in flight.
    When no node has room they wait for an interactive request to finish, up to `wait_s`, then fail
    with UNAVAILABLE. Interactive requests never wait for background ones.
    """

    def __init__(self, max_inflight: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(max_inflight)
        self._wait_s = wait_s
        self._room = asyncio.Event()

    async def enter(self, remaining_s: float | None) -> None:
        """Takes one of the background places, waiting for one up to the wait limit."""
        timeout = self._wait_s if remaining_s is None else min(self._wait_s, remaining_s)
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise Unavailable(
                "background request yielded to interactive traffic: no background place became free",
                reason="BACKGROUND_YIELDED",
            ) from None

    def leave(self) -> None:
        """Gives the background place back."""
        self._slots.release()

    def notify_room(self) -> None:
        """Wakes background requests waiting for a node (an interactive request finished)."""
        self._room.set()
        self._room = asyncio.Event()

    async def wait_for_room(self, timeout_s: float) -> bool:
        """Waits until an interactive request finishes; False on timeout."""
        if timeout_s <= 0:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._room.wait()
        except TimeoutError:
            return False
        return True
