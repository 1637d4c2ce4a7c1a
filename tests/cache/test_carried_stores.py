"""Answers carried on lookup calls: the cache takes them after the lookups; the router's client sends
its queued answers on its next lookup call and falls back to store calls for caches that cannot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c
from grpc_status import rpc_status

from services.cache.server import RunningCache
from services.cache.servicer import MAX_BATCH, CacheServicer
from services.common.errors import error_info
from services.router.cache_client import CacheClient
from tests.cache.helpers import gen, lookup, store
from tests.helpers.polling import wait_for

Stub = cache_service_pb2_grpc.CacheServiceStub
POLICY = c.CachePolicy(mode=c.CACHE_MODE_EXACT)


async def _hits(stub: Stub, tenant: str, spec: c.GenerateSpec) -> bool:
    reply = await stub.Lookup(lookup(tenant, spec, policy=POLICY))
    return reply.outcome == c.CACHE_OUTCOME_EXACT_HIT


async def _eventually_hits(stub: Stub, tenant: str, spec: c.GenerateSpec) -> None:
    # NOTE: carried answers are written after the reply; poll until the write landed.
    await wait_for(lambda: _hits(stub, tenant, spec), 10, 0.02, what=f"{spec.prompt!r} stored")


async def test_carried_stores_are_stored_and_release_their_waiters(stub: Stub, tenant: str) -> None:
    leader_spec = gen("carried answer with a waiter", temperature=0.7)
    plain_spec = gen("carried answer without a lease", temperature=0.7)
    leader = await stub.Lookup(lookup(tenant, leader_spec, policy=POLICY, single_flight=True))
    assert leader.flight_token
    waiter = asyncio.ensure_future(
        stub.Lookup(lookup(tenant, leader_spec, policy=POLICY, single_flight=True), timeout=10)
    )
    malformed = store(tenant, gen("carried answer without a type"), b"x", policy=POLICY)
    malformed.entry.payload_type = ""
    reply = await stub.LookupBatch(
        pb.LookupBatchRequest(
            lookups=[lookup(tenant, gen("the lookup that carries them", temperature=0.7), policy=POLICY)],
            stores=[
                store(tenant, leader_spec, b"led", policy=POLICY, flight_token=leader.flight_token),
                store(tenant, plain_spec, b"plain", policy=POLICY),
                malformed,
            ],
        )
    )
    assert [r.outcome for r in reply.results] == [c.CACHE_OUTCOME_MISS], "the lookup is answered as ever"
    assert (reply.stores_accepted, reply.stores_rejected) == (2, 1)
    assert reply.store_error.startswith("stores[2].entry.payload_type"), reply.store_error
    shared = await waiter
    assert shared.outcome == c.CACHE_OUTCOME_COALESCED and shared.entry.payload == b"led"
    await _eventually_hits(stub, tenant, leader_spec)
    await _eventually_hits(stub, tenant, plain_spec)
    assert not await _hits(stub, tenant, gen("carried answer without a type"))


async def test_too_many_carried_stores_are_refused(stub: Stub, tenant: str) -> None:
    one = store(tenant, gen("one of too many carried"), b"x", policy=POLICY)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LookupBatch(pb.LookupBatchRequest(stores=[one] * (MAX_BATCH + 1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(rpc_status.from_call(err.value))
    assert info is not None and info.metadata["field"] == "stores"
    assert not await _hits(stub, tenant, gen("one of too many carried"))


class _Counting(cache_service_pb2_grpc.CacheServiceServicer):
    """The real servicer, counting calls; `kind` plays older caches.

    "current": as shipped. "no-lookup-batch": LookupBatch is UNIMPLEMENTED. "ignores-stores": a
    LookupBatch that predates carried stores (the field is unknown to it, so it answers 0 taken).
    """

    def __init__(self, inner: CacheServicer, kind: str) -> None:
        self._inner = inner
        self.kind = kind
        self.lookups = 0
        self.batches: list[tuple[int, int]] = []
        self.stores = 0
        self.store_batches = 0

    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext) -> pb.LookupResponse:
        self.lookups += 1
        return await self._inner.Lookup(request, context)

    async def LookupBatch(
        self, request: pb.LookupBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupBatchResponse:
        if self.kind == "no-lookup-batch":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        self.batches.append((len(request.lookups), len(request.stores)))
        if self.kind == "ignores-stores":
            del request.stores[:]
        return await self._inner.LookupBatch(request, context)

    async def Store(self, request: pb.StoreRequest, context: grpc.aio.ServicerContext) -> pb.StoreResponse:
        self.stores += 1
        return await self._inner.Store(request, context)

    async def StoreBatch(
        self, request: pb.StoreBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreBatchResponse:
        self.store_batches += 1
        return await self._inner.StoreBatch(request, context)


@pytest.fixture(params=["current", "no-lookup-batch", "ignores-stores"])
async def counting(
    request: pytest.FixtureRequest, cache: RunningCache
) -> AsyncIterator[tuple[str, _Counting]]:
    servicer = _Counting(CacheServicer(cache.engine), request.param)  # type: ignore[abstract]
    server = grpc.aio.server()
    cache_service_pb2_grpc.add_CacheServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(None)


async def test_queued_answers_ride_on_the_next_lookup_or_go_apart(
    stub: Stub, tenant: str, counting: tuple[str, _Counting]
) -> None:
    address, servicer = counting
    specs = [gen(f"answer riding on a lookup {n}", temperature=0.7) for n in range(3)]
    async with grpc.aio.insecure_channel(address) as channel:
        # NOTE: a ride wait far longer than the test: only a lookup call (or a fallback) sends them.
        client = CacheClient(channel, lookup_budget_ms=5000, queue_size=100, store_ride_ms=60_000)
        workers = asyncio.create_task(client.run())
        try:
            for n, spec in enumerate(specs):
                client.store(tenant, spec, POLICY, pb.CacheEntry(payload=f"answer {n}".encode()))
            result = await client.lookup(tenant, gen("the next request", temperature=0.7), POLICY)
            assert result.outcome == c.CACHE_OUTCOME_MISS
            await wait_for(lambda: client.stores_sent == 3, 10, 0.01, what="every answer stored")
            if servicer.kind == "current":
                assert servicer.batches == [(1, 3)] and servicer.lookups == 0
                assert client.stores_carried == 3
                assert servicer.stores == servicer.store_batches == 0, "no store call of their own"
            else:
                assert client.stores_carried == 0
                assert servicer.stores + servicer.store_batches >= 1, "the answers went in store calls"
                # NOTE: the client has learnt: later answers go straight to the store workers.
                client.store(tenant, gen("a later answer"), POLICY, pb.CacheEntry(payload=b"later"))
                await wait_for(lambda: client.stores_sent == 4, 10, 0.01, what="the later answer stored")
            assert client.stores_failed == 0
        finally:
            workers.cancel()
            await asyncio.gather(workers, return_exceptions=True)
    for spec in specs:
        await _eventually_hits(stub, tenant, spec)


async def test_answers_no_lookup_takes_leave_after_the_ride_wait(
    stub: Stub, tenant: str, cache: RunningCache
) -> None:
    specs = [gen(f"answer that waited for no lookup {n}", temperature=0.7) for n in range(2)]
    async with grpc.aio.insecure_channel(cache.address) as channel:
        client = CacheClient(channel, lookup_budget_ms=5000, queue_size=100, store_ride_ms=20)
        workers = asyncio.create_task(client.run())
        try:
            for n, spec in enumerate(specs):
                client.store(tenant, spec, POLICY, pb.CacheEntry(payload=f"answer {n}".encode()))
            await wait_for(lambda: client.stores_sent == 2, 10, 0.01, what="both answers stored")
            assert client.stores_carried == 0
        finally:
            workers.cancel()
            await asyncio.gather(workers, return_exceptions=True)
    for spec in specs:
        assert await _hits(stub, tenant, spec)
