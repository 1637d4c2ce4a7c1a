"""The router's near cache end to end: real Redis and PostgreSQL, cache, health, two routers and nodes.

Router one runs without auth (tenant "default") and serves HTTP; router two authenticates two tenants.
Both keep a near cache subscribed to the cache's event channel on the same Redis.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import redis.asyncio as aioredis
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc, common_pb2, router_service_pb2
from corral.v1 import router_service_pb2_grpc as rpc

from devstack.redis import RedisServer
from services.cache.exact_store import EVENTS_CHANNEL, EVENTS_USER, redis_key
from services.cache.keys import derive
from tests.helpers.polling import wait_for
from tests.helpers.procs import ServiceProcess, free_port, run_cli
from tests.router.stack import MODEL, Stack, embedder_nodes_env, gen_request, redis_cache_env, start_stack
from tests.security.helpers import SERVICE_KEY, TENANT_A_KEY, TENANT_B_KEY, bearer, keys_env

pytestmark = pytest.mark.timeout(120)

EXACT = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_EXACT)
SUBSCRIBED = "near cache: subscribed to"
LOST = "near cache: event subscription lost"


@dataclass
class Routers:
    stack: Stack
    second: ServiceProcess
    second_channel: grpc.aio.Channel
    http_port: int
    redis: aioredis.Redis

    @property
    def first(self) -> rpc.RouterServiceStub:
        return self.stack.stub

    @property
    def other(self) -> rpc.RouterServiceStub:
        return rpc.RouterServiceStub(self.second_channel)

    @property
    def cache_addr(self) -> str:
        assert self.stack.cache is not None
        return f"127.0.0.1:{self.stack.cache.port}"


def near_env(redis_url: str) -> dict[str, str]:
    """A router with its near cache on `redis_url`: the subscribe-only user, as in the deployments."""
    return {
        "CORRAL_ROUTER__NEAR_CACHE__REDIS_URL": redis_url,
        "CORRAL_ROUTER__NEAR_CACHE__PING_INTERVAL_S": "0.5",
        # NOTE: outcomes are checked, not the budget (a loaded machine turns a MISS into DEGRADED).
        "CORRAL_ROUTER__LOOKUP_BUDGET_MS": "2000",
        # NOTE: the near cache logs its subscriptions at INFO: the tests wait for those lines.
        "CORRAL_LOGGING__LEVEL": "INFO",
        "CORRAL_LOGGING__ACCESS_LOG": "false",
    }


def subscriptions(proc: ServiceProcess, line: str = SUBSCRIBED) -> int:
    return sum(line in out for out in proc.output)


@pytest.fixture
async def routers(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[Routers]:
    http_port = free_port()
    stack = await start_stack(
        node_count=2,
        cache_env=redis_cache_env(redis_server.url, migrated_dsn),
        cache_env_from_nodes=embedder_nodes_env,
        router_env={
            **near_env(redis_server.user_url(EVENTS_USER)),
            "CORRAL_ROUTER__HTTP_PORT": str(http_port),
        },
    )
    second: ServiceProcess | None = None
    channel: grpc.aio.Channel | None = None
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert stack.health is not None and stack.cache is not None and stack.router is not None
        second = ServiceProcess(
            "services.router",
            env={
                "CORRAL_ROUTER__PORT": "0",
                "CORRAL_ROUTER__HTTP_PORT": str(free_port()),
                "CORRAL_ROUTER__HEALTH_ADDR": f"127.0.0.1:{stack.health.port}",
                "CORRAL_ROUTER__CACHE_ADDR": f"127.0.0.1:{stack.cache.port}",
                "CORRAL_ROUTER__NODES": "[]",
                "CORRAL_AUTH__ENABLED": "true",
                "CORRAL_AUTH__KEYS": keys_env(),
                "CORRAL_AUTH__SERVICE_KEY": SERVICE_KEY,
                **near_env(redis_server.user_url(EVENTS_USER)),
            },
        )
        await second.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{second.port}")
        await _wait_models_known(rpc.RouterServiceStub(channel))
        await wait_for(
            lambda: subscriptions(stack.router) and subscriptions(second),  # type: ignore[arg-type]
            timeout_s=15,
            what="both near caches subscribed",
        )
        yield Routers(stack, second, channel, http_port, client)
    finally:
        if channel is not None:
            await channel.close()
        if second is not None:
            await second.kill()
        await client.aclose()
        await stack.close()


async def _wait_models_known(stub: rpc.RouterServiceStub) -> None:
    probe = router_service_pb2.GenerateRequest(
        spec=common_pb2.GenerateSpec(model="no-such-model", prompt="x")
    )

    async def known() -> bool:
        try:
            await stub.Generate(probe, timeout=2, metadata=bearer(TENANT_A_KEY))
        except grpc.aio.AioRpcError as exc:
            return exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        return False

    await wait_for(known, timeout_s=15, what="the second router knows the models")


async def ask(
    stub: rpc.RouterServiceStub, request: router_service_pb2.GenerateRequest, key: str = ""
) -> router_service_pb2.GenerateResponse:
    reply: router_service_pb2.GenerateResponse = await stub.Generate(
        request, timeout=10, metadata=bearer(key) if key else None
    )
    return reply


async def warm(
    stub: rpc.RouterServiceStub, request: router_service_pb2.GenerateRequest, key: str = ""
) -> str:
    """Asks until the answer comes from the near cache (a miss stores, a cache hit fills the near cache)."""
    answers: list[router_service_pb2.GenerateResponse] = []

    async def near_hit() -> bool:
        answers.append(await ask(stub, request, key))
        return answers[-1].routing.near_cache

    await wait_for(near_hit, timeout_s=15, what="a near-cache hit")
    hit = answers[-1]
    assert hit.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT and hit.routing.node_id == ""
    # NOTE: the first answer came from a node, a later one from the cache, before the near cache served.
    assert answers[0].routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    assert any(
        a.routing.cache_outcome == common_pb2.CACHE_OUTCOME_EXACT_HIT and not a.routing.near_cache
        for a in answers
    )
    return hit.response


async def cache_store(
    routers: Routers, request: router_service_pb2.GenerateRequest, text: str, tenant: str
) -> None:
    answer = router_service_pb2.GenerateResponse(model=MODEL, response=text, done_reason="stop")
    entry = cache_service_pb2.CacheEntry(
        payload=answer.SerializeToString(), payload_type=answer.DESCRIPTOR.full_name
    )
    store = cache_service_pb2.StoreRequest(
        tenant=tenant, generate=request.spec, policy=request.cache, entry=entry
    )
    async with grpc.aio.insecure_channel(routers.cache_addr) as channel:
        stub = cache_service_pb2_grpc.CacheServiceStub(channel)

        async def stored() -> bool:
            # NOTE: a store the cache could not write (a busy machine's Redis timeout) is tried again.
            reply = await stub.Store(store, timeout=5)
            return bool(reply.stored_exact)

        await wait_for(stored, timeout_s=15, interval_s=0.2, what="the cache stored the answer")


async def test_a_near_hit_says_so_over_grpc_and_http(routers: Routers) -> None:
    request = gen_request("near cache: what is a corral?", cache=EXACT)
    text = await warm(routers.first, request)
    body = {"model": MODEL, "prompt": request.spec.prompt, "stream": False}
    assert routers.stack.http is not None
    async with routers.stack.http.post(
        f"http://127.0.0.1:{routers.http_port}/api/generate",
        json=body,
        headers={"X-Corral-Cache-Mode": "exact"},
    ) as resp:
        assert resp.status == 200
        seen = resp.headers["X-Corral-Cache"]
        answer = await resp.json()
    # NOTE: the HTTP request's policy may differ from the gRPC one (a separate near entry): it is
    # either filled now (exact-hit from the cache) or already near.
    assert seen in ("near-hit", "exact-hit")
    assert answer["response"] == text
    async with routers.stack.http.post(
        f"http://127.0.0.1:{routers.http_port}/api/generate",
        json=body,
        headers={"X-Corral-Cache-Mode": "exact"},
    ) as resp:
        assert resp.headers["X-Corral-Cache"] == "near-hit"
        assert (await resp.json())["response"] == text


async def test_a_newer_answer_replaces_the_near_entry(routers: Routers) -> None:
    request = gen_request("near cache: replaced on store", cache=EXACT)
    old = await warm(routers.first, request)
    await cache_store(routers, request, "a newer answer", "default")
    started = time.monotonic()
    seen: list[router_service_pb2.GenerateResponse] = []

    async def replaced() -> bool:
        seen.append(await ask(routers.first, request))
        return seen[-1].response == "a newer answer"

    await wait_for(replaced, timeout_s=5, interval_s=0.01, what="the newer answer")
    assert all(s.response == old for s in seen[:-1])
    assert time.monotonic() - started < 5
    # The newer answer is then kept near in its turn.
    assert await warm_near(routers.first, request) == "a newer answer"


async def test_cli_invalidate_reaches_both_routers(routers: Routers) -> None:
    request = gen_request("near cache: invalidated by the operator", cache=EXACT)
    await warm(routers.first, request)
    await warm(routers.other, request, TENANT_A_KEY)
    code, _, err = await run_cli(
        {}, "cache", "invalidate", "--cache", routers.cache_addr, "--all-tenants", "--model", MODEL
    )
    assert code == 0, err
    invalidated = time.monotonic()
    first = await ask(routers.first, request)
    other = await ask(routers.other, request, TENANT_A_KEY)
    elapsed = time.monotonic() - invalidated
    # NOTE: the CLI returns after the cache published; each router drops its entries when the event
    # arrives, well before the next request is answered.
    assert not first.routing.near_cache and first.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    assert not other.routing.near_cache and other.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS
    assert elapsed < 5, elapsed


async def test_a_near_entry_lasts_no_longer_than_its_ttl(routers: Routers) -> None:
    policy = common_pb2.CachePolicy(mode=common_pb2.CACHE_MODE_EXACT)
    policy.ttl.FromSeconds(2)
    request = gen_request("near cache: short lived", cache=policy)
    await warm(routers.first, request)
    name = _name(request)
    # NOTE: Redis expires the entry at the TTL the cache stored it with; the near entry lapses with it.
    await wait_for(lambda: _gone(routers.redis, name), timeout_s=10, what="Redis expired the entry")
    after = await ask(routers.first, request)
    assert not after.routing.near_cache
    assert after.routing.cache_outcome == common_pb2.CACHE_OUTCOME_MISS and after.routing.node_id


def _name(request: router_service_pb2.GenerateRequest) -> str:
    """The Redis key of the default tenant's exact entry for `request`."""
    view = derive("default", request.spec)
    return redis_key(view.tenant, view.model, view.exact_key)


