"""In-router single-flight: identical concurrent requests share one upstream answer."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Collapses identical concurrent calls (Go's golang.org/x/sync/singleflight, per key).

    The first caller for a key becomes the leader and must `finish` (or `fail`) it; callers that
    arrive while the leader runs `wait` for its result instead of going upstream themselves.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def leader_or_flight(self, key: str) -> asyncio.Future[T] | None:
        """None when the caller is now the leader; else the running flight to wait for."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight
        self._flights[key] = asyncio.get_running_loop().create_future()
        return None

    def finish(self, key: str, result: T) -> None:
        """The leader's answer, handed to every waiter."""
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_result(result)

    def fail(self, key: str, error: BaseException) -> None:
        """The leader could not answer; waiters receive the error."""
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_exception(error)
            # NOTE: mark retrieved so that a flight nobody waited on does not log "never retrieved".
            flight.exception()

    @staticmethod
    async def wait(flight: asyncio.Future[T], timeout_s: float | None) -> T:
        """Waits for a flight without letting a cancelled waiter cancel it."""
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(flight)
