"""Adapter to the cache service: lookups inside a small budget, stores off the hot path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import grpc
from corral.v1 import cache_service_pb2, cache_service_pb2_grpc, common_pb2
from google.protobuf.message import Message

from services.common.wire import CACHE_MAX_BATCH
from services.router.lookup_budget import LookupBudget

logger = logging.getLogger(__name__)

_STORE_TIMEOUT_S = 5.0
# NOTE: (tenant, model) pairs whose semantic policy the client remembers (the least recent go first).
_POLICIES_KEPT = 4096
# NOTE: what Ollama samples at when a request sets no temperature (the cache counts it so too).
_UNSET_TEMPERATURE = 0.8
_Item = cache_service_pb2.StoreRequest | cache_service_pb2.AbandonFlightRequest


@dataclass(slots=True)
class LookupResult:
    """What a lookup found.

    Attributes:
        outcome: The CacheOutcome (DEGRADED when the cache was down or slow).
        entry: The cached entry on a hit.
        similarity: Cosine similarity of a semantic hit.
        flight_token: On a miss, the single-flight lease this router must Store or abandon.
        reason: Why the lookup missed or skipped a tier (the cache's words, or why it was not asked).
        key: The cache's exact key of the request ("" when the cache did not answer).
    """

    outcome: common_pb2.CacheOutcome.ValueType
    entry: cache_service_pb2.CacheEntry | None = None
    similarity: float = 0.0
    flight_token: str = ""
    reason: str = ""
    key: str = ""


def _policy_key(request: cache_service_pb2.LookupRequest) -> tuple[str, str]:
    spec = request.generate if request.WhichOneof("request") == "generate" else request.chat
    return request.tenant, spec.model


def semantic_tier_may_answer(spec: Message, policy: common_pb2.CachePolicy, ceiling: float | None) -> bool:
    """True when the cache's semantic tier may answer the request (services/cache/keys.py `plan`), so
    that its lookup may first embed the question.

    `ceiling` is the semantic_max_temperature the cache reported for the tenant and model (-1 for
    "never", inf for "always"); None before it has reported one, for the cache's default rule
    ("deterministic": CACHE_MODE_SEMANTIC, or the default mode with temperature exactly 0).
    """
    assert isinstance(spec, common_pb2.GenerateSpec | common_pb2.ChatSpec)
    if isinstance(spec, common_pb2.ChatSpec) and spec.tools:
        return False  # never answered from the semantic tier (services/cache/keys.py)
    if policy.mode == common_pb2.CACHE_MODE_SEMANTIC:
        return ceiling is None or ceiling >= 0
    if policy.mode != common_pb2.CACHE_MODE_UNSPECIFIED:
        return False
    options = spec.options
    if ceiling is None:
        return options.HasField("temperature") and options.temperature == 0
    temperature = options.temperature if options.HasField("temperature") else _UNSET_TEMPERATURE
    return round(temperature, 6) <= round(ceiling, 6)


def reason_without_lookup(has_cache: bool, is_load: bool, mode: common_pb2.CacheMode.ValueType) -> str:
    """Why a request is not looked up at all ("" when it is)."""
    if not has_cache:
        return "no cache configured"
    if is_load:
        return "model load request"
    if mode == common_pb2.CACHE_MODE_BYPASS:
        return "bypass requested"
    if mode == common_pb2.CACHE_MODE_REFRESH:
        return "refresh requested"
    return ""


def _set_request(
    target: cache_service_pb2.LookupRequest | cache_service_pb2.StoreRequest, spec: Message
) -> None:
    if isinstance(spec, common_pb2.GenerateSpec):
        target.generate.CopyFrom(spec)
    elif isinstance(spec, common_pb2.ChatSpec):
        target.chat.CopyFrom(spec)


def _sort(item: _Item, batch: list[cache_service_pb2.StoreRequest], others: list[_Item]) -> None:
    if isinstance(item, cache_service_pb2.StoreRequest):
        batch.append(item)
    else:
        others.append(item)


# NOTE: what a waiter receives when its budget ran out before the cache answered.
_EXPIRED = cache_service_pb2.LookupResponse(
    outcome=common_pb2.CACHE_OUTCOME_DEGRADED, reason="cache lookup over the router's budget"
)
_Reply = asyncio.Future[cache_service_pb2.LookupResponse | None]
# NOTE: a queued lookup: the request, its caller's future, when it asked and the budget it was given.
_Queued = tuple[cache_service_pb2.LookupRequest, _Reply, float, float]


def _expire(future: _Reply) -> None:
    if not future.done():
        future.set_result(_EXPIRED)


class _LookupLane:
    """Lookups of one budget: sent at once while fewer than `calls` RPCs are in flight; the ones that
    queue up meanwhile leave together, as one LookupBatch, when a call returns.

    No lookup ever waits for a batch to fill: at low load every lookup is its own Lookup call, and
    under load one RPC carries many lookups, which is what the router's and the cache's CPU pay for.
    """

    def __init__(self, client: CacheClient, budget: LookupBudget, calls: int, batch_max: int) -> None:
        self._client = client
        self.budget = budget
        # NOTE: a call lives until the ceiling, past its callers' budget, so that the reply times the
        # budget learns from are the cache's, not the budget's.
        self._timeout_s = budget.ceiling_s
        self._calls = max(1, calls)
        self._batch_max = max(1, batch_max)
        self._queue: deque[_Queued] = deque()
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def ask(self, request: cache_service_pb2.LookupRequest) -> cache_service_pb2.LookupResponse | None:
        """The cache's reply, `_EXPIRED` when the budget ran out, None when the call failed."""
        loop = asyncio.get_running_loop()
        future: _Reply = loop.create_future()
        budget_s = self.budget.seconds()
        timer = loop.call_later(budget_s, _expire, future)
        self._queue.append((request, future, time.perf_counter(), budget_s))
        if self.in_flight < self._calls:
            self._launch()
        try:
            return await future
        finally:
            timer.cancel()

    def _launch(self) -> None:
        batch: list[_Queued] = []
        while self._queue and len(batch) < self._batch_max:
            item = self._queue.popleft()
            if not item[1].done():
                batch.append(item)
            else:
                self.budget.unsent(item[3])
        if not batch:
            return
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Queued]) -> None:
        try:
            replies = await self._client.call_lookups([item[0] for item in batch], self._timeout_s)
        finally:
            self.in_flight -= 1
            while self._queue and self.in_flight < self._calls:
                self._launch()
        now = time.perf_counter()
        for (_, _, asked, _), reply in zip(batch, replies, strict=True):
            if reply is None:
                self.budget.failed()
            else:
                self.budget.replied(now - asked)
        # NOTE: a late reply (the waiter's budget ran out) may have made it a flight's leader. Its
        # lease is not released here: the request goes on as a miss and its Store completes the
        # flight by key; only a request that fails leaves the lease to expire (`flight_lease_s`),
        # and identical lookups wait for it no longer than their own budget. An AbandonFlight call
        # per late reply would add RPCs exactly when the cache is too slow already.
        for (_, future, _, _), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result(reply)


