"""The router's cache client sends queued stores as StoreBatch, or one by one to a cache without it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c

from services.cache.server import RunningCache
from services.cache.servicer import CacheServicer
from services.router.cache_client import CacheClient
from tests.cache.helpers import gen, lookup
from tests.helpers.polling import wait_for

Stub = cache_service_pb2_grpc.CacheServiceStub
POLICY = c.CachePolicy(mode=c.CACHE_MODE_EXACT)


class _StoreOnly(cache_service_pb2_grpc.CacheServiceServicer):
    """A cache as it was before StoreBatch: Lookup and Store only (StoreBatch is UNIMPLEMENTED)."""

    def __init__(self, inner: CacheServicer) -> None:
        self._inner = inner
        self.stores = 0

    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext) -> pb.LookupResponse:
        return await self._inner.Lookup(request, context)

    async def Store(self, request: pb.StoreRequest, context: grpc.aio.ServicerContext) -> pb.StoreResponse:
        self.stores += 1
        return await self._inner.Store(request, context)


@pytest.fixture
async def old_cache(cache: RunningCache) -> AsyncIterator[tuple[str, _StoreOnly]]:
    # NOTE: the stub's abstract methods are the point: unimplemented ones answer UNIMPLEMENTED.
    servicer = _StoreOnly(CacheServicer(cache.engine))  # type: ignore[abstract]
    server = grpc.aio.server()
    cache_service_pb2_grpc.add_CacheServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(None)


async def _send_all(address: str, tenant: str, prompts: list[str], leader_token: str = "") -> CacheClient:
    """Queues one store per prompt (the first with `leader_token`) and runs the client until all are sent."""
    async with grpc.aio.insecure_channel(address) as channel:
        client = CacheClient(channel, lookup_budget_ms=2000, queue_size=100, store_workers=2)
        for n, prompt in enumerate(prompts):
            answer = pb.CacheEntry(payload=f"answer {n}".encode())
            client.store(tenant, gen(prompt, temperature=0.7), POLICY, answer, leader_token if n == 0 else "")
        workers = asyncio.create_task(client.run())
        await wait_for(
            lambda: not (client.stores_sent + client.stores_failed < len(prompts)),
            10,
            0.01,
            what="every store sent",
        )
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)
    return client


async def _assert_stored(stub: Stub, tenant: str, prompts: list[str]) -> None:
    for n, prompt in enumerate(prompts):
        hit = await stub.Lookup(lookup(tenant, gen(prompt, temperature=0.7), policy=POLICY))
        assert hit.outcome == c.CACHE_OUTCOME_EXACT_HIT, prompt
        assert pb.CacheEntry.FromString(hit.entry.payload).payload == f"answer {n}".encode()


async def test_queued_stores_go_as_one_batch_and_release_the_waiters(
    stub: Stub, tenant: str, cache: RunningCache
) -> None:
    prompts = [f"client batch question {n}" for n in range(10)]
    leader = await stub.Lookup(
        lookup(tenant, gen(prompts[0], temperature=0.7), policy=POLICY, single_flight=True)
    )
    waiter = asyncio.ensure_future(
        stub.Lookup(
            lookup(tenant, gen(prompts[0], temperature=0.7), policy=POLICY, single_flight=True), timeout=10
        )
    )
    await wait_for(lambda: cache.engine.flights.waiters(leader.key) >= 1, 10, 0.01, what="the waiter joining")
    before = cache.engine.stats.exact.stores
    client = await _send_all(cache.address, tenant, prompts, leader.flight_token)
    assert client.stores_sent == 10 and client.stores_failed == 0
    assert 1 <= client.store_batches <= 2, "queued stores are sent together"
    assert cache.engine.stats.exact.stores - before == 10
    shared = await waiter
    assert shared.outcome == c.CACHE_OUTCOME_COALESCED
    await _assert_stored(stub, tenant, prompts)


async def test_a_cache_without_store_batch_gets_single_stores(
    stub: Stub, tenant: str, old_cache: tuple[str, _StoreOnly]
) -> None:
    address, servicer = old_cache
    prompts = [f"old cache question {n}" for n in range(6)]
    client = await _send_all(address, tenant, prompts)
    assert client.stores_sent == 6 and client.stores_failed == 0 and client.store_batches == 0
    assert servicer.stores == 6
    await _assert_stored(stub, tenant, prompts)
