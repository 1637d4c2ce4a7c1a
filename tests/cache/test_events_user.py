"""The near caches' Redis user (EVENTS_USER, EVENTS_ACL) hears the cache's events and can do nothing else."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_exceptions

from devstack.redis import RedisServer
from services.cache.exact_store import EVENTS_CHANNEL, EVENTS_USER, ExactStore


async def test_the_events_user_hears_a_store_announced_by_the_cache(redis_server: RedisServer) -> None:
    listener = aioredis.Redis.from_url(redis_server.user_url(EVENTS_USER))
    store = ExactStore(redis_server.url, timeout_s=2)
    pubsub = listener.pubsub()
    try:
        assert await listener.ping()
        await pubsub.subscribe(EVENTS_CHANNEL)
        confirm = await pubsub.get_message(timeout=5)
        assert confirm is not None and confirm["type"] == "subscribe"
        await store.put("tenant-events", "m", "k-events", b"answer", ttl_s=60)
        message = None
        async with asyncio.timeout(10):
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert message["channel"].decode() == EVENTS_CHANNEL
        assert b"k-events" in message["data"]
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await store.close()


@pytest.mark.parametrize(
    "command",
    [
        ("GET", "cx:any"),
        ("SET", "cx:any", "forged answer"),
        ("KEYS", "*"),
        ("PUBLISH", EVENTS_CHANNEL, '{"tenant": null, "model": null, "key": null}'),
        ("FLUSHALL",),
        ("CONFIG", "GET", "requirepass"),
    ],
    ids=lambda command: command[0].lower(),
)
async def test_the_events_user_can_neither_read_write_nor_publish(
    redis_server: RedisServer, command: tuple[str, ...]
) -> None:
    client = aioredis.Redis.from_url(redis_server.user_url(EVENTS_USER))
    try:
        with pytest.raises(redis_exceptions.NoPermissionError):
            await client.execute_command(*command)
    finally:
        await client.aclose()


async def test_the_events_user_cannot_subscribe_to_another_channel(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.user_url(EVENTS_USER))
    pubsub = client.pubsub()
    try:
        with pytest.raises(redis_exceptions.NoPermissionError):
            await pubsub.subscribe("some:other:channel")
            await pubsub.get_message(timeout=5)
    finally:
        await pubsub.aclose()
        await client.aclose()