def _entry(text: str) -> bytes:
    """A stored CacheEntry holding `text` as the answer, alive for a minute."""
    answer = router_service_pb2.GenerateResponse(model=MODEL, response=text, done_reason="stop")
    entry = cache_service_pb2.CacheEntry(
        payload=answer.SerializeToString(), payload_type=answer.DESCRIPTOR.full_name
    )
    now = datetime.now(UTC)
    entry.created_at.FromDatetime(now)
    entry.expires_at.FromDatetime(now + timedelta(seconds=60))
    return entry.SerializeToString()


async def _gone(client: aioredis.Redis, name: str) -> bool:
    return not await client.exists(name)


async def test_tenant_b_never_gets_tenant_a_near_entry(routers: Routers) -> None:
    request = gen_request("near cache: tenant a's question", cache=EXACT)
    await cache_store(routers, request, "tenant a's answer", "tenant-a")
    await cache_store(routers, request, "tenant b's answer", "tenant-b")
    a = await warm_near(routers.other, request, TENANT_A_KEY)
    assert a == "tenant a's answer"
    for _ in range(3):
        b = await ask(routers.other, request, TENANT_B_KEY)
        assert b.response == "tenant b's answer"
    assert (await ask(routers.other, request, TENANT_B_KEY)).routing.near_cache
    assert (await ask(routers.other, request, TENANT_A_KEY)).response == "tenant a's answer"


