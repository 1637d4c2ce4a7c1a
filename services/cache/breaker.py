"""A small circuit breaker per store: after a failure, skip the store for a while, then try again."""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    """Closed (use the store), open (skip it) or half-open (let one call through to test it).

    Shaped after Hystrix's/Envoy's breakers, cut down to what a fail-open cache needs:
    `failure_threshold` consecutive failures open it (a dead store must cost nothing per lookup, but
    one slow answer on a busy machine should not take a tier out for a whole period), and a success
    closes it. While open, one call per `open_s` is let through to find out whether the store is back.

    Attributes:
        failures: Failures seen since the start.
        opened: Times it went from closed to open.
        trials: Calls let through while open.
    """

    def __init__(
        self, open_s: float, failure_threshold: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._open_s = open_s
        self._threshold = failure_threshold
        self._consecutive = 0
        self._clock = clock
        self._open = False
        self._retry_at = 0.0
        self.failures = 0
        self.opened = 0
        self.trials = 0

    @property
    def degraded(self) -> bool:
        """True while the store is considered down."""
        return self._open

    def allow(self) -> bool:
        """Whether to call the store now (an open breaker lets one trial call through per period)."""
        if not self._open:
            return True
        now = self._clock()
        if now >= self._retry_at:
            self._retry_at = now + self._open_s
            self.trials += 1
            return True
        return False

    def success(self) -> None:
        """The store answered: close."""
        self._open = False
        self._consecutive = 0

    def failure(self) -> None:
        """The store failed or was too slow: open (or stay open) for `open_s` once enough failed in a row."""
        self.failures += 1
        self._consecutive += 1
        if not self._open and self._consecutive < self._threshold:
            return
        if not self._open:
            self.opened += 1
        self._open = True
        self._retry_at = self._clock() + self._open_s

    def trip(self) -> None:
        """Opens at once (a health probe found the store down)."""
        self._consecutive = max(self._consecutive, self._threshold - 1)
        self.failure()