def _log_embeddings_error(call: str, exc: grpc.aio.AioRpcError) -> None:
    """A cache that is down or slow is expected (fail open); one that refuses the request is a bug."""
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        logger.warning("the cache refused an embeddings %s as malformed (a bug): %s", call, exc.details())
    else:
        logger.debug("cache embeddings %s failed: %s", call, exc.code().name)


class CacheClient:
    """Looks answers up within `lookup_budget_ms` and stores answers through a bounded queue.

    The cache fails open by contract, and so does this client: an error or a lookup slower than
    the budget is a DEGRADED miss; a store that cannot be queued or sent is dropped. Lookups that
    arrive while `lookup_calls` RPCs are in flight are sent together as one LookupBatch (up to
    `lookup_batch_max`; 1 sends every lookup as its own Lookup call). Each budget is a floor: while
    the cache answers, it follows the measured reply times up to `lookup_budget_max_ms`
    (services/router/lookup_budget.py; None keeps it fixed).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        lookup_budget_ms: float,
        queue_size: int,
        store_workers: int = 4,
        store_batch_max: int = 64,
        store_batch_wait_ms: float = 2.0,
        lookup_calls: int = 2,
        lookup_batch_max: int = 1,
        lookup_budget_max_ms: float | None = None,
    ) -> None:
        self._stub = cache_service_pb2_grpc.CacheServiceStub(channel)
        self._budget_s = lookup_budget_ms / 1000
        self._ceiling_s = (lookup_budget_max_ms or lookup_budget_ms) / 1000
        self._lookup_calls = lookup_calls
        self._lookup_batch_max = lookup_batch_max
        self._lanes: dict[float, _LookupLane] = {}
        # NOTE: None until the cache has answered a LookupBatch; False when it is too old to know it.
        self._lookup_batch_supported: bool | None = None
        self.lookup_calls_sent = 0
        self.lookup_batches = 0
        self.lookups_batched = 0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._workers = store_workers
        self._batch_max = max(1, store_batch_max)
        self._batch_wait_s = store_batch_wait_ms / 1000
        # NOTE: None until the cache has answered a StoreBatch; False when it is too old to know it.
        self._batch_supported: bool | None = None
        self.stores_sent = 0
        self.stores_failed = 0
        self.stores_dropped = 0
        self.store_batches = 0
        # NOTE: embedding stores in flight, referenced until they finish.
        self._embedding_stores: set[asyncio.Task[None]] = set()
        # NOTE: the semantic ceiling the cache last reported per (tenant, model) (LookupResponse).
        self._ceilings: OrderedDict[tuple[str, str], float] = OrderedDict()

    def semantic_may_answer(self, tenant: str, spec: Message, policy: common_pb2.CachePolicy) -> bool | None:
        """True when the cache's semantic policy, as it last reported it for this tenant and model,
        lets its semantic tier answer the request (so the lookup may first embed the question).

        None for a tenant and model not looked up yet: the caller's own rule then decides.
        """
        assert isinstance(spec, common_pb2.GenerateSpec | common_pb2.ChatSpec)
        ceiling = self._ceilings.get((tenant, spec.model))
        return None if ceiling is None else semantic_tier_may_answer(spec, policy, ceiling)

    def _learn(
        self,
        requests: list[cache_service_pb2.LookupRequest],
        replies: list[cache_service_pb2.LookupResponse | None],
    ) -> None:
        """Remembers each reply's semantic ceiling, late replies included."""
        for request, reply in zip(requests, replies, strict=True):
            if reply is None:
                continue
            key = _policy_key(request)
            self._ceilings[key] = reply.semantic_max_temperature
            self._ceilings.move_to_end(key)
        while len(self._ceilings) > _POLICIES_KEPT:
            self._ceilings.popitem(last=False)

    async def lookup(
        self, tenant: str, spec: Message, policy: common_pb2.CachePolicy, budget_s: float | None = None
    ) -> LookupResult:
        """Asks the cache; never raises (failures and lookups over budget are DEGRADED misses)."""
        request = cache_service_pb2.LookupRequest(tenant=tenant, policy=policy, single_flight=True)
        _set_request(request, spec)
        budget = budget_s if budget_s is not None else self._budget_s
        lane = self._lanes.get(budget)
        if lane is None:
            learned = LookupBudget(budget, max(budget, self._ceiling_s))
            lane = _LookupLane(self, learned, self._lookup_calls, self._lookup_batch_max)
            self._lanes[budget] = lane
        reply = await lane.ask(request)
        if reply is None:
            return LookupResult(outcome=common_pb2.CACHE_OUTCOME_DEGRADED, reason="cache unreachable")
        if reply.hit:
            return LookupResult(
                outcome=reply.outcome,
                entry=reply.entry,
                similarity=reply.similarity,
                reason=reply.reason,
                key=reply.key,
            )
        outcome = reply.outcome or common_pb2.CACHE_OUTCOME_MISS
        return LookupResult(outcome=outcome, flight_token=reply.flight_token, reason=reply.reason)

    def lookup_calls_in_flight(self) -> int:
        """Lookup RPCs sent and not returned yet, across budgets."""
        return sum(lane.in_flight for lane in self._lanes.values())

    def lookup_budgets(self) -> dict[float, float]:
        """Each lane's configured budget and the budget it gives a lookup now, in seconds."""
        return {base: lane.budget.seconds() for base, lane in self._lanes.items()}

    async def call_lookups(
        self, requests: list[cache_service_pb2.LookupRequest], timeout_s: float
    ) -> list[cache_service_pb2.LookupResponse | None]:
        """One Lookup, or one LookupBatch for several; None for each lookup whose call failed."""
        replies = await self._call_lookups(requests, timeout_s)
        self._learn(requests, replies)
        return replies

    async def _call_lookups(
        self, requests: list[cache_service_pb2.LookupRequest], timeout_s: float
    ) -> list[cache_service_pb2.LookupResponse | None]:
        self.lookup_calls_sent += 1
        if len(requests) > 1 and self._lookup_batch_supported is not False:
            try:
                batch: cache_service_pb2.LookupBatchResponse = await self._stub.LookupBatch(
                    cache_service_pb2.LookupBatchRequest(lookups=requests), timeout=timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
                    logger.debug("cache batch lookup failed: %s", code.name)
                    return [None] * len(requests)
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    logger.info("the cache has no LookupBatch; one lookup per call")
                    self._lookup_batch_supported = False
                # NOTE: one malformed lookup refuses the batch: the others go one by one.
                return list(await asyncio.gather(*(self._lookup_one(r, timeout_s) for r in requests)))
            self._lookup_batch_supported = True
            self.lookup_batches += 1
            self.lookups_batched += len(requests)
            if len(batch.results) == len(requests):
                return list(batch.results)
            logger.warning("the cache answered %d of %d lookups", len(batch.results), len(requests))
            return [None] * len(requests)
        if len(requests) == 1:
            return [await self._lookup_one(requests[0], timeout_s)]
        return list(await asyncio.gather(*(self._lookup_one(r, timeout_s) for r in requests)))

    async def _lookup_one(
        self, request: cache_service_pb2.LookupRequest, timeout_s: float
    ) -> cache_service_pb2.LookupResponse | None:
        try:
            reply: cache_service_pb2.LookupResponse = await self._stub.Lookup(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            logger.debug("cache lookup failed: %s", exc.code().name)
            return None
        return reply

    def _enqueue(self, item: _Item) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.stores_dropped += 1
        self._queue.put_nowait(item)

    def store(
        self,
        tenant: str,
        spec: Message,
        policy: common_pb2.CachePolicy,
        answer: Message,
        flight_token: str = "",
    ) -> None:
        """Queues an answer for storing (returns at once)."""
        entry = cache_service_pb2.CacheEntry(
            payload=answer.SerializeToString(), payload_type=answer.DESCRIPTOR.full_name
        )
        request = cache_service_pb2.StoreRequest(
            tenant=tenant, policy=policy, entry=entry, flight_token=flight_token
        )
        _set_request(request, spec)
        self._enqueue(request)

    def abandon(self, flight_token: str) -> None:
        """Queues the release of a single-flight lease this router could not fill."""
        if flight_token:
            self._enqueue(cache_service_pb2.AbandonFlightRequest(flight_token=flight_token))

    def _take(self, batch: list[cache_service_pb2.StoreRequest], others: list[_Item]) -> None:
        while len(batch) < self._batch_max and not self._queue.empty():
            _sort(self._queue.get_nowait(), batch, others)

    async def _worker(self) -> None:
        """Sends queued stores in batches (up to `store_batch_max`, waiting `store_batch_wait_ms`)."""
        while True:
            first = await self._queue.get()
            batch: list[cache_service_pb2.StoreRequest] = []
            others: list[_Item] = []
            _sort(first, batch, others)
            self._take(batch, others)
            if batch and len(batch) < self._batch_max and self._batch_wait_s > 0 and self._batch_supported:
                await asyncio.sleep(self._batch_wait_s)
                self._take(batch, others)
            # NOTE: abandons first: they release waiters and are cheap.
            for item in others:
                await self._send_one(item)
            if len(batch) > 1 and self._batch_supported is not False:
                await self._send_batch(batch)
            else:
                for item in batch:
                    await self._send_one(item)

    async def _send_batch(self, batch: list[cache_service_pb2.StoreRequest]) -> None:
        try:
            await self._stub.StoreBatch(
                cache_service_pb2.StoreBatchRequest(entries=batch), timeout=_STORE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
                self.stores_failed += len(batch)
                logger.debug("cache batch store failed: %s", code.name)
                return
            if code == grpc.StatusCode.UNIMPLEMENTED:
                logger.info("the cache has no StoreBatch; storing one answer per call")
                self._batch_supported = False
            # NOTE: one malformed entry (say an oversized answer) refuses the whole batch: the others
            # are sent one by one so that they are stored and their waiters released.
            for item in batch:
                await self._send_one(item)
            return
        self._batch_supported = True
        self.stores_sent += len(batch)
        self.store_batches += 1

    async def _send_one(self, item: _Item) -> None:
        try:
            if isinstance(item, cache_service_pb2.StoreRequest):
                await self._stub.Store(item, timeout=_STORE_TIMEOUT_S)
                self.stores_sent += 1
            else:
                await self._stub.AbandonFlight(item, timeout=_STORE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            self.stores_failed += 1
            logger.debug("cache store failed: %s", exc.code().name)

    async def lookup_embeddings(
        self, key: cache_service_pb2.EmbeddingKey, inputs: list[str], budget_s: float | None = None
    ) -> tuple[list[list[float] | None], bool]:
        """Cached vectors of `inputs` in input order (None for each miss), and whether the cache was
        down, slow or degraded (then the texts it did not answer are misses); never raises (fails
        open). More than CACHE_MAX_BATCH texts are looked up in concurrent chunks of that size."""
        budget = budget_s if budget_s is not None else self._budget_s
        size = CACHE_MAX_BATCH
        chunks = await asyncio.gather(
            *(self._lookup_chunk(key, inputs[i : i + size], budget) for i in range(0, len(inputs), size))
        )
        found: list[list[float] | None] = []
        degraded = False
        for vectors, chunk_degraded in chunks:
            found += vectors
            degraded = degraded or chunk_degraded
        return found, degraded

    async def _lookup_chunk(
        self, key: cache_service_pb2.EmbeddingKey, inputs: list[str], budget: float
    ) -> tuple[list[list[float] | None], bool]:
        try:
            reply: cache_service_pb2.LookupEmbeddingsResponse = await self._stub.LookupEmbeddings(
                cache_service_pb2.LookupEmbeddingsRequest(key=key, inputs=inputs), timeout=budget
            )
        except grpc.aio.AioRpcError as exc:
            _log_embeddings_error("lookup", exc)
            return [None] * len(inputs), True
        if len(reply.results) != len(inputs):
            return [None] * len(inputs), True
        return [list(r.values) if r.hit and r.values else None for r in reply.results], reply.degraded

    def store_embeddings(
        self,
        key: cache_service_pb2.EmbeddingKey,
        inputs: list[str],
        vectors: list[list[float]],
        policy: common_pb2.CachePolicy,
    ) -> None:
        """Stores vectors off the hot path (returns at once; a failure drops them), in calls of at most
        CACHE_MAX_BATCH texts."""
        size = CACHE_MAX_BATCH
        requests = [
            cache_service_pb2.StoreEmbeddingsRequest(
                key=key,
                inputs=inputs[i : i + size],
                vectors=[cache_service_pb2.CachedVector(hit=True, values=v) for v in vectors[i : i + size]],
                policy=policy,
            )
            for i in range(0, len(inputs), size)
        ]
        task = asyncio.get_running_loop().create_task(self._store_embeddings(requests))
        self._embedding_stores.add(task)
        task.add_done_callback(self._embedding_stores.discard)

    async def _store_embeddings(self, requests: list[cache_service_pb2.StoreEmbeddingsRequest]) -> None:
        for request in requests:
            try:
                await self._stub.StoreEmbeddings(request, timeout=_STORE_TIMEOUT_S)
                self.stores_sent += 1
            except grpc.aio.AioRpcError as exc:
                self.stores_failed += 1
                _log_embeddings_error("store", exc)

    async def run(self) -> None:
        """Runs the store workers until cancelled."""
        await asyncio.gather(*(self._worker() for _ in range(self._workers)))

    async def drain(self, timeout_s: float) -> None:
        """Waits (bounded) for queued stores to be taken by the workers, at shutdown."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for _ in range(int(timeout_s * 100)):
            if self._queue.empty() or loop.time() >= deadline:
                return
            await asyncio.sleep(0.01)
