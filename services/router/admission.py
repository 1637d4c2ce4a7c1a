"""The admission queue: requests wait here while every node that could serve them is full.

When the balancer has no candidate because every eligible node is at its in-flight limit, the
request does not fail at once: it waits for a slot, up to its own deadline and at most
`max_wait_s`. The queue is bounded (`max_waiting`); a request beyond the bound is refused at once
with RESOURCE_EXHAUSTED (HTTP 503 with `Retry-After`).

Order: user requests before background (prewarm) requests; within a class, round robin between
tenants, each tenant's requests first in, first out. A full queue makes room for a tenant with
fewer waiters than the busiest one by refusing the busiest tenant's newest waiter (the
"longest queue drop" of fair queueing), and for a user request by refusing the newest background
waiter, so one tenant's burst cannot lock the others out.

Waiters are woken by `release` (a node slot was freed), one per slot, never by polling. A granted
waiter that can no longer use the slot hands the grant on (`rewait` or `leave`); one that passes a
free slot over to wait for a faster full node offers it once to the newest waiter, which has the
whole queue ahead of it (`rewait(passing_over=True)`). Pure asyncio
logic, no I/O: services/router/forward.py wires it to the score board.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.errors import DeadlineExceeded, ResourceExhausted

Clock = Callable[[], float]

# Refusal reasons (the `reason` label of corral_router_admission_refusals).
QUEUE_FULL = "queue_full"
QUEUE_TIMEOUT = "queue_timeout"
DEADLINE = "deadline"
DISPLACED = "displaced"


class Saturated(ResourceExhausted):
    """Every node that could serve the request is full and the request could not wait for one.

    Attributes:
        retry_after_s: Seconds after which a retry may find room (HTTP `Retry-After`).
    """

    default_reason = "SATURATED"

    def __init__(self, message: str, *, retry_after_s: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


@dataclass(slots=True, eq=False)
class Waiter:
    """One request waiting for a node slot.

    Attributes:
        tenant: The tenant it acts for.
        background: A background (prewarm) request: served after every user request.
        model: The model it needs; a freed slot goes only to a waiter whose model the node serves.
        future: Resolved when it is granted a slot (or refused).
        seq: Its place in arrival order (the newest waiter has the highest).
        granted: A slot was handed to it and it has not taken or passed it on yet.
        ahead: When granted, the requests for its model still queued ahead of it (0 for the
            next in turn; the queue's length for the newest waiter offered a passed-over slot).
        passed_over: It was granted a slot that an earlier waiter passed over (see `rewait`).
        accepts: When granted, which models the freed slot's node serves.
    """

    tenant: str
    background: bool
    model: str
    future: asyncio.Future[None] = field(repr=False)
    seq: int = 0
    granted: bool = False
    ahead: int = 0
    passed_over: bool = False
    accepts: Callable[[str], bool] | None = field(default=None, repr=False)


class _Class:
    """One priority class: a FIFO per tenant, tenants served in turn."""

    def __init__(self) -> None:
        self.tenants: OrderedDict[str, deque[Waiter]] = OrderedDict()
        self.models: dict[str, int] = {}  # waiters per model

    def __len__(self) -> int:
        return sum(len(q) for q in self.tenants.values())

    def add(self, waiter: Waiter, front: bool = False) -> None:
        queue = self.tenants.get(waiter.tenant)
        if queue is None:
            queue = self.tenants[waiter.tenant] = deque()
            if front:
                self.tenants.move_to_end(waiter.tenant, last=False)
        if front:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)
        self.models[waiter.model] = self.models.get(waiter.model, 0) + 1

    def _uncount(self, waiter: Waiter) -> None:
        left = self.models[waiter.model] - 1
        if left:
            self.models[waiter.model] = left
        else:
            del self.models[waiter.model]

    def remove(self, waiter: Waiter) -> bool:
        queue = self.tenants.get(waiter.tenant)
        if queue is None or waiter not in queue:
            return False
        queue.remove(waiter)
        if not queue:
            del self.tenants[waiter.tenant]
        self._uncount(waiter)
        return True

    def take(self, accepts: Callable[[str], bool]) -> Waiter | None:
        """The next waiter in turn whose model `accepts` takes; its tenant goes to the back."""
        for tenant, queue in self.tenants.items():
            chosen = next((w for w in queue if accepts(w.model)), None)
            if chosen is None:
                continue
            queue.remove(chosen)
            self._uncount(chosen)
            if queue:
                self.tenants.move_to_end(tenant)
            else:
                del self.tenants[tenant]
            return chosen
        return None

    def take_newest(self, accepts: Callable[[str], bool], besides: Waiter) -> Waiter | None:
        """The newest waiter other than `besides` whose model `accepts` takes, out of the queue."""
        newest: Waiter | None = None
        for queue in self.tenants.values():
            for waiter in reversed(queue):
                if waiter is not besides and accepts(waiter.model):
                    if newest is None or waiter.seq > newest.seq:
                        newest = waiter
                    break
        if newest is not None:
            self.remove(newest)
        return newest

    def busiest(self) -> tuple[str, int]:
        """The tenant with the most waiters and its count ("", 0 when empty)."""
        if not self.tenants:
            return "", 0
        tenant = max(self.tenants, key=lambda t: len(self.tenants[t]))
        return tenant, len(self.tenants[tenant])


class AdmissionQueue:
    """A bounded, tenant-fair queue of requests waiting for a node slot.

    Args:
        max_waiting: Most requests waiting at once; 0 refuses at once (no queue).
        max_wait_s: Longest wait of one request, whatever its deadline.
        retry_after_s: The `Retry-After` a refusal suggests.
        clock: Monotonic time (tests pass their own).
    """

    def __init__(
        self, max_waiting: int, max_wait_s: float, retry_after_s: float, clock: Clock = time.monotonic
    ) -> None:
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._user = _Class()
        self._background = _Class()
        # NOTE: granted waiters still hold their model's turn until they resume and take the slot,
        # so a request arriving meanwhile cannot take that slot from under them.
        self._granted: dict[str, int] = {}
        self._seq = 0
        self.waits = 0
        self.admitted = 0
        self.wait_s_total = 0.0
        self.refusals: dict[str, int] = {}

    # --- state ------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests waiting (not yet granted)."""
        return len(self._user) + len(self._background)

    def depth_of(self, tenant: str) -> int:
        """Requests of one tenant waiting."""
        return sum(len(c.tenants.get(tenant, ())) for c in (self._user, self._background))

    def holds(self, model: str, background: bool) -> bool:
        """True when a newcomer for `model` must queue behind earlier waiters instead of picking.

        A user request queues behind waiting user requests and granted waiters of the same model;
        a background request also behind waiting background requests.
        """
        if self._granted.get(model, 0) > 0 or self._user.models.get(model, 0) > 0:
            return True
        return background and self._background.models.get(model, 0) > 0

    def waiting(self, model: str) -> int:
        """User requests for `model` queued or granted a slot: ahead of a user request arriving now."""
        return self._user.models.get(model, 0) + self._granted.get(model, 0)

    def granting(self, model: str) -> bool:
        """A slot was handed to a waiter for `model` that has not taken it yet."""
        return self._granted.get(model, 0) > 0

    # --- waiting ----------------------------------------------------------------------------
    async def wait(self, tenant: str, model: str, background: bool, deadline: float | None) -> Waiter:
        """Waits for a slot; returns the granted waiter (pass it to `taken`, `rewait` or `leave`).

        Raises:
            Saturated: The queue is full, the wait reached `max_wait_s`, or a fairer waiter
                displaced this one.
            DeadlineExceeded: The request's own deadline passed while it waited.
        """
        loop = asyncio.get_running_loop()
        self._seq += 1
        waiter = Waiter(tenant, background, model, loop.create_future(), seq=self._seq)
        self._admit(waiter)
        self.waits += 1
        return await self._await(waiter, deadline)

    async def rewait(self, waiter: Waiter, deadline: float | None, passing_over: bool = False) -> Waiter:
        """A granted waiter that did not take a slot waits again, in its place.

        `passing_over`: a slot was free but the waiter prefers to wait for a full node (a faster
        one). The slot is then offered to the newest waiter whose model its node serves, which has
        the whole queue ahead of it and may be better off there; offered once, so a slot every
        waiter passes over stays free for the next newcomer.
        """
        accepts, offered_on = waiter.accepts, waiter.passed_over
        self._ungrant(waiter)
        waiter.future = asyncio.get_running_loop().create_future()
        # NOTE: the next in turn goes back to the head of its tenant's queue; the newest, offered a
        # passed-over slot, back to the tail.
        self._class(waiter).add(waiter, front=not offered_on)
        if passing_over and not offered_on and accepts is not None:
            newest = self._class(waiter).take_newest(accepts, besides=waiter)
            if newest is not None:
                self._grant(newest, accepts, ahead=self.waiting(newest.model), passed_over=True)
        return await self._await(waiter, deadline)

    async def _await(self, waiter: Waiter, deadline: float | None) -> Waiter:
        started = self._clock()
        limit = started + self.max_wait_s
        by_deadline = deadline is not None and deadline < limit
        end = deadline if by_deadline and deadline is not None else limit
        try:
            async with asyncio.timeout(max(0.0, end - self._clock())):
                await asyncio.shield(waiter.future)
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled():
                # NOTE: granted (or displaced) in the same turn as the timeout: that answer wins.
                error = waiter.future.exception()
                if error is not None:
                    raise error from None
                self.wait_s_total += self._clock() - started
                return waiter
            self._abandon(waiter)
            if by_deadline:
                self._refused(DEADLINE)
                raise DeadlineExceeded(
                    "the deadline passed while the request waited for a free node slot"
                ) from None
            self._refused(QUEUE_TIMEOUT)
            raise Saturated(
                f"every node serving model {waiter.model!r} stayed full for {self.max_wait_s:g} s "
                "while the request waited in the admission queue; retry later",
                retry_after_s=self.retry_after_s,
                reason="QUEUE_TIMEOUT",
            ) from None
        except BaseException:
            self._abandon(waiter)
            raise
        self.wait_s_total += self._clock() - started
        return waiter

    def _admit(self, waiter: Waiter) -> None:
        if self.depth < self.max_waiting:
            self._class(waiter).add(waiter)
            return
        victim = self._victim(waiter)
        if victim is None:
            self._refused(QUEUE_FULL)
            raise Saturated(
                f"every node serving model {waiter.model!r} is full and the admission queue holds "
                f"{self.depth} requests (max_waiting {self.max_waiting}); retry later",
                retry_after_s=self.retry_after_s,
                reason="QUEUE_FULL",
            )
        self._class(victim).remove(victim)
        self._refused(DISPLACED)
        victim.future.set_exception(
            Saturated(
                "the admission queue is full and this request made room for another tenant's; retry later",
                retry_after_s=self.retry_after_s,
                reason="QUEUE_FULL",
            )
        )
        self._class(waiter).add(waiter)

    def _victim(self, newcomer: Waiter) -> Waiter | None:
        """The waiter a full queue refuses to make room for `newcomer`, or None to refuse it."""
        if not newcomer.background and len(self._background):
            tenant, _ = self._background.busiest()
            return self._background.tenants[tenant][-1]
        own = self._class(newcomer)
        tenant, count = own.busiest()
        if count > len(own.tenants.get(newcomer.tenant, ())) + 1:
            return own.tenants[tenant][-1]
        return None

    # --- slots ------------------------------------------------------------------------------
    def release(self, accepts: Callable[[str], bool] = lambda model: True) -> bool:
        """A node slot was freed: grants it to the next waiter whose model `accepts` takes.

        User waiters come first, then background ones; returns False when nobody could use it.
        """
        for klass in (self._user, self._background):
            waiter = klass.take(accepts)
            if waiter is not None:
                self._grant(waiter, accepts)
                return True
        return False

    def _grant(
        self, waiter: Waiter, accepts: Callable[[str], bool], ahead: int = 0, passed_over: bool = False
    ) -> None:
        waiter.granted = True
        waiter.ahead = ahead
        waiter.passed_over = passed_over
        waiter.accepts = accepts
        self._granted[waiter.model] = self._granted.get(waiter.model, 0) + 1
        waiter.future.set_result(None)

    def taken(self, waiter: Waiter) -> None:
        """The granted waiter took its slot."""
        if self._ungrant(waiter):
            self.admitted += 1

    def leave(self, waiter: Waiter) -> None:
        """The granted waiter will not take its slot: the grant goes to the next waiter."""
        if self._ungrant(waiter):
            self.release()

    def _ungrant(self, waiter: Waiter) -> bool:
        if not waiter.granted:
            return False
        waiter.granted = False
        waiter.accepts = None
        left = self._granted.get(waiter.model, 0) - 1
        if left > 0:
            self._granted[waiter.model] = left
        else:
            self._granted.pop(waiter.model, None)
        return True

    def _abandon(self, waiter: Waiter) -> None:
        """A waiter stops waiting (timeout, cancellation): out of the queue, its grant passed on."""
        self._class(waiter).remove(waiter)
        if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
            self.leave(waiter)
        elif not waiter.future.done():
            waiter.future.cancel()

    def _class(self, waiter: Waiter) -> _Class:
        return self._background if waiter.background else self._user

    def _refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1


def retry_after_header(seconds: float) -> str:
    """A `Retry-After` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
