"""Embeddings: one call per batch of inputs, large requests split across nodes, with failover."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from corral.v1 import cache_service_pb2, common_pb2, router_service_pb2

from services.common.errors import DeadlineExceeded, Unavailable
from services.router.cache_client import CacheClient
from services.router.forward import Forwarder
from services.router.scores import Attempt
from services.router.translate import duration_from_ns, embed_body
from services.router.transport import NodeError

_NO_LOOKUP = (common_pb2.CACHE_MODE_BYPASS, common_pb2.CACHE_MODE_REFRESH)


def embedding_key(tenant: str, req: router_service_pb2.EmbedRequest) -> cache_service_pb2.EmbeddingKey:
    """What besides the text decides a vector: tenant, model, dimensions, truncate and options."""
    key = cache_service_pb2.EmbeddingKey(tenant=tenant, model=req.model, dimensions=req.dimensions)
    if req.HasField("truncate"):
        key.truncate = req.truncate
    if req.HasField("options"):
        key.options.CopyFrom(req.options)
    return key


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
    ) -> None:
        self._fwd = forwarder
        self._split_size = split_size
        self._timeout_s = timeout_s
        self._cache = cache
        self._lookup_budget_s = lookup_budget_s

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
        if mode in _NO_LOOKUP:
            found: list[list[float] | None] = [None] * len(inputs)
        else:
            budget = min(self._lookup_budget_s, max(0.0, deadline - time.monotonic()))
            found = await cache.lookup_embeddings(key, inputs, budget)
        missing = [i for i, vector in enumerate(found) if vector is None]
        if not missing:
            response = router_service_pb2.EmbedResponse(model=req.model)
            for vector in found:
                response.embeddings.add().values.extend(vector or [])
            response.routing.CopyFrom(
                common_pb2.RoutingInfo(cache_outcome=common_pb2.CACHE_OUTCOME_EXACT_HIT)
            )
            return response
        sub = router_service_pb2.EmbedRequest()
        sub.CopyFrom(req)
        del sub.inputs[:]
        sub.inputs.extend(inputs[i] for i in missing)
        computed = await self._compute(sub, model, deadline, background)
        fresh = [list(e.values) for e in computed.embeddings]
        cache.store_embeddings(key, list(sub.inputs), fresh, req.cache)
        if len(missing) == len(inputs):
            computed.routing.cache_outcome = common_pb2.CACHE_OUTCOME_MISS
            return computed
        # NOTE: a partial hit answers in input order: cached vectors where found, fresh ones between.
        merged = found
        for index, vector in zip(missing, fresh, strict=True):
            merged[index] = vector
        del computed.embeddings[:]
        for vector in merged:
            computed.embeddings.add().values.extend(vector or [])
        computed.routing.cache_outcome = common_pb2.CACHE_OUTCOME_MISS
        return computed

    async def _compute(
        self, req: router_service_pb2.EmbedRequest, model: str, deadline: float, background: bool
    ) -> router_service_pb2.EmbedResponse:
        """Embeds every input of the request on nodes."""
        inputs = list(req.inputs)
        size = self._split_size
        batches = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        tasks = [asyncio.ensure_future(self._batch(req, model, b, deadline, background)) for b in batches]
        try:
            results = await asyncio.gather(*tasks)
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
