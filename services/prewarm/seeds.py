"""The seed file: common queries per model that cache seeding sends through the router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.prewarm.planner import normalize_model_name

# NOTE: the sampling options a seed query may set; they are part of the exact cache key, so a seeded
# answer only serves user requests sent with the same options.
OPTION_NAMES = frozenset(
    {
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "num_predict",
        "seed",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "typical_p",
        "repeat_last_n",
        "num_keep",
        "num_ctx",
    }
)
ROLES = frozenset({"system", "user", "assistant"})


class SeedFileError(Exception):
    """The seed file cannot be used; the message names the file and the field."""


class SeedMessage(BaseModel):
    """One turn of a seeded chat."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str
    content: str = Field(min_length=1)

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ROLES:
            raise ValueError(f"must be one of {', '.join(sorted(ROLES))}")
        return value


def _check_options(value: dict[str, float | int]) -> dict[str, float | int]:
    unknown = sorted(set(value) - OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(OPTION_NAMES))})")
    return value


class SeedQuery(BaseModel):
    """One query: a completion (prompt, optional system) or a chat (messages)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = ""
    system: str = ""
    messages: tuple[SeedMessage, ...] = ()
    options: dict[str, float | int] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _options_known(cls, value: dict[str, float | int]) -> dict[str, float | int]:
        return _check_options(value)

    @model_validator(mode="after")
    def _one_kind(self) -> SeedQuery:
        if bool(self.prompt.strip()) == bool(self.messages):
            raise ValueError("give either a non-empty prompt or messages")
        if self.messages and self.system:
            raise ValueError("a chat query puts its system prompt in messages, not in system")
        if self.messages and self.messages[-1].role != "user":
            raise ValueError("the last message of a chat query must be the user's")
        return self

    @property
    def is_chat(self) -> bool:
        """True when sent as a chat."""
        return bool(self.messages)

    @property
    def label(self) -> str:
        """A short text for progress events."""
        text = self.messages[-1].content if self.messages else self.prompt
        text = " ".join(text.split())
        return text if len(text) <= 60 else text[:57] + "..."


class SeedFile(BaseModel):
    """The whole seed file: default options and the queries of each model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    options: dict[str, float | int] = Field(default_factory=dict)
    models: dict[str, tuple[SeedQuery, ...]] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _options_known(cls, value: dict[str, float | int]) -> dict[str, float | int]:
        return _check_options(value)

    @field_validator("models", mode="before")
    @classmethod
    def _strings_to_queries(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[Any, Any] = {}
        for model, queries in value.items():
            if queries is None:
                queries = []
            if isinstance(queries, list):
                queries = [{"prompt": q} if isinstance(q, str) else q for q in queries]
            out[model] = queries
        return out

    def queries(self, models: frozenset[str] = frozenset()) -> list[tuple[str, SeedQuery]]:
        """Every (model, query) pair, default options applied, limited to `models` when not empty."""
        wanted = {normalize_model_name(m) for m in models}
        pairs: list[tuple[str, SeedQuery]] = []
        for model, queries in self.models.items():
            if wanted and normalize_model_name(model) not in wanted:
                continue
            for query in queries:
                merged = {**self.options, **query.options}
                pairs.append((model, query.model_copy(update={"options": merged})))
        return pairs


def load_seed_file(path: str | Path) -> SeedFile:
    """Reads and validates a seed file.

    Raises:
        SeedFileError: The file is missing, not YAML, or a field is wrong (the message names it).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedFileError(f"seed file {file}: cannot be read ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SeedFileError(f"seed file {file}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise SeedFileError(f"seed file {file}: the top level must be a mapping with 'models'")
    try:
        return SeedFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise SeedFileError(f"seed file {file}: '{where}': {message}") from None
