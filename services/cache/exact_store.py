"""Exact tier adapter: one Redis string per answer, with a TTL, under a per-tenant/model prefix."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

KEY_PREFIX = "cx"
# NOTE: answers waiting for their semantic entry (services/cache/backfill.py): one hash per answer,
# named like its exact entry under this prefix, and one sorted set of their names by when they came.
PENDING_PREFIX = "cxp"
PENDING_SET = "cxp-queue"
# NOTE: where the cache announces what changed in the exact tier, for the routers' near caches
# (services/router/near_cache.py): one JSON message {"tenant", "model", "key"} per store (all three
# set) and per invalidation (null selects every tenant, model or key).
EVENTS_CHANNEL = "corral:cache:events"
# NOTE: the Redis user the deployments give the routers' near caches (docker-compose.yml,
# deploy/kubernetes/base/stores.yaml): it may subscribe to EVENTS_CHANNEL and nothing else, so a
# router holds no password that reads, writes or publishes cached answers.
EVENTS_USER = "corral-events"
EVENTS_ACL = f"resetchannels &{EVENTS_CHANNEL} -@all +subscribe +unsubscribe +ping"
_SCAN_COUNT = 1000
_UNLINK_BATCH = 500

T = TypeVar("T")

# NOTE: strong references to commands left running after their caller gave up (see bounded()).
_orphans: set[asyncio.Task[object]] = set()


async def bounded(call: Awaitable[T], timeout_s: float) -> T:
    """Awaits a Redis call for at most `timeout_s`, without cancelling it on timeout.

    Cancelling a redis-py command mid-reply makes the client drop (disconnect) that pooled
    connection, so under load every missed deadline cost a reconnect. Left to finish instead, the
    command returns its connection to the pool; the caller gets TimeoutError at once.
    """
    task: asyncio.Task[T] = asyncio.ensure_future(call)
    done, _ = await asyncio.wait((task,), timeout=timeout_s)
    if done:
        return task.result()
    _orphans.add(task)
    task.add_done_callback(_forget)
    raise TimeoutError


def _forget(task: asyncio.Task[object]) -> None:
    _orphans.discard(task)
    if not task.cancelled():
        task.exception()  # NOTE: retrieved so that a late failure is not logged as never retrieved.


@lru_cache(maxsize=4096)
def _short(text: str) -> str:
    # NOTE: hashed so that tenant and model names never need escaping inside a SCAN pattern.
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def redis_key(tenant: str, model: str, key: str) -> str:
    """`cx:<tenant hash>:<model hash>:<exact key>`: invalidation by tenant or model is a prefix scan."""
    return f"{KEY_PREFIX}:{_short(tenant)}:{_short(model)}:{key}"


def event(tenant: str | None, model: str | None, key: str | None) -> bytes:
    """The EVENTS_CHANNEL message naming the entries of a store or an invalidation."""
    return json.dumps({"tenant": tenant, "model": model, "key": key}, separators=(",", ":")).encode()


def pending_key(tenant: str, model: str, key: str) -> str:
    """`cxp:<tenant hash>:<model hash>:<exact key>`: the answer's record while it waits for the backfill."""
    return f"{PENDING_PREFIX}:{_short(tenant)}:{_short(model)}:{key}"


def match_pattern(tenant: str | None, model: str | None, key: str | None, prefix: str = KEY_PREFIX) -> str:
    """The SCAN pattern of the entries selected by tenant, model and key (None matches any)."""
    return ":".join(
        [
            prefix,
            _short(tenant) if tenant is not None else "*",
            _short(model) if model is not None else "*",
            key if key is not None else "*",
        ]
    )


def connect(url: str, password: str | None = None, **options: Any) -> aioredis.Redis:
    """A Redis client as the cache builds it: no retries, no health-check pings, no CLIENT SETINFO
    round trips on new connections; `password`, when given, replaces the URL's. `options` go to
    `Redis.from_url` as well (timeouts, max_connections)."""
    client = aioredis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        driver_info=None,
        **options,
    )
    if password is not None:
        # NOTE: set on the pool, not passed to from_url, where a password in the URL would win.
        client.connection_pool.connection_kwargs["password"] = password
    return client


