"""Embeddings: one call per batch of inputs, large requests split across nodes, with failover."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from corral.v1 import cache_service_pb2, common_pb2, router_service_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.router.cache_client import CacheClient
from services.router.forward import Forwarder
from services.router.scores import Attempt
from services.router.translate import duration_from_ns, embed_body
from services.router.transport import NodeError

_NO_LOOKUP = (common_pb2.CACHE_MODE_BYPASS, common_pb2.CACHE_MODE_REFRESH)

# A call with less time left than this is sent alone, at once, whatever the window: a shared node
# call embeds more texts than the call's own and may well outlast a deadline this close.
MIN_JOIN_S = 0.1


def embedding_key(tenant: str, req: router_service_pb2.EmbedRequest) -> cache_service_pb2.EmbeddingKey:
    """What besides the text decides a vector: tenant, model, dimensions, truncate and options."""
    key = cache_service_pb2.EmbeddingKey(tenant=tenant, model=req.model, dimensions=req.dimensions)
    if req.HasField("truncate"):
        key.truncate = req.truncate
    if req.HasField("options"):
        key.options.CopyFrom(req.options)
    return key


Result = tuple[str, int, list[str], dict[str, Any]]


@dataclass
class _Pending:
    """A node batch being gathered: its texts and, per caller, where its texts start, how many and
    the caller's deadline; `deadline` is the latest of them (the node call's)."""

    req: router_service_pb2.EmbedRequest
    model: str
    background: bool
    deadline: float
    texts: list[str] = field(default_factory=list)
    waiters: list[tuple[int, int, float, asyncio.Future[Result]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


def _share(result: Result, start: int, count: int, total: int) -> Result:
    """One caller's part of a coalesced node call: its vectors, and its share of the token count."""
    node_id, attempts, failed, reply = result
    part = dict(reply)
    part["embeddings"] = reply["embeddings"][start : start + count]
    # NOTE: the node counts the batch's tokens together; each caller is given a share by its texts.
    part["prompt_eval_count"] = int(reply.get("prompt_eval_count") or 0) * count // max(1, total)
    return node_id, attempts, failed, part


