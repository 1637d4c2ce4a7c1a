"""Fixtures: an in-process cache server over the session's real Redis and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from corral.v1 import cache_service_pb2_grpc

from devstack.redis import RedisServer
from services.cache.embedders import HashingEmbedder
from services.cache.server import RunningCache, start_in_process
from tests.cache.helpers import make_config


@pytest.fixture
async def cache(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[RunningCache]:
    """A cache server on a free port over the shared stores."""
    running = await start_in_process(
        make_config(), redis_server.url, migrated_dsn, embedder=HashingEmbedder(384)
    )
    yield running
    await running.stop()


@pytest.fixture
async def stub(cache: RunningCache) -> AsyncIterator[cache_service_pb2_grpc.CacheServiceStub]:
    """A client of the cache server."""
    async with grpc.aio.insecure_channel(cache.address) as channel:
        yield cache_service_pb2_grpc.CacheServiceStub(channel)


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test, so tests sharing the stores never see each other's entries."""
    return f"t-{uuid.uuid4().hex[:12]}"
