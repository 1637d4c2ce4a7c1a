"""The router's cache client with embeddings over the cache's per-call limit (real cache and Redis)."""

from __future__ import annotations

import logging

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import common_pb2 as c

from services.cache.server import RunningCache
from services.common.wire import CACHE_MAX_BATCH
from services.router.cache_client import CacheClient
from tests.helpers.polling import wait_for

POLICY = c.CachePolicy(mode=c.CACHE_MODE_EXACT)


async def test_more_texts_than_one_cache_call_takes_are_looked_up_and_stored_in_chunks(
    cache: RunningCache, tenant: str
) -> None:
    key = pb.EmbeddingKey(tenant=tenant, model="nomic-embed-text")
    texts = [f"chunk {n}" for n in range(CACHE_MAX_BATCH + 476)]
    async with grpc.aio.insecure_channel(cache.address) as channel:
        client = CacheClient(channel, lookup_budget_ms=5000, queue_size=10)
        found, degraded = await client.lookup_embeddings(key, texts)
        assert not degraded
        assert found == [None] * len(texts)
        client.store_embeddings(key, texts, [[float(n), 1.0] for n in range(len(texts))], POLICY)
        await wait_for(
            lambda: client.stores_sent + client.stores_failed >= 2, 10, 0.01, what="both chunks stored"
        )
        assert client.stores_failed == 0
        found, degraded = await client.lookup_embeddings(key, texts)
    assert not degraded
    assert found == [[float(n), 1.0] for n in range(len(texts))]


async def test_a_request_the_cache_refuses_is_logged_as_a_bug(
    cache: RunningCache, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    # NOTE: no model: the cache answers INVALID_ARGUMENT, which only a bug in the router can cause.
    key = pb.EmbeddingKey(tenant=tenant, model="")
    async with grpc.aio.insecure_channel(cache.address) as channel:
        client = CacheClient(channel, lookup_budget_ms=5000, queue_size=10)
        with caplog.at_level(logging.WARNING, logger="services.router.cache_client"):
            found, _ = await client.lookup_embeddings(key, ["a"])
            client.store_embeddings(key, ["a"], [[1.0]], POLICY)
            await wait_for(lambda: client.stores_failed >= 1, 10, 0.01, what="the store refused")
    assert found == [None]
    refusals = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.WARNING, logging.WARNING]
