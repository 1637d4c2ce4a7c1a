"""The router's near cache: hot exact-tier answers kept in process, dropped when the cache says so.

The cache service stays the owner of every answer. It publishes each exact-tier store and each
invalidation on a Redis pub/sub channel (services/cache/exact_store.py, EVENTS_CHANNEL); the near
cache subscribes and drops the entries an event names. While it is not subscribed (before the
first subscription, after a lost connection, until the next subscription is confirmed) it is empty
and serves nothing, so it never answers from an entry whose invalidation it may have missed.

Entries are the answers the cache itself served from its exact tier for the same tenant, request and
policy (the key is the router's flight key, which holds all three), each kept no longer than the
expiry the cache stored it with. Memory is bounded by bytes (least recently used first out).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.cache.exact_store import EVENTS_CHANNEL, connect
from services.cache.keys import normalise_model, normalise_tenant

logger = logging.getLogger(__name__)

# NOTE: what one entry costs beyond its payload and keys (the record, the dict and index slots).
ENTRY_OVERHEAD_BYTES = 256
# NOTE: events remembered to check a lookup's reply against what arrived while it was in flight.
_RECENT_EVENTS = 4096
_RECONNECT_MIN_S = 0.1
_RECONNECT_MAX_S = 5.0


@dataclass(slots=True)
class NearEntry:
    """One kept answer.

    Attributes:
        payload: The serialised answer (CacheEntry.payload).
        payload_type: Its message type name.
        tenant: The owning tenant as the cache names it (empty is "default").
        model: The model as the cache names it (":latest" added when missing).
        exact_key: The cache's exact key of the request.
        expires: Monotonic time after which the entry is never served.
        size: Bytes charged against the bound.
    """

    payload: bytes
    payload_type: str
    tenant: str
    model: str
    exact_key: str
    expires: float
    size: int


@dataclass(frozen=True, slots=True)
class Event:
    """A store or invalidation from the cache; None selects every tenant, model or key."""

    tenant: str | None
    model: str | None
    key: str | None

    def matches(self, entry: NearEntry) -> bool:
        """True when the event names this entry."""
        return (
            (self.key is None or self.key == entry.exact_key)
            and (self.tenant is None or self.tenant == entry.tenant)
            and (self.model is None or self.model == entry.model)
        )


def parse_event(raw: bytes | str) -> Event | None:
    """The event of one channel message (None for a message that is not one: it then clears all)."""
    try:
        data = json.loads(raw)
        fields = [data.get(name) for name in ("tenant", "model", "key")]
    except (ValueError, AttributeError):
        return None
    if not all(value is None or isinstance(value, str) for value in fields):
        return None
    return Event(*fields)


class NearCache:
    """Exact answers in process, bounded by `max_bytes`, live only while subscribed to the cache's events.

    Args:
        max_bytes: Most bytes held (payloads, keys and a fixed overhead per entry).
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        self._by_key: dict[str, set[str]] = {}
        self.bytes = 0
        # NOTE: False until subscribed; while False nothing is kept or served.
        self.live = False
        # NOTE: bumped by every event and every (re)subscription; a lookup's reply is only kept when
        # no event since its start names it (see `mark` and `put`).
        self.seq = 0
        self._recent: deque[tuple[int, Event | None]] = deque(maxlen=_RECENT_EVENTS)
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0
        self.invalidations = 0
        self.clears = 0
        self.subscriptions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self) -> int:
        """The position to pass to `put` for a reply to a lookup starting now."""
        return self.seq

    def get(self, near_key: str) -> NearEntry | None:
        """The live, unexpired entry under `near_key`, or None."""
        if not self.live:
            return None
        entry = self._entries.get(near_key)
        if entry is None:
            self.misses += 1
            return None
        if entry.expires <= self._clock():
            self._remove(near_key)
            self.expirations += 1
            self.misses += 1
            return None
        self._entries.move_to_end(near_key)
        self.hits += 1
        return entry

    def put(
        self,
        near_key: str,
        *,
        payload: bytes,
        payload_type: str,
        tenant: str,
        model: str,
        exact_key: str,
        ttl_s: float,
        since: int,
    ) -> bool:
        """Keeps an answer the cache served from its exact tier for `ttl_s` more seconds.

        `since` is `mark()` from before the lookup was sent: an answer that an event received
        meanwhile names (or that arrived across a resubscription) is not kept. Returns whether kept.
        """
        if not self.live or ttl_s <= 0 or not exact_key:
            return False
        tenant, model = normalise_tenant(tenant), normalise_model(model)
        size = len(payload) + len(payload_type) + len(near_key) + len(exact_key) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes or self._missed_since(since, tenant, model, exact_key):
            return False
        if near_key in self._entries:
            self._remove(near_key)
        entry = NearEntry(payload, payload_type, tenant, model, exact_key, self._clock() + ttl_s, size)
        self._entries[near_key] = entry
        self._by_key.setdefault(exact_key, set()).add(near_key)
        self.bytes += size
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        return True

    def _missed_since(self, since: int, tenant: str, model: str, exact_key: str) -> bool:
        if since == self.seq:
            return False
        if not self._recent or self._recent[0][0] > since + 1:
            return True  # NOTE: events since then were forgotten (or a resubscription came between).
        probe = NearEntry(b"", "", tenant, model, exact_key, 0.0, 0)
        for seq, event in reversed(self._recent):
            if seq <= since:
                break
            if event is None or event.matches(probe):
                return True
        return False

    def apply(self, event: Event | None) -> int:
        """Drops what an event names (None: everything); returns how many entries went."""
        self.seq += 1
        self._recent.append((self.seq, event))
        if event is None:
            removed = len(self._entries)
            self._drop_all()
        else:
            # NOTE: an event naming a key looks only at that key's entries (a store names one).
            candidates = self._entries if event.key is None else self._by_key.get(event.key, ())
            names = [n for n in candidates if event.matches(self._entries[n])]
            for name in names:
                self._remove(name)
            removed = len(names)
        self.invalidations += removed
        return removed

    def go_live(self) -> None:
        """Subscribed (again): starts empty, and no lookup sent before now may fill it."""
        self._reset()
        self.live = True
        self.subscriptions += 1

    def go_dark(self) -> None:
        """The subscription is lost: everything is dropped and nothing is served until `go_live`."""
        if self.live:
            self.clears += 1
        self.live = False
        self._reset()

    def _reset(self) -> None:
        self.seq += 1
        self._recent.clear()
        self._drop_all()

    def _drop_all(self) -> None:
        self._entries.clear()
        self._by_key.clear()
        self.bytes = 0

    def _remove(self, near_key: str) -> None:
        entry = self._entries.pop(near_key)
        self.bytes -= entry.size
        names = self._by_key.get(entry.exact_key)
        if names is not None:
            names.discard(near_key)
            if not names:
                del self._by_key[entry.exact_key]


