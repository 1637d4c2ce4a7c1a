"""LookupBatch over gRPC, the router's cache client sending queued lookups as batches, GETs as MGET."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_exceptions
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c
from grpc_status import rpc_status

from devstack.redis import RedisServer
from services.cache.exact_store import ExactStore
from services.cache.server import RunningCache
from services.cache.servicer import MAX_BATCH, CacheServicer
from services.common.errors import error_info
from services.router.cache_client import CacheClient
from tests.cache.helpers import gen, lookup, store
from tests.helpers.polling import wait_for
from tests.helpers.procs import free_port

Stub = cache_service_pb2_grpc.CacheServiceStub
POLICY = c.CachePolicy(mode=c.CACHE_MODE_EXACT)


async def test_lookup_batch_answers_every_lookup_in_order(stub: Stub, tenant: str) -> None:
    stored = [gen(f"batched lookup {n}", temperature=0.7) for n in range(2)]
    for n, spec in enumerate(stored):
        await stub.Store(store(tenant, spec, f"answer {n}".encode(), policy=POLICY))
    unknown = gen("batched lookup nobody stored", temperature=0.7)
    lookups = [
        lookup(tenant, stored[0], policy=POLICY),
        lookup(tenant, unknown, policy=POLICY, single_flight=True),
        lookup(tenant, stored[1], policy=POLICY),
        lookup(tenant, stored[1], policy=c.CachePolicy(mode=c.CACHE_MODE_BYPASS)),
    ]
    reply = await stub.LookupBatch(pb.LookupBatchRequest(lookups=lookups))
    assert [r.outcome for r in reply.results] == [
        c.CACHE_OUTCOME_EXACT_HIT,
        c.CACHE_OUTCOME_MISS,
        c.CACHE_OUTCOME_EXACT_HIT,
        c.CACHE_OUTCOME_BYPASS,
    ]
    assert [r.entry.payload for r in reply.results[::2]] == [b"answer 0", b"answer 1"]
    assert reply.results[1].flight_token, "a single-flight miss in a batch leads its flight"
    await stub.AbandonFlight(pb.AbandonFlightRequest(flight_token=reply.results[1].flight_token))
    assert not (await stub.LookupBatch(pb.LookupBatchRequest())).results


async def test_lookup_batch_bad_lookup_is_invalid_argument_by_index(stub: Stub, tenant: str) -> None:
    batch = pb.LookupBatchRequest(
        lookups=[lookup(tenant, gen("a fine question")), lookup(tenant, gen("no model", model=""))]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LookupBatch(batch)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(rpc_status.from_call(err.value))
    assert info is not None and info.metadata["field"].startswith("lookups[1].")


async def test_batches_beyond_the_bound_are_refused(stub: Stub, tenant: str) -> None:
    one = lookup(tenant, gen("one of too many"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LookupBatch(pb.LookupBatchRequest(lookups=[one] * (MAX_BATCH + 1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_BATCH}" in (err.value.details() or "")
    entry = store(tenant, gen("one of too many"), b"x")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.StoreBatch(pb.StoreBatchRequest(entries=[entry] * (MAX_BATCH + 1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(rpc_status.from_call(err.value))
    assert info is not None and info.metadata["field"] == "entries"
    assert not (await stub.Lookup(lookup(tenant, gen("one of too many")))).hit


class _Gated(cache_service_pb2_grpc.CacheServiceServicer):
    """The real servicer behind a gate, counting calls; `batch` False makes LookupBatch UNIMPLEMENTED."""

    def __init__(self, inner: CacheServicer, batch: bool = True) -> None:
        self._inner = inner
        self._batch = batch
        self.gate = asyncio.Event()
        self.gate.set()
        self.lookups = 0
        self.batches: list[int] = []
        self.abandoned: list[str] = []

    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext) -> pb.LookupResponse:
        self.lookups += 1
        await self.gate.wait()
        return await self._inner.Lookup(request, context)

    async def LookupBatch(
        self, request: pb.LookupBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupBatchResponse:
        if not self._batch:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        self.batches.append(len(request.lookups))
        await self.gate.wait()
        return await self._inner.LookupBatch(request, context)

    async def Store(self, request: pb.StoreRequest, context: grpc.aio.ServicerContext) -> pb.StoreResponse:
        return await self._inner.Store(request, context)

    async def AbandonFlight(
        self, request: pb.AbandonFlightRequest, context: grpc.aio.ServicerContext
    ) -> pb.AbandonFlightResponse:
        reply = await self._inner.AbandonFlight(request, context)
        self.abandoned.append(request.flight_token)
        return reply


async def _serve(servicer: _Gated) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    cache_service_pb2_grpc.add_CacheServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(params=[True, False], ids=["batching-cache", "cache-without-lookup-batch"])
async def gated(request: pytest.FixtureRequest, cache: RunningCache) -> AsyncIterator[tuple[str, _Gated]]:
    servicer = _Gated(CacheServicer(cache.engine), batch=request.param)  # type: ignore[abstract]
    server, address = await _serve(servicer)
    yield address, servicer
    await server.stop(None)


async def test_lookups_queued_behind_a_call_go_together(
    stub: Stub, tenant: str, gated: tuple[str, _Gated]
) -> None:
    address, servicer = gated
    specs = [gen(f"client lookup {n}", temperature=0.7) for n in range(12)]
    for n, spec in enumerate(specs[::2]):
        await stub.Store(store(tenant, spec, f"answer {2 * n}".encode(), policy=POLICY))
    async with grpc.aio.insecure_channel(address) as channel:
        client = CacheClient(
            channel, lookup_budget_ms=10_000, queue_size=100, lookup_calls=1, lookup_batch_max=64
        )
        # NOTE: the first lookup holds the only call slot at the gate while the others queue up.
        servicer.gate.clear()
        first = asyncio.ensure_future(client.lookup(tenant, specs[0], POLICY))
        await wait_for(
            lambda: servicer.lookups + len(servicer.batches) >= 1,
            10,
            0.01,
            what="the first lookup reaching the cache",
        )
        rest = [asyncio.ensure_future(client.lookup(tenant, spec, POLICY)) for spec in specs[1:]]
        await asyncio.sleep(0)
        servicer.gate.set()
        results = [await first, *await asyncio.gather(*rest)]
    for n, result in enumerate(results):
        if n % 2 == 0:
            assert result.outcome == c.CACHE_OUTCOME_EXACT_HIT and result.entry is not None
            assert result.entry.payload == f"answer {n}".encode()
        else:
            assert result.outcome == c.CACHE_OUTCOME_MISS and result.flight_token
    if servicer._batch:
        assert servicer.lookups == 1 and servicer.batches == [11]
        assert client.lookup_calls_sent == 2 and client.lookup_batches == 1 and client.lookups_batched == 11
    else:
        assert servicer.lookups == 12, "without LookupBatch every lookup is its own call"
        assert client.lookup_batches == 0


async def test_a_lookup_past_its_budget_is_degraded_and_its_store_completes_the_flight(
    tenant: str, cache: RunningCache
) -> None:
    servicer = _Gated(CacheServicer(cache.engine))  # type: ignore[abstract]
    server, address = await _serve(servicer)
    spec = gen("a lookup the router gave up on", temperature=0.7)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            # NOTE: the gated lookup always runs out of its budget; the final one must be a hit
            # within it, so the budget is generous for a busy machine.
            client = CacheClient(channel, lookup_budget_ms=1000, queue_size=100)
            workers = asyncio.create_task(client.run())
            servicer.gate.clear()
            result = await client.lookup(tenant, spec, POLICY)
            assert result.outcome == c.CACHE_OUTCOME_DEGRADED and not result.flight_token
            # NOTE: the cache still answers the late call and makes it a flight's leader; the request
            # goes on as a miss and storing its answer (without the token) completes that flight.
            servicer.gate.set()
            await wait_for(
                lambda: len(cache.engine.flights) >= 1, 10, 0.01, what="the late lookup reaching the cache"
            )
            client.store(tenant, spec, POLICY, pb.CacheEntry(payload=b"late answer"))
            await wait_for(lambda: not cache.engine.flights, 10, 0.01, what="the store completing the flight")
            assert not servicer.abandoned, "no AbandonFlight call for a late reply"
            hit = await client.lookup(tenant, spec, POLICY)
            assert hit.outcome == c.CACHE_OUTCOME_EXACT_HIT
            workers.cancel()
            await asyncio.gather(workers, return_exceptions=True)
    finally:
        await server.stop(None)


async def _commandstats(redis_url: str) -> dict[str, int]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        info = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


async def test_gets_issued_together_leave_as_one_get_and_one_mget(
    redis_server: RedisServer, tenant: str
) -> None:
    store_ = ExactStore(redis_server.url, timeout_s=2)
    try:
        await store_.put(tenant, "m", "k1", b"one", ttl_s=60)
        await store_.put(tenant, "m", "k3", b"three", ttl_s=60)
        before = await _commandstats(redis_server.url)
        values = await asyncio.gather(*(store_.get(tenant, "m", f"k{n}") for n in range(1, 5)))
        middle = await _commandstats(redis_server.url)
        assert values == [b"one", None, b"three", None]
        # NOTE: the first GET of the turn leaves at once, the three after it as one MGET.
        assert middle.get("get", 0) - before.get("get", 0) == 1
        assert middle.get("mget", 0) - before.get("mget", 0) == 1
        assert await store_.get(tenant, "m", "k1") == b"one", "a lone GET is sent as it is"
        after = await _commandstats(redis_server.url)
        assert after.get("get", 0) - middle.get("get", 0) == 1
    finally:
        await store_.close()


async def test_a_failed_mget_fails_every_get_of_it(tenant: str) -> None:
    # NOTE: a port nothing listens on: the connection fails and each waiter sees the error.
    store_ = ExactStore(f"redis://127.0.0.1:{free_port()}", timeout_s=1)
    try:
        results = await asyncio.gather(
            *(store_.get(tenant, "m", f"k{n}") for n in range(4)), return_exceptions=True
        )
        assert len(results) == 4
        assert all(isinstance(r, redis_exceptions.ConnectionError) for r in results), results
    finally:
        await store_.close()


class _Slow(_Gated):
    """The real servicer, each Lookup answered `delay_s` late (a cache on a busy host)."""

    def __init__(self, inner: CacheServicer, delay_s: float) -> None:
        super().__init__(inner)
        self._delay_s = delay_s

    async def Lookup(self, request: pb.LookupRequest, context: grpc.aio.ServicerContext) -> pb.LookupResponse:
        # NOTE: the delay is the behaviour under test (a slow cache), not a wait for an event.
        await asyncio.sleep(self._delay_s)
        return await super().Lookup(request, context)


async def test_a_cache_that_answers_slower_than_the_budget_gets_a_longer_one_and_its_hits_are_served(
    tenant: str, cache: RunningCache
) -> None:
    delay_s, base_ms = 0.03, 5.0
    servicer = _Slow(CacheServicer(cache.engine), delay_s)  # type: ignore[abstract]
    server, address = await _serve(servicer)
    spec = gen("an answer held by a slow cache", temperature=0.7)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            await cache_service_pb2_grpc.CacheServiceStub(channel).Store(
                store(tenant, spec, b"held", policy=POLICY)
            )
            # NOTE: 32 call slots, so every lookup of a round is sent (with 2, most would give up
            # waiting for a slot and teach the budget only that they waited 5 ms). The ceiling bounds
            # a call: on a loaded host a lookup whose Redis GET times out joins a single flight whose
            # leader never stores, and waits for it until the call's deadline.
            client = CacheClient(
                channel,
                lookup_budget_ms=base_ms,
                queue_size=100,
                lookup_calls=32,
                lookup_budget_max_ms=2_000,
            )
            first = await client.lookup(tenant, spec, POLICY)
            assert first.outcome == c.CACHE_OUTCOME_DEGRADED, "a 30 ms reply is past a 5 ms budget"
            # NOTE: the calls outlive the budget (up to the ceiling), so the client learns how long
            # the cache takes even while it gives up on every answer. Each round waits for the calls
            # before it to return, so the next round's lookups all find a free call slot.
            for _ in range(4):
                await wait_for(
                    lambda: client.lookup_calls_in_flight() == 0, 10, 0.01, what="the lookup calls returned"
                )
                await asyncio.gather(*(client.lookup(tenant, spec, POLICY) for _ in range(32)))
            await wait_for(
                lambda: client.lookup_budgets()[base_ms / 1000] >= 2 * delay_s,
                10,
                0.01,
                what="the budget following the cache's 30 ms replies",
            )
            later = [await client.lookup(tenant, spec, POLICY) for _ in range(10)]
            assert any(r.outcome == c.CACHE_OUTCOME_EXACT_HIT for r in later), [r.outcome for r in later]
            fixed = CacheClient(channel, lookup_budget_ms=base_ms, queue_size=100, lookup_calls=32)
            for _ in range(3):
                await asyncio.gather(*(fixed.lookup(tenant, spec, POLICY) for _ in range(32)))
            assert fixed.lookup_budgets() == {base_ms / 1000: base_ms / 1000}, "without a ceiling it is fixed"
    finally:
        await server.stop(None)
