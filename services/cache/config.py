"""Configuration of the cache service."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from pydantic import Field, field_validator

from services.cache.keys import DETERMINISTIC, SemanticRule, normalise_model, normalise_tenant
from services.common.settings import Section, ServiceConfig

EmbedderKind = Literal["ollama", "minilm", "hashing"]

# NOTE: similarity scales differ by model. MiniLM's 0.80 is the measured operating point
# (docs/cache.md); nomic-embed-text's cosines run higher for the same pairs, and its 0.86 is an
# estimate until it is measured on real nodes with bench/cache_eval.py.
DEFAULT_THRESHOLDS: dict[str, float] = {"ollama": 0.86, "minilm": 0.80, "hashing": 0.80}


def _default_node_urls() -> list[str]:
    # NOTE: the four simulated nodes of the local stack (same ports as the health service's default fleet).
    return [f"http://127.0.0.1:{11433 + i}" for i in range(1, 5)]


class EmbedderConfig(Section):
    """How the semantic tier turns text into vectors.

    Attributes:
        kind: "ollama" (an embedding model on the nodes), "minilm" (offline, the `eval` extra) or
            "hashing" (deterministic, meaningless vectors; tests only).
        model: The embedding model name on the Ollama nodes.
        dims: The embedding size; must match the model (768 for nomic-embed-text, 384 for MiniLM).
        node_urls: Ollama base URLs; batches go round-robin, a failed node is skipped for the batch.
            With `health_addr`, only the start: used until health's first snapshot, and whenever
            health lists no node that can embed.
        health_addr: The health service (host:port). When set, the Ollama embedder sends texts to
            the nodes health reports routable with `model` installed, followed on its score stream:
            a node added, drained or ejected at run time is used or left within a score update.
        batch_size: Texts per embedding call (the original cluster batched 5 at a time).
        batch_window_ms: How long the first text of a batch waits for company.
        timeout_s: Upper bound of one embedding call (a lookup's own deadline may cut it shorter).
        warmup_timeout_s: How long the cache waits at start for one embedding to succeed before it
            reports SERVING; past it, it serves with the semantic tier degraded. 0: no wait.
    """

    kind: EmbedderKind = "ollama"
    model: str = "nomic-embed-text"
    dims: int = Field(default=768, ge=1, le=16000)
    node_urls: list[str] = Field(default_factory=_default_node_urls)
    health_addr: str = ""
    batch_size: int = Field(default=5, ge=1, le=512)
    batch_window_ms: float = Field(default=5.0, ge=0)
    timeout_s: float = Field(default=2.0, gt=0)
    warmup_timeout_s: float = Field(default=30.0, ge=0)

    @field_validator("node_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"node URL {url!r} must start with http:// or https://")
        return [url.rstrip("/") for url in value]


_NAMED_RULES = ("never", "deterministic", "always")
_RULE_HELP = "use never, deterministic, always or {max_temperature: X}"


def _rule(value: Any, scope: str) -> SemanticRule:
    """One policy value of the configuration: a name, or a mapping with max_temperature."""
    if isinstance(value, SemanticRule):
        return dataclasses.replace(value, scope=scope)
    if isinstance(value, str):
        if value in _NAMED_RULES:
            return SemanticRule(value, scope=scope)  # type: ignore[arg-type]
        raise ValueError(f"unknown policy {value!r}: {_RULE_HELP}")
    if isinstance(value, dict):
        if set(value) != {"max_temperature"}:
            raise ValueError(f"a policy mapping has exactly one key, max_temperature: {_RULE_HELP}")
        ceiling = value["max_temperature"]
        if isinstance(ceiling, bool) or not isinstance(ceiling, int | float):
            raise ValueError(f"max_temperature must be a number, got {ceiling!r}")
        if not math.isfinite(ceiling) or ceiling < 0:
            raise ValueError(f"max_temperature must be a finite number >= 0, got {ceiling!r}")
        return SemanticRule("max_temperature", float(ceiling), scope)
    raise ValueError(f"unknown policy {value!r}: {_RULE_HELP}")


def _ascii(name: str) -> str:
    """A configured name as reasons show it: ASCII (a reason travels in an HTTP header)."""
    return name.encode("ascii", "backslashreplace").decode()


def _rules(value: Any, describe: str, normalise: Any, section: str, scope_prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of {describe} to policies")
    rules: dict[str, Any] = {}
    for name, raw in value.items():
        key = normalise(str(name))
        if key in rules:
            raise ValueError(f"{describe} {name!r} is named twice (as {key!r})")
        scope = f"{scope_prefix}{describe} {_ascii(key)}"
        try:
            rules[key] = _rule(raw, scope)
        except ValueError as exc:
            raise ValueError(f"{section}[{name!r}]: {exc}") from None
    return rules


class SemanticPolicyConfig(Section):
    """When the semantic tier may answer a request in the default cache mode.

    A policy is `never`, `deterministic` (temperature 0 only), `always`, or `{max_temperature: X}`
    (up to X; a request that sets no temperature counts as Ollama's default 0.8). The most specific
    setting wins: tenant and model, then tenant, then model, then the default.

    Attributes:
        default: The policy of every request no setting below names.
        models: Policies per model (names normalised: `llama3.2` is `llama3.2:latest`).
        tenants: Policies per tenant.
        tenant_models: Policies per tenant, then per model.
    """

    default: SemanticRule = DETERMINISTIC
    models: dict[str, SemanticRule] = Field(default_factory=dict)
    tenants: dict[str, SemanticRule] = Field(default_factory=dict)
    tenant_models: dict[str, dict[str, SemanticRule]] = Field(default_factory=dict)

    @field_validator("default", mode="before")
    @classmethod
    def _check_default(cls, value: Any) -> SemanticRule:
        return _rule(value, "default")

    @field_validator("models", mode="before")
    @classmethod
    def _check_models(cls, value: Any) -> dict[str, Any]:
        return _rules(value, "model", normalise_model, "models")

    @field_validator("tenants", mode="before")
    @classmethod
    def _check_tenants(cls, value: Any) -> dict[str, Any]:
        return _rules(value, "tenant", normalise_tenant, "tenants")

    @field_validator("tenant_models", mode="before")
    @classmethod
    def _check_tenant_models(cls, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of tenants to mappings of models to policies")
        out: dict[str, Any] = {}
        for tenant, models in value.items():
            key = normalise_tenant(str(tenant))
            if key in out:
                raise ValueError(f"tenant {tenant!r} is named twice (as {key!r})")
            prefix = f"tenant {_ascii(key)}, "
            out[key] = _rules(models, "model", normalise_model, f"tenant_models[{tenant!r}]", prefix)
        return out

    def resolve(self, tenant: str, model: str) -> SemanticRule:
        """The rule of a normalised tenant and model: tenant+model, tenant, model, then the default."""
        if self.tenant_models:
            per_tenant = self.tenant_models.get(tenant)
            if per_tenant is not None:
                found = per_tenant.get(model)
                if found is not None:
                    return found
        found = self.tenants.get(tenant) or self.models.get(model)
        return found if found is not None else self.default


class CacheConfig(ServiceConfig):
    """Settings of the cache service (defaults work on one machine).

    Redis (exact tier) and PostgreSQL (semantic tier) addresses come from the top-level `redis` and
    `postgres` sections.

    Attributes:
        default_ttl_s: Lifetime of a stored answer when the request names none.
        max_ttl_s: Longest lifetime a request may ask for (longer ones are capped).
        semantic_enabled: Serve and fill the semantic tier at all.
        semantic_policy: When the semantic tier may answer, per tenant and model (docs/cache.md).
        semantic_threshold: Lowest cosine similarity of a semantic hit (before the guard); None takes
            the embedder's default (DEFAULT_THRESHOLDS: measured for MiniLM in bench/cache_eval.py).
        semantic_candidates: Nearest entries the guard examines per lookup.
        guard_enabled: Apply the near-miss guard (off only for measurements).
        concurrent_tiers: When a lookup may use both tiers and its vector needs no embedding call,
            send the semantic query together with the exact GET (an exact hit still wins). Saves
            the exact tier's round trip on semantic hits and misses, at the cost of one HNSW query
            per exact hit of such a request.
        max_prompt_bytes: Largest request (prompt, system, messages, images together) accepted.
        max_payload_bytes: Largest answer accepted for storing.
        max_tenant_chars: Longest tenant name.
        lookup_deadline_ms: The lookup budget when the caller sets no deadline.
        redis_timeout_ms: Upper bound of one Redis call.
        postgres_timeout_ms: Upper bound of one PostgreSQL call on the lookup path.
        store_timeout_ms: Upper bound of one store call (Store RPC, off the caller's hot path).
        deadline_margin_ms: Kept free before the caller's deadline to answer a miss in time.
        breaker_failures: Consecutive failures (errors or timeouts) that open a tier's breaker.
        breaker_open_ms: An open breaker skips its tier for this long, then lets one call try it.
        recovery_interval_s: How often a degraded tier is probed in the background.
        postgres_pool_max: Most PostgreSQL connections.
        hnsw_ef_search: pgvector's hnsw.ef_search for semantic lookups.
        flight_lease_s: A single-flight leader that neither stores nor abandons loses its lease after this.
        embedding_memo_size: Recently computed embeddings kept so a Store after a miss does not re-embed.
        migrate_on_start: Apply the SQL migrations when PostgreSQL becomes reachable.
        backfill_batch: Answers waiting for their semantic entry that one maintenance run embeds and
            stores, at most (services/cache/backfill.py).
        backfill_max_pending: Most answers kept waiting for their semantic entry; past it the oldest go.
    """

    port: int = 50052
    # NOTE: lookups are short unary calls; routers re-resolve and rebalance over replicas as they scale.
    max_connection_age_s: float | None = Field(default=300.0, gt=0)
    default_ttl_s: float = Field(default=3600.0, gt=0)
    max_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    semantic_enabled: bool = True
    semantic_policy: SemanticPolicyConfig = SemanticPolicyConfig()
    semantic_threshold: float | None = Field(default=None, gt=0, le=1)
    semantic_candidates: int = Field(default=4, ge=1, le=100)
    guard_enabled: bool = True
    concurrent_tiers: bool = True
    max_prompt_bytes: int = Field(default=1024 * 1024, ge=1)
    max_payload_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    max_tenant_chars: int = Field(default=256, ge=1)
    lookup_deadline_ms: float = Field(default=250.0, gt=0)
    redis_timeout_ms: float = Field(default=50.0, gt=0)
    postgres_timeout_ms: float = Field(default=100.0, gt=0)
    store_timeout_ms: float = Field(default=2000.0, gt=0)
    deadline_margin_ms: float = Field(default=3.0, ge=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_open_ms: float = Field(default=1000.0, ge=0)
    recovery_interval_s: float = Field(default=0.5, gt=0)
    postgres_pool_max: int = Field(default=4, ge=1)
    hnsw_ef_search: int = Field(default=40, ge=1, le=1000)
    flight_lease_s: float = Field(default=60.0, gt=0)
    embedding_memo_size: int = Field(default=4096, ge=0)
    migrate_on_start: bool = True
    backfill_batch: int = Field(default=256, ge=0)
    backfill_max_pending: int = Field(default=10000, ge=0)
    embedder: EmbedderConfig = EmbedderConfig()

    def threshold(self) -> float:
        """The similarity threshold in force."""
        if self.semantic_threshold is not None:
            return self.semantic_threshold
        return DEFAULT_THRESHOLDS[self.embedder.kind]
