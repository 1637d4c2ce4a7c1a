"""The embedding cache over gRPC with the session's real Redis: per text, exact, per tenant and shape."""

from __future__ import annotations

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c

from services.cache.collector import CacheCollector
from services.cache.server import RunningCache

Stub = cache_service_pb2_grpc.CacheServiceStub
MODEL = "nomic-embed-text"


def key(tenant: str, model: str = MODEL, **kw: object) -> pb.EmbeddingKey:
    return pb.EmbeddingKey(tenant=tenant, model=model, **kw)  # type: ignore[arg-type]


def vec(*values: float) -> pb.CachedVector:
    return pb.CachedVector(hit=True, values=list(values))


async def lookup(stub: Stub, k: pb.EmbeddingKey, *inputs: str) -> list[list[float] | None]:
    reply = await stub.LookupEmbeddings(pb.LookupEmbeddingsRequest(key=k, inputs=inputs), timeout=5)
    return [list(r.values) if r.hit else None for r in reply.results]


async def test_partial_hits_answer_in_input_order(stub: Stub, tenant: str) -> None:
    k = key(tenant)
    stored = await stub.StoreEmbeddings(
        pb.StoreEmbeddingsRequest(key=k, inputs=["b", "d", "a"], vectors=[vec(2, 0.5), vec(4), vec(1)]),
        timeout=5,
    )
    assert stored.stored == 3
    found = await stub.LookupEmbeddings(pb.LookupEmbeddingsRequest(key=k, inputs=["a"]), timeout=5)
    assert not found.degraded
    assert await lookup(stub, k, "a", "b", "c", "d", "e") == [[1.0], [2.0, 0.5], None, [4.0], None]
    # NOTE: "llama:latest" and "llama" are one model, as for answers.
    assert await lookup(stub, key(tenant, model=f"{MODEL}:latest"), "a") == [[1.0]]


async def test_no_tenant_sees_another_tenants_vectors(stub: Stub, tenant: str) -> None:
    await stub.StoreEmbeddings(
        pb.StoreEmbeddingsRequest(key=key(tenant), inputs=["secret"], vectors=[vec(0.25, 0.75)]), timeout=5
    )
    assert await lookup(stub, key(tenant), "secret") == [[0.25, 0.75]]
    assert await lookup(stub, key(f"{tenant}-other"), "secret") == [None]
    assert await lookup(stub, key(""), "secret") == [None]


async def test_shape_and_options_are_part_of_the_key(stub: Stub, tenant: str) -> None:
    await stub.StoreEmbeddings(
        pb.StoreEmbeddingsRequest(key=key(tenant), inputs=["t"], vectors=[vec(1, 2, 3)]), timeout=5
    )
    assert await lookup(stub, key(tenant, dimensions=2), "t") == [None]
    assert await lookup(stub, key(tenant, truncate=False), "t") == [None]
    assert await lookup(stub, key(tenant, options=c.ModelOptions(num_ctx=512)), "t") == [None]
    assert await lookup(stub, key(tenant, model="all-minilm"), "t") == [None]
    assert await lookup(stub, key(tenant), "t") == [[1.0, 2.0, 3.0]]


def embedding_lookups(cache: RunningCache) -> dict[str, float]:
    family = next(m for m in CacheCollector(cache.engine).collect() if m.name == "corral_cache_lookups")
    return {s.labels["result"]: s.value for s in family.samples if s.labels["tier"] == "embeddings"}


async def test_stats_count_texts_apart_from_answers(cache: RunningCache, stub: Stub, tenant: str) -> None:
    metrics_before = embedding_lookups(cache)
    before = await stub.Stats(pb.StatsRequest(), timeout=5)
    await stub.StoreEmbeddings(
        pb.StoreEmbeddingsRequest(key=key(tenant), inputs=["x", "y"], vectors=[vec(1), vec(2)]), timeout=5
    )
    await lookup(stub, key(tenant), "x", "y", "z")
    after = await stub.Stats(pb.StatsRequest(), timeout=5)
    assert after.embeddings.stores - before.embeddings.stores == 2
    assert after.embeddings.hits - before.embeddings.hits == 2
    assert after.embeddings.misses - before.embeddings.misses == 1
    assert after.exact.hits == before.exact.hits and after.exact.misses == before.exact.misses
    metrics_after = embedding_lookups(cache)
    assert metrics_after["hit"] - metrics_before["hit"] == 2
    assert metrics_after["miss"] - metrics_before["miss"] == 1


async def test_malformed_requests_are_refused(stub: Stub, tenant: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing_model:
        await stub.LookupEmbeddings(pb.LookupEmbeddingsRequest(key=pb.EmbeddingKey(tenant=tenant)), timeout=5)
    assert missing_model.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as uneven:
        await stub.StoreEmbeddings(
            pb.StoreEmbeddingsRequest(key=key(tenant), inputs=["a", "b"], vectors=[vec(1)]), timeout=5
        )
    assert uneven.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_fails_open_when_redis_is_down(cache: RunningCache, stub: Stub, tenant: str) -> None:
    cache.engine.exact_breaker.trip()
    reply = await stub.LookupEmbeddings(
        pb.LookupEmbeddingsRequest(key=key(tenant), inputs=["a", "b"]), timeout=5
    )
    assert reply.degraded and [r.hit for r in reply.results] == [False, False]
    stored = await stub.StoreEmbeddings(
        pb.StoreEmbeddingsRequest(key=key(tenant), inputs=["a"], vectors=[vec(1)]), timeout=5
    )
    assert stored.stored == 0
