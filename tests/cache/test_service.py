"""The cache over gRPC with real Redis and PostgreSQL + pgvector (the session's shared servers)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c
from google.protobuf.duration_pb2 import Duration
from grpc_status import rpc_status

from devstack.redis import RedisServer
from services.cache.embedders import HashingEmbedder
from services.cache.server import RunningCache, start_in_process
from services.common.errors import error_info
from tests.cache.helpers import gen, lookup, make_config, store
from tests.helpers.polling import wait_for

Stub = cache_service_pb2_grpc.CacheServiceStub
EXACT_ONLY = c.CachePolicy(mode=c.CACHE_MODE_EXACT)


async def test_exact_miss_store_hit(stub: Stub, tenant: str) -> None:
    spec = gen("What is the capital of France?", temperature=0.7)
    miss = await stub.Lookup(lookup(tenant, spec))
    assert not miss.hit and miss.outcome == c.CACHE_OUTCOME_MISS and len(miss.key) == 64
    stored = await stub.Store(store(tenant, spec, b"Paris"))
    assert stored.stored_exact and not stored.stored_semantic and stored.key == miss.key
    hit = await stub.Lookup(lookup(tenant, spec))
    assert hit.hit and hit.outcome == c.CACHE_OUTCOME_EXACT_HIT
    assert hit.entry.payload == b"Paris" and hit.entry.payload_type == "corral.v1.GenerateResponse"
    assert hit.entry.expires_at.seconds > hit.entry.created_at.seconds
    tuned = gen("What is the capital of France?", temperature=0.7)
    tuned.options.num_ctx = 8192
    tuned.keep_alive.seconds = 600
    assert (await stub.Lookup(lookup(tenant, tuned))).outcome == c.CACHE_OUTCOME_EXACT_HIT


async def test_exact_entry_expires(stub: Stub, tenant: str) -> None:
    spec = gen("Short-lived question", temperature=0.7)
    # NOTE: 2 s, not less: the first lookup must come before the expiry even on a busy machine.
    await stub.Store(store(tenant, spec, b"soon gone", policy=c.CachePolicy(ttl=Duration(seconds=2))))
    assert (await stub.Lookup(lookup(tenant, spec))).hit
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await stub.Lookup(lookup(tenant, spec))).hit:
        assert loop.time() < deadline, "entry did not expire"
        await asyncio.sleep(0.05)


async def test_bypass_refresh_and_max_age(stub: Stub, tenant: str) -> None:
    spec = gen("Cached but bypassed", temperature=0.7)
    await stub.Store(store(tenant, spec, b"v1"))
    bypass = await stub.Lookup(lookup(tenant, spec, policy=c.CachePolicy(mode=c.CACHE_MODE_BYPASS)))
    assert not bypass.hit and bypass.outcome == c.CACHE_OUTCOME_BYPASS and not bypass.flight_token
    refresh = c.CachePolicy(mode=c.CACHE_MODE_REFRESH)
    assert (await stub.Lookup(lookup(tenant, spec, policy=refresh))).outcome == c.CACHE_OUTCOME_BYPASS
    await stub.Store(store(tenant, spec, b"v2", policy=refresh))
    assert (await stub.Lookup(lookup(tenant, spec))).entry.payload == b"v2"
    not_stored = await stub.Store(store(tenant, spec, b"v3", policy=c.CachePolicy(mode=c.CACHE_MODE_BYPASS)))
    assert not not_stored.stored_exact
    assert (await stub.Lookup(lookup(tenant, spec))).entry.payload == b"v2"
    await asyncio.sleep(0.05)  # NOTE: the entry must be older than max_age; time itself is the subject here.
    fresh_only = c.CachePolicy(max_age=Duration(nanos=10_000_000))
    assert not (await stub.Lookup(lookup(tenant, spec, policy=fresh_only))).hit
    assert (await stub.Lookup(lookup(tenant, spec, policy=c.CachePolicy(max_age=Duration(seconds=60))))).hit


async def test_semantic_hit_on_a_paraphrase(stub: Stub, tenant: str) -> None:
    await stub.Store(store(tenant, gen("What is the capital city of France?"), b"Paris"))
    hit = await stub.Lookup(lookup(tenant, gen("what is the capital of France")))
    assert hit.hit and hit.outcome == c.CACHE_OUTCOME_SEMANTIC_HIT and hit.entry.payload == b"Paris"
    assert 0.8 <= hit.similarity <= 1.0
    warm = await stub.Lookup(lookup(tenant, gen("what is the capital of France", temperature=0.8)))
    assert not warm.hit, "the default policy keeps non-deterministic requests out of the semantic tier"
    forced = c.CachePolicy(mode=c.CACHE_MODE_SEMANTIC)
    other_options = gen("what is the capital of France", temperature=0.8)
    assert not (await stub.Lookup(lookup(tenant, other_options, policy=forced))).hit, "options are namespace"
    other_system = gen("what is the capital of France", system="Answer in German.")
    assert not (await stub.Lookup(lookup(tenant, other_system))).hit, "the system prompt is namespace"
    assert not (
        await stub.Lookup(lookup(tenant, gen("what is the capital of France"), policy=EXACT_ONLY))
    ).hit


async def test_chat_question_in_another_conversation_does_not_hit(stub: Stub, tenant: str) -> None:
    first = c.ChatSpec(
        model="llama3.2:1b",
        messages=[c.ChatMessage(role="user", content="What is the capital city of France?")],
        options=c.ModelOptions(temperature=0),
    )
    await stub.Store(store(tenant, first, b"Paris"))
    again = c.ChatSpec()
    again.CopyFrom(first)
    again.messages[0].content = "what is the capital of France"
    assert (await stub.Lookup(lookup(tenant, again))).outcome == c.CACHE_OUTCOME_SEMANTIC_HIT
    later = c.ChatSpec()
    later.CopyFrom(first)
    later.messages.insert(0, c.ChatMessage(role="assistant", content="We were talking about Texas."))
    later.messages.insert(0, c.ChatMessage(role="user", content="Tell me about Texas."))
    assert not (await stub.Lookup(lookup(tenant, later))).hit


@pytest.mark.parametrize(
    ("stored", "asked", "reason"),
    [
        ("How do I install Python 3.11 on Ubuntu?", "How do I install Python 3.12 on Ubuntu?", "number"),
        ("Which foods are safe for dogs to eat?", "Which foods are not safe for dogs to eat?", "negation"),
        ("How do I enable TLS on the nginx server?", "How do I disable TLS on the nginx server?", "antonym"),
        ("How do I deploy a Flask app to Heroku?", "How do I deploy a Django app to Heroku?", "entity"),
    ],
)
async def test_guard_refuses_near_misses(
    stub: Stub, tenant: str, stored: str, asked: str, reason: str
) -> None:
    await stub.Store(store(tenant, gen(stored), b"answer"))
    refused = await stub.Lookup(lookup(tenant, gen(asked)))
    assert not refused.hit and refused.outcome == c.CACHE_OUTCOME_MISS
    assert refused.guard_reason == reason
    stats = await stub.Stats(pb.StatsRequest())
    assert stats.guard_rejections >= 1


async def test_tenants_are_isolated_in_both_tiers(stub: Stub, tenant: str) -> None:
    other = tenant + "-other"
    spec = gen("What is the capital city of France?")
    await stub.Store(store(tenant, spec, b"Paris for tenant one"))
    same = await stub.Lookup(lookup(other, spec))
    assert not same.hit, "exact tier must not cross tenants"
    paraphrase = await stub.Lookup(lookup(other, gen("what is the capital of France")))
    assert not paraphrase.hit, "semantic tier must not cross tenants"
    assert (await stub.Lookup(lookup(tenant, spec))).hit
    assert (await stub.Lookup(lookup(tenant, spec, embedding=[1.0] * 384))).hit


async def test_single_flight_collapses_50_identical_misses(
    cache: RunningCache, stub: Stub, tenant: str
) -> None:
    spec = gen("An expensive question", temperature=0.7)
    upstream_calls = 0
    waiters_ready = asyncio.Event()

    async def client() -> bytes:
        nonlocal upstream_calls
        reply = await stub.Lookup(lookup(tenant, spec, single_flight=True), timeout=20)
        if reply.hit:
            assert reply.outcome == c.CACHE_OUTCOME_COALESCED
            return reply.entry.payload
        assert reply.flight_token, "a miss without a token would go upstream"
        upstream_calls += 1
        await waiters_ready.wait()
        await stub.Store(store(tenant, spec, b"the answer", flight_token=reply.flight_token))
        return b"the answer"

    clients = [asyncio.create_task(client()) for _ in range(50)]
    key = (await stub.Lookup(lookup(tenant, spec, policy=c.CachePolicy(mode=c.CACHE_MODE_BYPASS)))).key
    await wait_for(lambda: cache.engine.flights.waiters(key) >= 49, 15, 0.01, what="49 waiters joined")
    waiters_ready.set()
    answers = await asyncio.gather(*clients)
    assert upstream_calls == 1
    assert answers == [b"the answer"] * 50
    stats = await stub.Stats(pb.StatsRequest(tenant=tenant))
    assert stats.coalesced >= 49


async def test_abandoned_flight_releases_waiters_as_misses(
    stub: Stub, tenant: str, cache: RunningCache
) -> None:
    spec = gen("A question nobody answers", temperature=0.7)
    leader = await stub.Lookup(lookup(tenant, spec, single_flight=True))
    assert leader.flight_token
    waiter = asyncio.ensure_future(stub.Lookup(lookup(tenant, spec, single_flight=True), timeout=10))
    await wait_for(lambda: cache.engine.flights.waiters(leader.key) >= 1, 10, 0.01, what="the waiter joining")
    released = await stub.AbandonFlight(pb.AbandonFlightRequest(flight_token=leader.flight_token))
    assert released.released_waiters == 1
    reply = await waiter
    assert not reply.hit and not reply.flight_token
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AbandonFlight(pb.AbandonFlightRequest(flight_token=leader.flight_token))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_waiter_deadline_gives_a_plain_miss(
    redis_server: RedisServer, migrated_dsn: str, tenant: str
) -> None:
    # NOTE: the waiter answers `deadline_margin_ms` before the caller's deadline. The default 3 ms
    # is too little for the reply to reach the client on a busy test machine (the call then ends in
    # DEADLINE_EXCEEDED instead of a miss), so this server keeps 500 ms free of a 2 s deadline.
    running = await start_in_process(
        make_config(deadline_margin_ms=500.0), redis_server.url, migrated_dsn, embedder=HashingEmbedder(384)
    )
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            spec = gen("A slow question", temperature=0.7)
            leader = await stub.Lookup(lookup(tenant, spec, single_flight=True))
            assert leader.flight_token
            waiter = await stub.Lookup(lookup(tenant, spec, single_flight=True), timeout=2.0)
            assert not waiter.hit and not waiter.flight_token and waiter.outcome == c.CACHE_OUTCOME_MISS
            await stub.AbandonFlight(pb.AbandonFlightRequest(flight_token=leader.flight_token))
    finally:
        await running.stop()


async def _invalid(call: object, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")
    info = error_info(rpc_status.from_call(err.value))
    assert info is not None and info.domain == "cache.corral" and info.metadata["field"] == field


async def test_bad_input_is_invalid_argument(stub: Stub, tenant: str) -> None:
    await _invalid(stub.Lookup(pb.LookupRequest(tenant=tenant)), "request")
    await _invalid(stub.Lookup(lookup(tenant, gen("hi", model=""))), "generate.model")
    await _invalid(stub.Lookup(lookup(tenant, gen("x" * (1024 * 1024 + 1)))), "generate.prompt")
    big_chat = c.ChatSpec(model="m", messages=[c.ChatMessage(role="user", content="x" * (1024 * 1024 + 1))])
    await _invalid(stub.Lookup(lookup(tenant, big_chat)), "chat.messages")
    await _invalid(stub.Lookup(lookup(tenant, gen("hi"), embedding=[0.1] * 383)), "embedding")
    await _invalid(stub.Store(store(tenant, gen("hi"), b"x", embedding=[0.1] * 768)), "embedding")
    await _invalid(stub.Lookup(lookup(tenant, gen("hi"), embedding=[0.0] * 384)), "embedding")
    await _invalid(stub.Lookup(lookup("x" * 300, gen("hi"))), "tenant")
    negative = c.CachePolicy(ttl=Duration(seconds=-1))
    await _invalid(stub.Store(store(tenant, gen("hi"), b"x", policy=negative)), "policy.ttl")
    no_type = pb.StoreRequest(tenant=tenant, generate=gen("hi"), entry=pb.CacheEntry(payload=b"x"))
    await _invalid(stub.Store(no_type), "entry.payload_type")
    await _invalid(stub.Store(store(tenant, gen("hi"), b"x", flight_token="nope")), "flight_token")
    await _invalid(stub.AbandonFlight(pb.AbandonFlightRequest()), "flight_token")
    await _invalid(stub.Invalidate(pb.InvalidateRequest()), "tenant")
    await _invalid(stub.Invalidate(pb.InvalidateRequest(key="zz")), "key")
    # NOTE: a Duration protobuf itself calls invalid cannot be put into a key; a negative keep_alive
    # (Ollama's "forever") is fine.
    too_long = gen("hi", keep_alive=Duration(seconds=315_576_000_001))
    await _invalid(stub.Store(store(tenant, too_long, b"x")), "generate.keep_alive")
    mixed = gen("hi", keep_alive=Duration(seconds=1, nanos=-1))
    await _invalid(stub.Lookup(lookup(tenant, mixed)), "generate.keep_alive")
    huge_ttl = c.CachePolicy(ttl=Duration(seconds=315_576_000_001))
    await _invalid(stub.Store(store(tenant, gen("hi"), b"x", policy=huge_ttl)), "policy.ttl")
    forever = gen("keep it loaded", keep_alive=Duration(seconds=-1))
    assert (await stub.Store(store(tenant, forever, b"x"))).stored_exact


async def test_invalidate_by_tenant_model_and_key(stub: Stub, tenant: str) -> None:
    a = await stub.Store(store(tenant, gen("Question A"), b"a"))
    await stub.Store(store(tenant, gen("Question B"), b"b"))
    await stub.Store(store(tenant, gen("Question C", model="mistral:7b"), b"c"))
    by_key = await stub.Invalidate(pb.InvalidateRequest(key=a.key))
    assert (by_key.exact_removed, by_key.semantic_removed) == (1, 1)
    by_model = await stub.Invalidate(pb.InvalidateRequest(tenant=tenant, model="mistral:7b"))
    assert (by_model.exact_removed, by_model.semantic_removed) == (1, 1)
    rest = await stub.Invalidate(pb.InvalidateRequest(tenant=tenant))
    assert (rest.exact_removed, rest.semantic_removed) == (1, 1)
    assert not (await stub.Lookup(lookup(tenant, gen("Question B")))).hit


async def test_stats_and_maintenance(stub: Stub, tenant: str) -> None:
    spec = gen("A question for the stats")
    await stub.Lookup(lookup(tenant, spec))
    await stub.Store(store(tenant, spec, b"x", policy=c.CachePolicy(ttl=Duration(nanos=1_000_000))))
    await stub.Store(store(tenant, gen("Another question for the stats"), b"y"))
    stats = await stub.Stats(pb.StatsRequest(tenant=tenant))
    assert stats.exact.misses >= 1 and stats.exact.stores >= 2 and stats.semantic.stores >= 2
    assert stats.semantic.entries == 2 and stats.embedder == "hashing:384"
    assert not stats.exact_degraded and not stats.semantic_degraded
    assert stats.exact.lookup_p50_ms > 0
    await asyncio.sleep(0.01)  # NOTE: the 1 ms entry must be past its expiry; time is the subject.
    report = await stub.RunMaintenance(pb.RunMaintenanceRequest(vacuum=True))
    assert report.expired_removed >= 1 and report.vacuumed and report.semantic_entries >= 1
    assert (await stub.Stats(pb.StatsRequest(tenant=tenant))).semantic.entries == 1
    aged = await stub.RunMaintenance(pb.RunMaintenanceRequest(max_age=Duration(seconds=0)))
    assert aged.expired_removed >= 1
    assert (await stub.Stats(pb.StatsRequest(tenant=tenant))).semantic.entries == 0
