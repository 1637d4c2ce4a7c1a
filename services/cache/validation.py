"""Request validation: INVALID_ARGUMENT with the offending field named."""

from __future__ import annotations

import math
import re

import numpy as np
from corral.v1 import cache_service_pb2, common_pb2
from google.protobuf.duration_pb2 import Duration

from services.cache.config import CacheConfig
from services.cache.embedders import Vector
from services.cache.keys import Spec, request_bytes
from services.common.errors import InvalidArgument
from services.common.wire import check_duration, check_keep_alive

_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^[0-9a-f]{64}$")

Keyed = cache_service_pb2.LookupRequest | cache_service_pb2.StoreRequest


def spec_of(request: Keyed) -> Spec:
    """The request's generate or chat spec."""
    kind = request.WhichOneof("request")
    if kind == "generate":
        return request.generate
    if kind == "chat":
        return request.chat
    raise InvalidArgument("request", "one of generate or chat is required")


def check_tenant(tenant: str, cfg: CacheConfig, field: str = "tenant") -> None:
    """Bounded length, no control characters."""
    if len(tenant) > cfg.max_tenant_chars:
        raise InvalidArgument(field, f"at most {cfg.max_tenant_chars} characters")
    if any(ord(ch) < 32 for ch in tenant):
        raise InvalidArgument(field, "must not contain control characters")


def _check_duration(value: Duration, field: str) -> None:
    check_duration(field, value)
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidArgument(field, "must not be negative")


def check_keyed(request: Keyed, cfg: CacheConfig) -> Spec:
    """Checks what Lookup and Store share; returns the spec."""
    check_tenant(request.tenant, cfg)
    spec = spec_of(request)
    kind = request.WhichOneof("request")
    if not spec.model.strip():
        raise InvalidArgument(f"{kind}.model", "model is required")
    if len(spec.model) > 512:
        raise InvalidArgument(f"{kind}.model", "at most 512 characters")
    check_keep_alive(f"{kind}.keep_alive", spec)
    size = request_bytes(spec)
    if size > cfg.max_prompt_bytes:
        where = f"{kind}.prompt" if isinstance(spec, common_pb2.GenerateSpec) else f"{kind}.messages"
        raise InvalidArgument(
            where, f"request is {size} bytes, more than the limit of {cfg.max_prompt_bytes}"
        )
    if request.HasField("policy"):
        if request.policy.HasField("ttl"):
            _check_duration(request.policy.ttl, "policy.ttl")
            if request.policy.ttl.seconds == 0 and request.policy.ttl.nanos == 0:
                raise InvalidArgument("policy.ttl", "must be positive (leave it unset for the default)")
        if request.policy.HasField("max_age"):
            _check_duration(request.policy.max_age, "policy.max_age")
    return spec


def embedding_of(values: object, dims: int) -> Vector | None:
    """The caller's precomputed embedding as a normalised vector, or None when absent."""
    if not values:  # NOTE: the usual case; spares a numpy conversion per call.
        return None
    vector = np.asarray(values, dtype=np.float32)
    if vector.size == 0:
        return None
    if vector.size != dims:
        raise InvalidArgument("embedding", f"has {vector.size} dimensions, the embedder produces {dims}")
    if not np.isfinite(vector).all():
        raise InvalidArgument("embedding", "contains NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if norm == 0 or math.isnan(norm):
        raise InvalidArgument("embedding", "must not be the zero vector")
    return (vector / norm).astype(np.float32)


def check_store(request: cache_service_pb2.StoreRequest, cfg: CacheConfig) -> None:
    """The entry is present, named and within the size limit; a flight token is well formed."""
    if not request.HasField("entry"):
        raise InvalidArgument("entry", "the answer to store is required")
    if not request.entry.payload_type:
        raise InvalidArgument("entry.payload_type", "the payload's message type is required")
    if len(request.entry.payload) > cfg.max_payload_bytes:
        raise InvalidArgument("entry.payload", f"larger than the limit of {cfg.max_payload_bytes} bytes")
    check_token(request.flight_token, required=False)


def check_token(token: str, *, required: bool) -> None:
    """A flight token is 32 lower-case hex characters."""
    if not token:
        if required:
            raise InvalidArgument("flight_token", "required")
        return
    if not _TOKEN.match(token):
        raise InvalidArgument("flight_token", "not a token issued by this cache (32 hex characters)")


def check_invalidate(request: cache_service_pb2.InvalidateRequest, cfg: CacheConfig) -> None:
    """At least one selector; a key is a 64-character hex digest."""
    check_tenant(request.tenant, cfg)
    if not (request.tenant or request.all_tenants or request.key):
        raise InvalidArgument("tenant", "one of tenant, key or all_tenants is required")
    if request.all_tenants and request.tenant:
        raise InvalidArgument("all_tenants", "cannot be combined with tenant")
    if request.key and not _KEY.match(request.key):
        raise InvalidArgument("key", "not a cache key (64 lower-case hex characters)")