class NearCacheSubscriber:
    """Keeps a NearCache subscribed to the cache's event channel, reconnecting when the link drops.

    Redis pings the subscription every `ping_interval_s`; a link that answers nothing for three
    intervals (a silent network split) counts as lost, like a closed connection.
    """

    def __init__(
        self, near: NearCache, url: str, password: str | None = None, ping_interval_s: float = 1.0
    ) -> None:
        self.near = near
        self._url = url
        self._password = password
        self._ping_interval_s = ping_interval_s

    async def run(self) -> None:
        """Subscribes until cancelled; the near cache is live only while the subscription holds."""
        delay = _RECONNECT_MIN_S
        while True:
            subscribed_before = self.near.subscriptions
            try:
                await self._listen()
            except asyncio.CancelledError:
                self.near.go_dark()
                raise
            except Exception as exc:
                if self.near.live:
                    logger.warning(
                        "near cache: event subscription lost (%r); cleared until resubscribed", exc
                    )
                else:
                    logger.debug("near cache: cannot subscribe: %r", exc)
            self.near.go_dark()
            # NOTE: a link that held reconnects at once; one that keeps failing backs off.
            delay = (
                _RECONNECT_MIN_S
                if self.near.subscriptions > subscribed_before
                else min(delay * 2, _RECONNECT_MAX_S)
            )
            await asyncio.sleep(delay)

    async def _listen(self) -> None:
        client = connect(self._url, self._password, socket_connect_timeout=max(1.0, self._ping_interval_s))
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(EVENTS_CHANNEL)
            loop = asyncio.get_running_loop()
            heard = loop.time()
            pinged = heard
            while True:
                message: dict[str, Any] | None = await pubsub.get_message(timeout=self._ping_interval_s)
                now = loop.time()
                if message is not None:
                    heard = now
                    self._handle(message)
                if now - heard > 3 * self._ping_interval_s:
                    raise ConnectionError("no reply from Redis to the subscription's pings")
                if now - pinged >= self._ping_interval_s:
                    pinged = now
                    await pubsub.ping()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            self.near.go_live()
            logger.info("near cache: subscribed to %s", EVENTS_CHANNEL)
        elif kind == "message":
            self.near.apply(parse_event(message["data"]))