async def warm_near(
    stub: rpc.RouterServiceStub, request: router_service_pb2.GenerateRequest, key: str = ""
) -> str:
    """The answer of the first of up to 50 asks that the near cache serves."""
    for _ in range(50):
        reply = await ask(stub, request, key)
        if reply.routing.near_cache:
            return reply.response
    raise AssertionError("never served from the near cache")


async def test_a_lost_subscription_clears_the_near_cache(routers: Routers) -> None:
    router = routers.stack.router
    assert router is not None
    request = gen_request("near cache: subscription lost", cache=EXACT)
    await warm(routers.first, request)
    before = subscriptions(router)
    assert await routers.redis.pubsub_numsub(EVENTS_CHANNEL) == [(EVENTS_CHANNEL.encode(), 2)]
    killed = await routers.redis.client_kill_filter(_type="pubsub")
    assert killed == 2
    await wait_for(lambda: subscriptions(router, LOST) >= 1, timeout_s=10, what="the router saw the loss")
    # NOTE: an answer written while the link was down, with no event (as if its event was published
    # before the router resubscribed), is never hidden by the old near entry: the near cache was
    # cleared, so the next request asks the cache.
    await routers.redis.set(_name(request), _entry("written while unsubscribed"), px=60_000)
    reply = await ask(routers.first, request)
    assert reply.response == "written while unsubscribed" and not reply.routing.near_cache
    await wait_for(lambda: subscriptions(router) > before, timeout_s=10, what="the router resubscribed")
    assert await warm_near(routers.first, request) == "written while unsubscribed"
