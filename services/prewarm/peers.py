"""gRPC adapters to the router (cache seeding at background priority) and the cache (maintenance)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from corral.v1 import (
    cache_service_pb2,
    cache_service_pb2_grpc,
    common_pb2,
    router_service_pb2,
    router_service_pb2_grpc,
)
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from services.common.wire import CACHE_MAX_BATCH
from services.prewarm.ports import MaintenanceResult, PeerError, SeedResult
from services.prewarm.seeds import SeedQuery

_CACHED_OUTCOMES = frozenset(
    {
        common_pb2.CACHE_OUTCOME_EXACT_HIT,
        common_pb2.CACHE_OUTCOME_SEMANTIC_HIT,
        common_pb2.CACHE_OUTCOME_COALESCED,
    }
)
_INT_OPTIONS = frozenset({"top_k", "num_predict", "seed", "repeat_last_n", "num_keep", "num_ctx"})


def peer_error(exc: grpc.aio.AioRpcError, peer: str, address: str) -> PeerError:
    """Turns a failed call into a PeerError; a transport failure (no rich status) marks it unreachable."""
    code = exc.code()
    trailing = exc.trailing_metadata() or ()
    rich = any(key == "grpc-status-details-bin" for key, _ in trailing)
    unreachable = code == grpc.StatusCode.UNAVAILABLE and not rich
    detail = exc.details() or code.name
    if unreachable:
        return PeerError(f"{peer} at {address} is unavailable: {detail}", unreachable=True)
    return PeerError(f"{peer} answered {code.name}: {detail}")


def model_options(values: dict[str, float | int]) -> common_pb2.ModelOptions:
    """Builds ModelOptions from a seed query's options (names are checked when the file is read)."""
    options = common_pb2.ModelOptions()
    for name, value in sorted(values.items()):
        setattr(options, name, int(value) if name in _INT_OPTIONS else float(value))
    return options


def seed_spec(model: str, query: SeedQuery) -> common_pb2.GenerateSpec | common_pb2.ChatSpec:
    """The request a seed query makes: what the router receives, and what keys its answer in the cache."""
    options = model_options(query.options)
    if query.is_chat:
        messages = [common_pb2.ChatMessage(role=m.role, content=m.content) for m in query.messages]
        return common_pb2.ChatSpec(model=model, messages=messages, options=options)
    return common_pb2.GenerateSpec(model=model, prompt=query.prompt, system=query.system, options=options)


def _answer(reply: Message) -> tuple[bytes, str]:
    """The router's answer as its cache stores it (the routing details are not part of an answer)."""
    answer = type(reply)()
    answer.CopyFrom(reply)
    answer.ClearField("routing")
    return answer.SerializeToString(), answer.DESCRIPTOR.full_name


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


class RouterSeeder:
    """Sends seed queries through the router as background-priority requests."""

    def __init__(self, channel: grpc.aio.Channel, address: str) -> None:
        self._stub = router_service_pb2_grpc.RouterServiceStub(channel)
        self._address = address

    async def seed(self, model: str, query: SeedQuery, *, refresh: bool, timeout_s: float) -> SeedResult:
        """Sends one query (Generate or Chat) and says whether the router answered it from the cache."""
        policy = common_pb2.CachePolicy(
            mode=common_pb2.CACHE_MODE_REFRESH if refresh else common_pb2.CACHE_MODE_UNSPECIFIED
        )
        spec = seed_spec(model, query)
        reply: router_service_pb2.ChatResponse | router_service_pb2.GenerateResponse
        try:
            if isinstance(spec, common_pb2.ChatSpec):
                reply = await self._stub.Chat(
                    router_service_pb2.ChatRequest(
                        spec=spec, cache=policy, priority=common_pb2.PRIORITY_BACKGROUND
                    ),
                    timeout=timeout_s,
                )
            else:
                reply = await self._stub.Generate(
                    router_service_pb2.GenerateRequest(
                        spec=spec, cache=policy, priority=common_pb2.PRIORITY_BACKGROUND
                    ),
                    timeout=timeout_s,
                )
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "router", self._address) from None
        routing = reply.routing
        outcome = common_pb2.CacheOutcome.Name(routing.cache_outcome).removeprefix("CACHE_OUTCOME_")
        answer, answer_type = _answer(reply)
        return SeedResult(
            already_cached=routing.cache_outcome in _CACHED_OUTCOMES,
            node_id=routing.node_id,
            cache_outcome=outcome,
            answer=answer,
            answer_type=answer_type,
        )


class CacheMaintainer:
    """Asks the cache service to run maintenance."""

    def __init__(self, channel: grpc.aio.Channel, address: str) -> None:
        self._stub = cache_service_pb2_grpc.CacheServiceStub(channel)
        self._address = address

    async def run_maintenance(self, *, max_age_s: float, vacuum: bool, timeout_s: float) -> MaintenanceResult:
        """Runs RunMaintenance; max_age_s 0 removes only expired entries."""
        request = cache_service_pb2.RunMaintenanceRequest(vacuum=vacuum)
        if max_age_s > 0:
            request.max_age.CopyFrom(_duration(max_age_s))
        try:
            reply = await self._stub.RunMaintenance(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "cache", self._address) from None
        return MaintenanceResult(
            expired_removed=reply.expired_removed,
            vacuumed=reply.vacuumed,
            semantic_entries=reply.semantic_entries,
            duration_s=reply.duration.ToNanoseconds() / 1e9,
            backfilled=reply.backfilled,
            backfill_pending=reply.backfill_pending,
        )

    async def store_seeded(
        self, model: str, query: SeedQuery, result: SeedResult, tenants: Sequence[str], *, timeout_s: float
    ) -> int:
        """StoreBatch of the answer for each tenant, keyed by the seed's request as the router keys it.

        The cache plans each store with the tenant's own policies (its semantic policy, default TTL),
        as for an answer the router stores for that tenant.
        """
        spec = seed_spec(model, query)
        field = "chat" if isinstance(spec, common_pb2.ChatSpec) else "generate"
        entry = cache_service_pb2.CacheEntry(payload=result.answer, payload_type=result.answer_type)
        stored = 0
        for first in range(0, len(tenants), CACHE_MAX_BATCH):
            batch = cache_service_pb2.StoreBatchRequest(
                entries=[
                    cache_service_pb2.StoreRequest(tenant=tenant, entry=entry, **{field: spec})  # type: ignore[arg-type]
                    for tenant in tenants[first : first + CACHE_MAX_BATCH]
                ]
            )
            try:
                reply = await self._stub.StoreBatch(batch, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise peer_error(exc, "cache", self._address) from None
            stored += sum(1 for r in reply.results if r.stored_exact)
        return stored
