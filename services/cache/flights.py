"""Single-flight: concurrent identical misses wait for one leader's answer instead of going upstream."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from corral.v1 import cache_service_pb2


@dataclass
class _Flight:
    key: str
    token: str
    future: asyncio.Future[cache_service_pb2.CacheEntry | None]
    timer: asyncio.TimerHandle | None = None
    waiters: int = 0
    tokens: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Ticket:
    """The result of joining a flight: a leader gets a token, a waiter the leader's future."""

    token: str = ""
    future: asyncio.Future[cache_service_pb2.CacheEntry | None] | None = None


class Flights:
    """In-process single-flight keyed by the exact key (which includes the tenant).

    The first miss for a key leads: it gets a token and must Store or AbandonFlight. Later misses
    for the same key wait for the leader's answer. A leader that does neither loses its lease after
    `lease_s`, which releases the waiters (as misses) and lets the next lookup lead.
    """

    def __init__(self, lease_s: float) -> None:
        self._lease_s = lease_s
        self._by_key: dict[str, _Flight] = {}
        self._by_token: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def waiters(self, key: str) -> int:
        """Lookups waiting on the flight for `key` (0 when there is none)."""
        flight = self._by_key.get(key)
        return flight.waiters if flight is not None else 0

    def join(self, key: str) -> Ticket:
        """Leads a new flight for `key`, or joins the running one as a waiter."""
        flight = self._by_key.get(key)
        if flight is not None:
            flight.waiters += 1
            return Ticket(future=flight.future)
        loop = asyncio.get_running_loop()
        token = secrets.token_hex(16)
        flight = _Flight(key=key, token=token, future=loop.create_future())
        flight.timer = loop.call_later(self._lease_s, self._expire, token)
        self._by_key[key] = flight
        self._by_token[token] = flight
        return Ticket(token=token)

    def complete(self, key: str, token: str, entry: cache_service_pb2.CacheEntry) -> int:
        """Hands an answer to the flight for `key` (led by `token`, or by anyone); returns its waiters."""
        flight = self._by_token.get(token) if token else None
        if flight is None:
            flight = self._by_key.get(key)
        if flight is None:
            return 0
        return self._finish(flight, entry)

    def abandon(self, token: str) -> int | None:
        """Releases the waiters of the flight led by `token`; None when the token is unknown."""
        flight = self._by_token.get(token)
        if flight is None:
            return None
        return self._finish(flight, None)

    def _expire(self, token: str) -> None:
        flight = self._by_token.get(token)
        if flight is not None:
            self._finish(flight, None)

    def _finish(self, flight: _Flight, entry: cache_service_pb2.CacheEntry | None) -> int:
        if flight.timer is not None:
            flight.timer.cancel()
        self._by_key.pop(flight.key, None)
        self._by_token.pop(flight.token, None)
        if not flight.future.done():
            flight.future.set_result(entry)
        return flight.waiters

    def close(self) -> None:
        """Releases every flight (shutdown)."""
        for flight in list(self._by_key.values()):
            self._finish(flight, None)
