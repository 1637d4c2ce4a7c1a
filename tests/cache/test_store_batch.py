"""StoreBatch over gRPC: entries stored, waiters released, a bad entry refuses the batch by index."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c
from grpc_status import rpc_status

from services.cache.server import RunningCache
from services.common.errors import error_info
from tests.cache.helpers import gen, lookup, store
from tests.helpers.polling import wait_for

Stub = cache_service_pb2_grpc.CacheServiceStub


async def test_store_batch_stores_every_entry_and_releases_waiters(
    stub: Stub, tenant: str, cache: RunningCache
) -> None:
    led = gen("Batch question led by a flight", temperature=0.7)
    leader = await stub.Lookup(lookup(tenant, led, single_flight=True))
    assert leader.flight_token
    waiter = asyncio.ensure_future(stub.Lookup(lookup(tenant, led, single_flight=True), timeout=10))
    await wait_for(lambda: cache.engine.flights.waiters(leader.key) >= 1, 10, 0.01, what="the waiter joining")
    plain = [gen(f"Batch question {n}", temperature=0.7) for n in range(3)]
    bypassed = gen("Batch question not to store", temperature=0.7)
    entries = [store(tenant, led, b"led answer", flight_token=leader.flight_token)]
    entries += [store(tenant, spec, f"answer {n}".encode()) for n, spec in enumerate(plain)]
    entries.append(store(tenant, bypassed, b"no", policy=c.CachePolicy(mode=c.CACHE_MODE_BYPASS)))
    reply = await stub.StoreBatch(pb.StoreBatchRequest(entries=entries))
    assert [r.stored_exact for r in reply.results] == [True, True, True, True, False]
    assert reply.results[0].key == leader.key
    shared = await waiter
    assert shared.hit and shared.outcome == c.CACHE_OUTCOME_COALESCED
    assert shared.entry.payload == b"led answer"
    for n, spec in enumerate(plain):
        hit = await stub.Lookup(lookup(tenant, spec))
        assert hit.outcome == c.CACHE_OUTCOME_EXACT_HIT and hit.entry.payload == f"answer {n}".encode()
        assert hit.key == reply.results[n + 1].key
    assert not (await stub.Lookup(lookup(tenant, bypassed))).hit
    assert not (await stub.StoreBatch(pb.StoreBatchRequest())).results


async def test_store_batch_bad_entry_is_invalid_argument_by_index(stub: Stub, tenant: str) -> None:
    good = gen("A good entry in a bad batch", temperature=0.7)
    no_type = pb.StoreRequest(tenant=tenant, generate=gen("hi"), entry=pb.CacheEntry(payload=b"x"))
    batch = pb.StoreBatchRequest(entries=[store(tenant, good, b"ok"), no_type])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StoreBatch(batch)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entries[1].entry.payload_type" in (err.value.details() or "")
    info = error_info(rpc_status.from_call(err.value))
    assert info is not None and info.metadata["field"] == "entries[1].entry.payload_type"
    assert not (await stub.Lookup(lookup(tenant, good))).hit, "a refused batch stores nothing"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StoreBatch(pb.StoreBatchRequest(entries=[pb.StoreRequest(tenant=tenant)]))
    assert "entries[0].request" in (err.value.details() or "")
