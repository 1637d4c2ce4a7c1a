"""How long a request waits for the cache's lookup before it goes on to a node as a miss.

A fixed budget is right for a cache that is slow because something is wrong with it, and wrong for
one that is slow because the host is busy. On a saturated host every lookup queues behind the
others: a 15 ms budget then gives up on answers the cache is about to send, each given-up hit
becomes a node call, the node calls take the CPU the cache needed, and the hit path turns into the
miss path (bench/results/router_overhead_default_budget.md: at 32 clients on 2 cores, 0-20 % of
the requests that the exact tier held were answered by it).

So the budget follows the cache while it answers: twice the 95th percentile of the recent lookups'
reply times (lookups that waited for a call slot past their budget count at the time they waited),
never under the configured budget and never over the ceiling. While at least as many of the recent
lookup calls got no reply (an error, or no answer before the ceiling) as got one, the cache is
treated as unwell rather than busy and the configured budget holds, so a hung cache costs each
request the configured budget, not the ceiling.
"""

from __future__ import annotations

from collections import deque

# NOTE: the reply times a budget is computed from, how often it is recomputed, and how many replies
# it needs before it moves at all. 256 lookups are well under a second at the rates where the budget
# matters and long enough that one slow reply does not move a 95th percentile.
WINDOW = 256
REFRESH_EVERY = 32
MIN_REPLIES = 32
QUANTILE = 0.95
FACTOR = 2.0


class LookupBudget:
    """The current lookup budget of one kind of lookup (exact or semantic), learned from replies.

    The lane reports every lookup: `replied` with the time from the request's ask to the cache's
    reply (the time the caller would have waited; replies that came after the caller gave up count
    too), `failed` when the call got no reply, and `unsent` when the lookup waited for a call slot
    longer than its budget and was never sent (it would have taken at least that long). `seconds` is
    the budget to give the next lookup.
    """

    def __init__(self, base_s: float, ceiling_s: float) -> None:
        if ceiling_s < base_s:
            raise ValueError(f"the lookup budget's ceiling ({ceiling_s}s) is below the budget ({base_s}s)")
        self.base_s = base_s
        self.ceiling_s = ceiling_s
        # NOTE: (seconds, answered): a reply's time, or an unsent lookup's budget as a lower bound
        # (answered None); (0, False) is a call without a reply.
        self._window: deque[tuple[float, bool | None]] = deque(maxlen=WINDOW)
        self._since_refresh = 0
        self._current = base_s

    @property
    def adaptive(self) -> bool:
        """False when the ceiling equals the configured budget (a fixed budget)."""
        return self.ceiling_s > self.base_s

    def seconds(self) -> float:
        """The budget for a lookup that starts now."""
        return self._current

    def replied(self, elapsed_s: float) -> None:
        """A lookup the cache answered, `elapsed_s` after the request asked."""
        self._add(elapsed_s, True)

    def failed(self) -> None:
        """A lookup call that got no reply (an error, or none before the ceiling)."""
        self._add(0.0, False)

    def unsent(self, waited_s: float) -> None:
        """A lookup that gave up after `waited_s` before a call slot was free."""
        self._add(waited_s, None)

    def _add(self, seconds: float, answered: bool | None) -> None:
        if not self.adaptive:
            return
        self._window.append((seconds, answered))
        self._since_refresh += 1
        if self._since_refresh >= REFRESH_EVERY:
            self._since_refresh = 0
            self._current = self._compute()

    def _compute(self) -> float:
        answered = sum(1 for _, ok in self._window if ok)
        failed = sum(1 for _, ok in self._window if ok is False)
        if answered < MIN_REPLIES or failed >= answered:
            return self.base_s
        times = sorted(t for t, ok in self._window if ok is not False)
        p95 = times[min(len(times) - 1, int(QUANTILE * len(times)))]
        return min(self.ceiling_s, max(self.base_s, FACTOR * p95))
