"""The embedding cache: one exact Redis entry per embedded text, beside the answers of the exact tier.

A vector depends on the tenant's model, the requested dimensions, truncation and the model options,
so all of them are part of its key; `keep_alive` and priority are not. Entries live under the same
`cx:<tenant>:<model>:` prefix as answers, so invalidating a tenant or a model removes its vectors too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from corral.v1 import cache_service_pb2

from services.cache import keys
from services.cache.engine import CacheEngine, _blame
from services.cache.exact_store import bounded

# NOTE: a prefix no answer key (hex) can start with, so vectors and answers never share a key.
_KEY_PREFIX = "e."


@dataclass(frozen=True, slots=True)
class EmbeddingScope:
    """Where the vectors of one request live: tenant, model and the hash of what shapes a vector."""

    tenant: str
    model: str
    params: bytes


def scope_of(key: cache_service_pb2.EmbeddingKey) -> EmbeddingScope:
    """The scope of an EmbeddingKey (tenant and model normalised as answers' are)."""
    shape = f"{key.dimensions}\x00{int(key.truncate) if key.HasField('truncate') else '-'}\x00".encode()
    return EmbeddingScope(
        keys.normalise_tenant(key.tenant),
        keys.normalise_model(key.model),
        shape + key.options.SerializeToString(deterministic=True),
    )


def text_key(scope: EmbeddingScope, text: str) -> str:
    """The entry key of one text in a scope."""
    h = hashlib.blake2b(digest_size=20)
    h.update(scope.params)
    h.update(b"\x00")
    h.update(text.encode())
    return _KEY_PREFIX + h.hexdigest()


class EmbeddingCache:
    """Looks up and stores per-text vectors in Redis, behind the exact tier's breaker (fails open)."""

    def __init__(self, engine: CacheEngine) -> None:
        self._engine = engine

    async def lookup(
        self, scope: EmbeddingScope, inputs: Sequence[str], budget_s: float
    ) -> tuple[list[bytes | None], bool]:
        """One packed float32 vector per input (None for a miss), and whether Redis was down or slow
        (then every input is a miss)."""
        engine = self._engine
        counters = engine.stats.embeddings
        started = time.perf_counter()
        if not inputs:
            return [], False
        found = await self._get(scope, inputs, budget_s)
        if found is None:
            engine.stats.degraded_lookups += 1
            counters.misses += len(inputs)
            return [None] * len(inputs), True
        hits = sum(1 for value in found if value is not None)
        counters.hits += hits
        counters.misses += len(inputs) - hits
        counters.latencies_ms.append((time.perf_counter() - started) * 1000)
        return found, False

    async def node_vector(self, tenant: str, model: str, text: str, budget_s: float) -> bytes | None:
        """The vector a client's plain Embed of `text` with `model` stored (no dimensions, truncation or
        options), or None; not counted as an embedding-cache lookup, and never raises."""
        scope = scope_of(cache_service_pb2.EmbeddingKey(tenant=tenant, model=model))
        found = await self._get(scope, [text], budget_s)
        return None if found is None else found[0]

    async def _get(
        self, scope: EmbeddingScope, inputs: Sequence[str], budget_s: float
    ) -> list[bytes | None] | None:
        """The stored vectors of `inputs` (None each for a miss) in one MGET behind the exact tier's
        breaker and Redis timeout; None when Redis was down or slow."""
        engine = self._engine
        timeout_s = min(budget_s, engine.cfg.redis_timeout_ms / 1000)
        if timeout_s <= 0 or not engine.exact_breaker.allow():
            return None
        try:
            found = await bounded(
                engine.exact.get_many(scope.tenant, scope.model, [text_key(scope, t) for t in inputs]),
                timeout_s,
            )
        except Exception as exc:
            _blame(engine.exact_breaker, exc, caller_bound=timeout_s < engine.cfg.redis_timeout_ms / 1000)
            return None
        engine.exact_breaker.success()
        return list(found)

    async def store(
        self, scope: EmbeddingScope, inputs: Sequence[str], vectors: Sequence[bytes], ttl_s: float
    ) -> int:
        """Stores packed vectors; returns how many (0 when Redis is down: the vectors are dropped)."""
        engine = self._engine
        if not inputs or not engine.exact_breaker.allow():
            return 0
        items = [
            (scope.tenant, scope.model, text_key(scope, text), vector, ttl_s)
            for text, vector in zip(inputs, vectors, strict=True)
        ]
        try:
            await bounded(engine.exact.put_many(items), engine.cfg.redis_timeout_ms / 1000 * 4)
        except Exception as exc:
            _blame(engine.exact_breaker, exc, caller_bound=False)
            return 0
        engine.exact_breaker.success()
        engine.stats.embeddings.stores += len(items)
        return len(items)


def pack(values: Sequence[float]) -> bytes:
    """A vector as little-endian float32 bytes."""
    return np.asarray(values, dtype="<f4").tobytes()


def unpack(raw: bytes) -> list[float]:
    """Little-endian float32 bytes as a vector."""
    return [float(x) for x in np.frombuffer(raw, dtype="<f4")]