class ExactStore:
    """Redis GET/SET with no retries of its own: the engine bounds every call and fails open.

    Values are serialised CacheEntry messages; Redis expires them (PX) and its own eviction policy
    (allkeys-lru in the local stack) bounds memory.
    """

    def __init__(self, url: str, timeout_s: float, password: str | None = None) -> None:
        """Connects lazily to `url`; `password` (redis.password(_file)), when given, replaces the URL's."""
        # NOTE: short socket timeouts: a dead Redis must fail fast, the breaker then keeps lookups
        # away from it.
        self._redis = connect(
            url,
            password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=256,
        )
        self._gets: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._turn_open = False
        self._sending: set[asyncio.Task[None]] = set()

    async def get(self, tenant: str, model: str, key: str) -> bytes | None:
        """The stored value, or None.

        The first GET of an event-loop turn is sent at once; the GETs issued after it in the same
        turn (the other lookups of one LookupBatch, or Lookup calls that arrived together) leave at
        the end of the turn as one MGET: one command and one round trip instead of one per key,
        which is what the cache's CPU pays for under load, at no cost to a lone lookup.
        """
        name = redis_key(tenant, model, key)
        if not self._turn_open:
            self._turn_open = True
            asyncio.get_running_loop().call_soon(self._end_turn)
            value = await self._redis.get(name)
            return value.encode() if isinstance(value, str) else value
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._gets.append((name, future))
        return await future

    def _end_turn(self) -> None:
        self._turn_open = False
        if not self._gets:
            return
        batch, self._gets = self._gets, []
        task = asyncio.get_running_loop().create_task(self._send_gets(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_gets(self, batch: list[tuple[str, asyncio.Future[bytes | None]]]) -> None:
        try:
            if len(batch) == 1:
                values = [await self._redis.get(batch[0][0])]
            else:
                values = await self._redis.mget([name for name, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), value in zip(batch, values, strict=True):
            if not future.done():
                future.set_result(value.encode() if isinstance(value, str) else value)

    async def get_many(self, tenant: str, model: str, keys: Sequence[str]) -> list[bytes | None]:
        """The stored values of several keys of one tenant and model, in one MGET."""
        if not keys:
            return []
        values = await self._redis.mget([redis_key(tenant, model, key) for key in keys])
        return [value.encode() if isinstance(value, str) else value for value in values]

    async def put(self, tenant: str, model: str, key: str, value: bytes, ttl_s: float) -> None:
        """Stores a value for `ttl_s` seconds (at least 1 ms) and announces it on EVENTS_CHANNEL."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(redis_key(tenant, model, key), value, px=max(1, int(ttl_s * 1000)))
        pipe.publish(EVENTS_CHANNEL, event(tenant, model, key))
        await pipe.execute()

    async def put_many(
        self, items: Sequence[tuple[str, str, str, bytes, float]], announce: bool = False
    ) -> None:
        """Stores (tenant, model, key, value, ttl_s) items in one pipelined round trip; with `announce`
        (answers, not embeddings) each is announced on EVENTS_CHANNEL."""
        pipe = self._redis.pipeline(transaction=False)
        for tenant, model, key, value, ttl_s in items:
            pipe.set(redis_key(tenant, model, key), value, px=max(1, int(ttl_s * 1000)))
            if announce:
                pipe.publish(EVENTS_CHANNEL, event(tenant, model, key))
        await pipe.execute()

    async def delete_matching(
        self, tenant: str | None, model: str | None, key: str | None, prefix: str = KEY_PREFIX
    ) -> int:
        """Removes the selected entries (with PENDING_PREFIX: the answers waiting for the backfill).

        Removing answers (KEY_PREFIX) announces the selection on EVENTS_CHANNEL, after the removal,
        also when nothing was found: a router may still hold an entry Redis already expired or evicted.
        """
        removed = await self._delete_matching(tenant, model, key, prefix)
        if prefix == KEY_PREFIX:
            await self._redis.publish(EVENTS_CHANNEL, event(tenant, model, key))
        return removed

    async def _delete_matching(
        self, tenant: str | None, model: str | None, key: str | None, prefix: str
    ) -> int:
        if tenant is not None and model is not None and key is not None:
            name = redis_key(tenant, model, key) if prefix == KEY_PREFIX else pending_key(tenant, model, key)
            return int(await self._redis.unlink(name))
        removed = 0
        batch: list[bytes] = []
        pattern = match_pattern(tenant, model, key, prefix)
        async for name in self._redis.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(name)
            if len(batch) >= _UNLINK_BATCH:
                removed += int(await self._redis.unlink(*batch))
                batch = []
        if batch:
            removed += int(await self._redis.unlink(*batch))
        return removed

    async def add_pending(
        self, records: Sequence[tuple[str, dict[str, str | bytes], float]], score: float, max_pending: int
    ) -> int:
        """Keeps answers' records (name, fields, ttl_s) for their ttl_s and queues their names, in one
        round trip; past `max_pending` queued names the oldest go (their records too). Returns how many
        were dropped."""
        pipe = self._redis.pipeline(transaction=False)
        for name, fields, ttl_s in records:
            pipe.hset(name, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpire(name, max(1, int(ttl_s * 1000)))
        pipe.zadd(PENDING_SET, {name: score for name, _, _ in records})
        pipe.zcard(PENDING_SET)
        queued = int((await pipe.execute())[-1])
        if queued <= max_pending:
            return 0
        dropped: list[tuple[bytes, float]] = await self._redis.zpopmin(  # type: ignore[assignment]
            PENDING_SET, queued - max_pending
        )
        names = [member for member, _ in dropped]
        if names:
            await self._redis.unlink(*names)
        return len(names)

    async def oldest_pending(self, limit: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to `limit` queued names, oldest first, with their records ({} for one that expired)."""
        names: list[bytes] = await self._redis.zrange(PENDING_SET, 0, limit - 1)  # type: ignore[assignment]
        if not names:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        records = await pipe.execute()
        return list(zip(names, records, strict=True))

    async def drop_pending(self, names: Sequence[bytes]) -> None:
        """Removes answers from the queue with their records."""
        if names:
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrem(PENDING_SET, *names)
            pipe.unlink(*names)
            await pipe.execute()

    async def pending_count(self) -> int:
        """Answers queued for the backfill."""
        return int(await self._redis.zcard(PENDING_SET))

    async def count(self, tenant: str | None) -> int:
        """Entries held (for one tenant, or all)."""
        total = 0
        async for _ in self._redis.scan_iter(match=match_pattern(tenant, None, None), count=_SCAN_COUNT):
            total += 1
        return total

    async def used_memory_bytes(self) -> int:
        """Redis's used_memory (the whole database, not only the cache)."""
        info = await self._redis.info("memory")
        return int(info.get("used_memory", 0))

    @property
    def has_password(self) -> bool:
        """Whether connections authenticate (a password from the configuration or the URL)."""
        return bool(self._redis.connection_pool.connection_kwargs.get("password"))

    async def ping(self) -> None:
        """Raises when Redis does not answer (redis.AuthenticationError when it refuses the password)."""
        await self._redis.ping()

    async def reset(self) -> None:
        """Drops pooled connections (after Redis came back, they are all broken)."""
        await self._redis.connection_pool.disconnect()

    async def close(self) -> None:
        """Closes the connections."""
        await self._redis.aclose()
