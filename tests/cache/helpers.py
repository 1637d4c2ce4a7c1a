"""Request builders for the cache tests."""

from __future__ import annotations

from corral.v1 import cache_service_pb2 as pb
from corral.v1 import common_pb2 as c

from services.cache.config import CacheConfig, EmbedderConfig

MODEL = "llama3.2:1b"


def gen(
    prompt: str, *, temperature: float | None = 0.0, model: str = MODEL, **fields: object
) -> c.GenerateSpec:
    """A generate spec (temperature 0 by default, so the semantic tier applies)."""
    options = c.ModelOptions(temperature=temperature) if temperature is not None else None
    return c.GenerateSpec(model=model, prompt=prompt, options=options, **fields)  # type: ignore[arg-type]


def lookup(tenant: str, spec: c.GenerateSpec | c.ChatSpec, **fields: object) -> pb.LookupRequest:
    """A LookupRequest for a generate or chat spec."""
    key = "generate" if isinstance(spec, c.GenerateSpec) else "chat"
    return pb.LookupRequest(tenant=tenant, **{key: spec}, **fields)  # type: ignore[arg-type]


def store(
    tenant: str, spec: c.GenerateSpec | c.ChatSpec, payload: bytes, **fields: object
) -> pb.StoreRequest:
    """A StoreRequest with an opaque payload."""
    key = "generate" if isinstance(spec, c.GenerateSpec) else "chat"
    entry = pb.CacheEntry(payload=payload, payload_type="corral.v1.GenerateResponse")
    return pb.StoreRequest(tenant=tenant, entry=entry, **{key: spec}, **fields)  # type: ignore[arg-type]


def make_config(**overrides: object) -> CacheConfig:
    """A cache configuration for tests: hashing embedder, short breaker and recovery periods."""
    fields: dict[str, object] = {
        "port": 0,
        "embedder": EmbedderConfig(kind="hashing", dims=384),
        "semantic_threshold": 0.8,
        "breaker_open_ms": 200.0,
        "recovery_interval_s": 0.05,
        "lookup_deadline_ms": 500.0,
        "flight_lease_s": 30.0,
    }
    fields.update(overrides)
    return CacheConfig.model_validate(fields)