class Embedder:
    """Runs EmbedRequests: batches of `split_size` inputs go to nodes in parallel, in input order.

    With a cache, every text is looked up first (per text, exactly, per tenant) and only the texts
    that missed go to nodes; their vectors are stored off the hot path.
    """

    def __init__(
        self,
        forwarder: Forwarder,
        split_size: int,
        timeout_s: float,
        cache: CacheClient | None = None,
        lookup_budget_s: float = 0.05,
        coalesce_size: int = 1,
        coalesce_window_s: float = 0.0,
    ) -> None:
        self._fwd = forwarder
        self._split_size = split_size
        self._timeout_s = timeout_s
        self._cache = cache
        self._lookup_budget_s = lookup_budget_s
        self._coalesce_size = coalesce_size
        self._window_s = coalesce_window_s
        self._pending: dict[tuple[str, bool, bytes], _Pending] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def embed(
        self,
        req: router_service_pb2.EmbedRequest,
        model: str,
        deadline: float,
        background: bool,
        tenant: str = "",
    ) -> router_service_pb2.EmbedResponse:
        """Embeds every input of the request, from the cache where it holds the text's vector."""
        cache = self._cache
        mode = req.cache.mode
        if cache is None or mode == common_pb2.CACHE_MODE_BYPASS or not req.inputs:
            return await self._compute(req, model, deadline, background)
        key = embedding_key(tenant, req)
        inputs = list(req.inputs)
        degraded = False
        if mode in _NO_LOOKUP:
            found: list[list[float] | None] = [None] * len(inputs)
        else:
            budget = min(self._lookup_budget_s, max(0.0, deadline - time.monotonic()))
            found, degraded = await cache.lookup_embeddings(key, inputs, budget)
        outcome = common_pb2.CACHE_OUTCOME_DEGRADED if degraded else common_pb2.CACHE_OUTCOME_MISS
        missing = [i for i, vector in enumerate(found) if vector is None]
        if not missing:
            response = router_service_pb2.EmbedResponse(model=req.model)
            for vector in found:
                response.embeddings.add().values.extend(vector or [])
            response.routing.CopyFrom(
                common_pb2.RoutingInfo(cache_outcome=common_pb2.CACHE_OUTCOME_EXACT_HIT)
            )
            return response
        partial = len(missing) < len(inputs)
        sub, texts = req, inputs
        if partial:
            texts = [inputs[i] for i in missing]
            sub = router_service_pb2.EmbedRequest()
            sub.CopyFrom(req)
            del sub.inputs[:]
            sub.inputs.extend(texts)
        computed = await self._compute(sub, model, deadline, background)
        fresh = [list(e.values) for e in computed.embeddings]
        cache.store_embeddings(key, texts, fresh, req.cache)
        computed.routing.cache_outcome = outcome
        if partial:
            # NOTE: a partial hit answers in input order: cached vectors where found, fresh ones between.
            for index, vector in zip(missing, fresh, strict=True):
                found[index] = vector
            del computed.embeddings[:]
            for vector in found:
                computed.embeddings.add().values.extend(vector or [])
        return computed

    async def _compute(
        self, req: router_service_pb2.EmbedRequest, model: str, deadline: float, background: bool
    ) -> router_service_pb2.EmbedResponse:
        """Embeds every input of the request on nodes."""
        inputs = list(req.inputs)
        results: list[Result]
        if self._may_coalesce(len(inputs), deadline):
            results = [await self._join(req, model, inputs, deadline, background)]
        else:
            size = self._split_size
            batches = [inputs[i : i + size] for i in range(0, len(inputs), size)]
            tasks = [asyncio.ensure_future(self._batch(req, model, b, deadline, background)) for b in batches]
            try:
                results = list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        response = router_service_pb2.EmbedResponse(model=req.model)
        total_ns = load_ns = prompt_tokens = attempts = 0
        failed: list[str] = []
        for _node_id, tries, failures, reply in results:
            for vector in reply["embeddings"]:
                response.embeddings.add().values.extend(vector)
            total_ns += int(reply.get("total_duration") or 0)
            load_ns = max(load_ns, int(reply.get("load_duration") or 0))
            prompt_tokens += int(reply.get("prompt_eval_count") or 0)
            attempts += tries
            failed += failures
        response.prompt_eval_count = prompt_tokens
        response.total_duration.CopyFrom(duration_from_ns(total_ns))
        response.load_duration.CopyFrom(duration_from_ns(load_ns))
        response.routing.CopyFrom(
            common_pb2.RoutingInfo(
                node_id=results[0][0],
                attempts=attempts,
                failed_node_ids=failed,
                cache_outcome=common_pb2.CACHE_OUTCOME_BYPASS,
            )
        )
        return response

    def _may_coalesce(self, count: int, deadline: float) -> bool:
        """A small call joins a node batch unless its deadline is too close to wait for one."""
        if self._coalesce_size <= 1 or self._window_s <= 0 or count >= self._coalesce_size:
            return False
        # NOTE: the window must never eat the caller's deadline: a caller with less time left than
        # twice the window (the window and a margin for the node call itself), or than MIN_JOIN_S, is
        # sent alone, at once.
        return deadline - time.monotonic() > max(2 * self._window_s, MIN_JOIN_S)

    async def _join(
        self,
        req: router_service_pb2.EmbedRequest,
        model: str,
        inputs: list[str],
        deadline: float,
        background: bool,
    ) -> Result:
        """Adds the call's texts to the open node batch of its model and options; awaits its part."""
        shape = router_service_pb2.EmbedRequest()
        shape.CopyFrom(req)
        del shape.inputs[:]
        shape.ClearField("cache")
        shape.ClearField("priority")
        key = (model, background, shape.SerializeToString(deterministic=True))
        pending = self._pending.get(key)
        if pending is not None and len(pending.texts) + len(inputs) > self._coalesce_size:
            self._flush(key)
            pending = None
        loop = asyncio.get_running_loop()
        if pending is None:
            pending = self._pending[key] = _Pending(shape, model, background, deadline)
            pending.timer = loop.call_later(self._window_s, self._flush, key)
        future: asyncio.Future[Result] = loop.create_future()
        # NOTE: retrieved, so that a failure whose caller already gave up is not logged as unretrieved.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        pending.waiters.append((len(pending.texts), len(inputs), deadline, future))
        pending.texts.extend(inputs)
        # NOTE: the node call runs under the latest deadline of its callers (each already bounded by
        # the router's request timeout), so that one caller's short deadline does not fail the others;
        # each caller waits for its part under its own deadline below.
        pending.deadline = max(pending.deadline, deadline)
        if len(pending.texts) >= self._coalesce_size:
            self._flush(key)
        # NOTE: shielded: a caller that gives up leaves the node call to the batch's other callers.
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await asyncio.shield(future)
        except TimeoutError:
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()
            raise DeadlineExceeded("the deadline passed before the embeddings were computed") from None

    def _flush(self, key: tuple[str, bool, bytes]) -> None:
        """Sends the batch under `key` (when the window closes or the batch is full)."""
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._send(pending))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, pending: _Pending) -> None:
        try:
            result = await self._batch(
                pending.req, pending.model, pending.texts, pending.deadline, pending.background
            )
        except InvalidArgument as exc:
            if len(pending.waiters) == 1:
                only = pending.waiters[0][3]
                if not only.done():
                    only.set_exception(exc)
                return
            # NOTE: a node refusing a coalesced batch (say one caller's text too long with truncate
            # false) says nothing about the other callers' texts: each caller is then sent alone and
            # gets its own answer or its own error.
            await asyncio.gather(
                *(
                    self._alone(pending, start, count, deadline, future)
                    for start, count, deadline, future in pending.waiters
                )
            )
            return
        except BaseException as exc:
            # NOTE: a failed node call fails every caller of the batch (after the failover _batch
            # already tried); no caller ever receives another caller's vectors or none.
            for _, _, _, future in pending.waiters:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        total = len(pending.texts)
        for start, count, _, future in pending.waiters:
            if not future.done():
                future.set_result(_share(result, start, count, total))

    async def _alone(
        self, pending: _Pending, start: int, count: int, deadline: float, future: asyncio.Future[Result]
    ) -> None:
        texts = pending.texts[start : start + count]
        try:
            result = await self._batch(pending.req, pending.model, texts, deadline, pending.background)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    async def _batch(
        self,
        req: router_service_pb2.EmbedRequest,
        model: str,
        batch: list[str],
        deadline: float,
        background: bool,
    ) -> tuple[str, int, list[str], dict[str, Any]]:
        fwd = self._fwd
        failed: list[str] = []
        attempts = 0
        last_error = ""
        fwd.budget.deposit()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("the deadline passed before the embeddings were computed")
            if attempts > 0 and not fwd.allow_retry():
                raise Unavailable(
                    f"retry budget exhausted; last error: {last_error}", reason="NODES_UNAVAILABLE"
                )
            try:
                node = await fwd.choose(model, failed, None, background, deadline)
            except Unavailable as exc:
                if not failed:
                    raise
                raise Unavailable(
                    f"{exc.message}; last error: {last_error}", reason="NODES_UNAVAILABLE"
                ) from None
            attempts += 1
            fwd.board.begin(node.node_id, not background)
            started = time.perf_counter()
            outcome = Attempt.CANCELLED
            try:
                reply = await fwd.transport.call_json(
                    node.address,
                    "/api/embed",
                    embed_body(req, batch),
                    timeout_s=min(self._timeout_s, remaining),
                )
                vectors = reply.get("embeddings") if isinstance(reply, dict) else None
                if not isinstance(vectors, list) or len(vectors) != len(batch):
                    raise NodeError(Attempt.MALFORMED, "the node's reply has no embedding per input")
                outcome = Attempt.NONE
                return node.node_id, attempts, failed, reply
            except NodeError as err:
                outcome = err.kind
                last_error = f"{node.node_id}: {err.message}"
                if err.model_missing:
                    fwd.board.mark_missing(node.node_id, model)
                if err.kind is Attempt.TIMEOUT and time.monotonic() >= deadline:
                    raise DeadlineExceeded(f"the deadline passed while {node.node_id} answered") from None
                fwd.check_client_error(err, "inputs")
                failed.append(node.node_id)
            finally:
                fwd.finish_attempt(
                    "embed",
                    model,
                    node,
                    not background,
                    outcome,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    prompt_tokens=0,
                )
