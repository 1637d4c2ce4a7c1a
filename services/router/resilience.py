"""Named resilience pieces: retry budget, TTFT timeout, stall watch, concurrency limit, background gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common.errors import ResourceExhausted, Unavailable
from services.router.config import RetryBudgetConfig
from services.router.learning import StallBound, StallLearner, StallStats, is_stall

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


class StallWatch:
    """Watches one streamed attempt for a stall: a wait for the next chunk beyond the learned bound.

    The transport calls `start` before it sends the request, `chunk` when a chunk arrives and
    `waiting` when it asks for the next one, so only the time spent waiting on the node counts,
    not the time the caller takes with a chunk. Each wait is learned (the first one only when the
    model was loaded). The wait is declared a stall when it exceeds the bound of its phase and the
    node sent this router no chunk on any stream for as long; the watch then cancels the waiting
    task, and the transport turns that cancellation into a NodeError (see `claim`). One timer per
    attempt, re-armed only when it fires early: a chunk costs a few attribute writes.

    Args:
        learner: Where the pace is learned and the node's last chunk recorded.
        node_id: The node of the attempt.
        stats: The learned pace of the model on that node.
        first: The bound of the wait for the first chunk.
        gap: The bound of a wait between two chunks.
        learn_first: Learn the first wait (False when the model had to be loaded).
        prompt_chars: The size of the attempt's prompt, learned with its first wait.
    """

    __slots__ = (
        "_bounds",
        "_chunks",
        "_handle",
        "_learn_first",
        "_learner",
        "_loop",
        "_node_id",
        "_prompt_chars",
        "_since",
        "_stats",
        "_task",
        "_waiting",
        "first_wait_s",
        "stalled",
        "waited_s",
    )

    def __init__(
        self,
        learner: StallLearner,
        node_id: str,
        stats: StallStats,
        first: StallBound,
        gap: StallBound,
        learn_first: bool,
        prompt_chars: int = 0,
    ) -> None:
        self._learner = learner
        self._prompt_chars = prompt_chars
        self._node_id = node_id
        self._stats = stats
        self._bounds = (first, gap)
        self._learn_first = learn_first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._since = 0.0
        self._waiting = False
        self._chunks = 0
        self.stalled = False
        self.waited_s = 0.0
        self.first_wait_s = 0.0

    @property
    def bound(self) -> StallBound:
        """The bound of the current phase."""
        return self._bounds[1 if self._chunks else 0]

    @property
    def phase(self) -> str:
        """ "first_chunk" before the first chunk, else "between_chunks"."""
        return "between_chunks" if self._chunks else "first_chunk"

    def start(self) -> None:
        """The attempt is about to be sent: the wait for the first chunk begins (call from its task)."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.waiting()

    def waiting(self) -> None:
        """The transport waits for the next chunk."""
        assert self._loop is not None
        self._since = self._loop.time()
        self._waiting = True
        bound = self.bound
        if bound.learned and self._handle is None:
            self._handle = self._loop.call_at(self._since + bound.seconds, self._fire)

    def chunk(self) -> None:
        """A chunk arrived: learns the wait and records the node as alive."""
        assert self._loop is not None
        now = self._loop.time()
        waited = now - self._since
        if self._chunks:
            self._learner.gap(self._stats, waited)
        else:
            self.first_wait_s = waited
            if self._learn_first:
                self._learner.first_chunk(self._stats, waited, self._prompt_chars)
        self._learner.active[self._node_id] = now
        self._chunks += 1
        self._waiting = False

    def close(self) -> None:
        """The attempt ended: stops the timer (and a stall being confirmed: the task goes on)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._waiting = False
        self._task = None

    def claim(self) -> bool:
        """After a CancelledError in the attempt: True when it was this watch's (a stall).

        False means the caller was cancelled (too), and the CancelledError must go on.
        """
        return self.stalled and self._task is not None and self._task.uncancel() == 0

    def _fire(self) -> None:
        self._handle = None
        if self._stalled_for() is not None:
            # NOTE: a chunk that arrived in this same turn of the loop has woken the task but not yet
            # reached `chunk`: the stall is declared one turn later, if the wait is still on.
            assert self._loop is not None
            self._loop.call_soon(self._confirm)

    def _confirm(self) -> None:
        waited = self._stalled_for()
        if waited is None:
            return
        assert self._task is not None
        self.stalled = True
        self.waited_s = waited
        self._task.cancel()

    def _stalled_for(self) -> float | None:
        """The current wait when it is a stall, else None (with the timer re-armed while one may come)."""
        if not self._waiting or self.stalled or self._task is None or self._loop is None:
            return None
        bound = self.bound
        if not bound.learned:
            return None
        now = self._loop.time()
        active = self._learner.active.get(self._node_id, 0.0)
        if is_stall(bound, now - self._since, now - active):
            return now - self._since
        # NOTE: a node that sends on other streams is alive: this attempt may wait in its queue.
        if self._handle is None:
            self._handle = self._loop.call_at(max(self._since, active) + bound.seconds, self._fire)
        return None


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
