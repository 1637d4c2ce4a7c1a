"""Fan-out of score messages to many subscribers, where a slow subscriber never blocks the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Message = TypeVar("Message")


class _Resync:
    """Queue marker: the subscriber fell behind; send it a fresh snapshot instead of the backlog."""


_RESYNC = _Resync()


class _Closed:
    """Queue marker: the hub is closing."""


_CLOSED = _Closed()


class HubClosed(Exception):
    """The hub closed (the service is shutting down)."""


class Subscription(Generic[Message]):
    """One subscriber's bounded queue. Iterate with `await next_message()`."""

    def __init__(self, hub: Hub[Message], name: str, queue_size: int) -> None:
        self.name = name
        self._hub = hub
        self._queue: asyncio.Queue[Message | _Resync | _Closed] = asyncio.Queue(maxsize=queue_size)
        self._resync_pending = False
        self._floor_version = -1
        self.resyncs = 0

    def offer(self, message: Message) -> None:
        """Queues a message without ever waiting; on overflow the backlog becomes one resync."""
        if self._resync_pending:
            # NOTE: the snapshot built when the subscriber catches up covers this message.
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(_RESYNC)
            self._resync_pending = True
            self.resyncs += 1
            logger.warning("subscriber %s fell behind; it will get a fresh snapshot", self.name)

    def close(self) -> None:
        """Ends the subscription: the reader gets HubClosed once the queue is drained of it."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)

    def started_from(self, snapshot: Message) -> Message:
        """Records the snapshot the subscriber now holds; older updates will be skipped."""
        version = self._hub.version_of(snapshot)
        if version is not None:
            self._floor_version = version
        return snapshot

    async def next_message(self) -> Message:
        """The next message; a snapshot when the subscriber fell behind. Raises HubClosed at shutdown."""
        while True:
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._queue.put_nowait(item)
                raise HubClosed()
            if isinstance(item, _Resync):
                self._resync_pending = False
                return self.started_from(self._hub.snapshot())
            version = self._hub.version_of(item)
            if version is not None and version <= self._floor_version:
                continue  # already contained in the snapshot the subscriber holds
            return item

    def unsubscribe(self) -> None:
        """Leaves the hub."""
        self._hub.remove(self)


class Hub(Generic[Message]):
    """Publishes messages to every subscriber's queue; `snapshot` builds the full state on demand.

    Args:
        snapshot: Builds the full state (it may publish pending changes first).
        queue_size: Messages buffered per subscriber.
        version_of: The version a message brings a subscriber to, or None for messages that are
            always delivered (heartbeats); updates not newer than a subscriber's snapshot are skipped.
    """

    def __init__(
        self,
        snapshot: Callable[[], Message],
        queue_size: int,
        version_of: Callable[[Message], int | None] = lambda message: None,
    ) -> None:
        self.snapshot = snapshot
        self.version_of = version_of
        self._queue_size = queue_size
        self._subscribers: set[Subscription[Message]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def resyncs(self) -> dict[str, int]:
        """Per subscriber name, how many times it fell behind and was resynced (for operators and tests)."""
        return {sub.name: sub.resyncs for sub in self._subscribers}

    def subscribe(self, name: str) -> tuple[Subscription[Message], Message]:
        """Registers a subscriber and returns it with the snapshot it starts from (atomically)."""
        if self._closed:
            raise HubClosed()
        sub: Subscription[Message] = Subscription(self, name, self._queue_size)
        # NOTE: snapshot first: building it may publish pending changes, which it already contains.
        snapshot = sub.started_from(self.snapshot())
        self._subscribers.add(sub)
        return sub, snapshot

    def remove(self, sub: Subscription[Message]) -> None:
        """Drops a subscriber."""
        self._subscribers.discard(sub)

    def publish(self, message: Message) -> None:
        """Offers the message to every subscriber; never waits."""
        for sub in list(self._subscribers):
            sub.offer(message)

    def close(self) -> None:
        """Ends every subscription (shutdown)."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.close()
