"""Cache keys and policy: canonical request, exact key, semantic text and namespace (no I/O)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.v1 import common_pb2
from google.protobuf import json_format

KEY_VERSION = "corral-cache-v1"
DEFAULT_TENANT = "default"
# NOTE: Ollama samples at this temperature when a request sets none (a Modelfile may set another).
OLLAMA_DEFAULT_TEMPERATURE = 0.8

# NOTE: options that only change how the runner executes (memory, speed), not what it answers; Ollama
# produces the same tokens for the same seed whatever they are (num_ctx only matters past the window).
RUNNER_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "num_thread"})
# NOTE: request fields that never change the answer: how long the node keeps the model loaded.
IGNORED_FIELDS = frozenset({"keep_alive"})

Spec = common_pb2.GenerateSpec | common_pb2.ChatSpec


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the cache needs to know about one request.

    Attributes:
        tenant: The owning tenant (an empty tenant is DEFAULT_TENANT).
        model: The model name with its tag (":latest" added when missing).
        exact_key: sha256 hex of (tenant, model, canonical request): the exact tier's key.
        semantic_text: The question the semantic tier embeds (prompt, or the last user message);
            None when the request has no such question (then only the exact tier applies).
        deterministic: True when temperature is explicitly 0.
        context: Everything but the question, canonical (hashed into context_key on demand).
        kind: b"generate" or b"chat".
        temperature: The request's temperature, None when it sets none.
        no_question: Why there is no semantic text ("" when there is one).
    """

    tenant: str
    model: str
    exact_key: str
    semantic_text: str | None
    deterministic: bool
    context: dict[str, Any] = field(compare=False)
    kind: bytes
    temperature: float | None = None
    no_question: str = ""

    @property
    def context_key(self) -> str:
        """sha256 hex of everything but the question (system prompt, earlier turns, format,
        output-changing options, tools, images): the semantic tier's namespace.

        Computed on use: a request that never reaches the semantic tier never pays for it.
        """
        return _digest(
            b"\0".join([KEY_VERSION.encode(), self.model.encode(), self.kind, canonical_json(self.context)])
        )


@dataclass(frozen=True, slots=True)
class TierPlan:
    """Which tiers a request reads and writes, and for how long.

    Attributes:
        lookup_exact: Read the exact tier.
        lookup_semantic: Read the semantic tier after an exact miss.
        store_exact: Write the exact tier.
        store_semantic: Write the semantic tier.
        ttl_s: Lifetime of a stored answer.
        max_age_s: Oldest acceptable answer (None: any unexpired one).
        skip_reason: Why the semantic tier (or the whole lookup) is skipped, for the answer's reason
            ("" when the semantic tier is planned).
        skip_category: The skip reason's bounded category for counters (SKIP_CATEGORIES), "" if none.
    """

    lookup_exact: bool
    lookup_semantic: bool
    store_exact: bool
    store_semantic: bool
    ttl_s: float
    max_age_s: float | None
    skip_reason: str = ""
    skip_category: str = ""

    @property
    def looks_up(self) -> bool:
        """True when the cache is consulted at all."""
        return self.lookup_exact or self.lookup_semantic


SemanticPolicyKind = Literal["never", "deterministic", "always", "max_temperature"]

# NOTE: the bounded label set of skipped semantic lookups (metrics and Stats).
SKIP_CATEGORIES = ("mode", "policy_never", "temperature", "no_question", "disabled")


@dataclass(frozen=True, slots=True)
class SemanticRule:
    """When the semantic tier may answer a request in the default cache mode (the operator's policy).

    Attributes:
        kind: "never", "deterministic" (temperature 0 only), "always", or "max_temperature".
        max_temperature: The highest temperature served when kind is "max_temperature".
        scope: Where the rule was configured, for reasons ("default", "model llama3.2:1b",
            "tenant acme", "tenant acme, model llama3.2:1b").
    """

    kind: SemanticPolicyKind
    max_temperature: float = 0.0
    scope: str = "default"

    @property
    def ceiling(self) -> float:
        """The highest temperature served in the default mode (-1 for never, inf for always)."""
        if self.kind == "never":
            return -1.0
        if self.kind == "always":
            return math.inf
        if self.kind == "deterministic":
            return 0.0
        return self.max_temperature

    def describe(self) -> str:
        """The rule as the configuration spells it ("max_temperature 0.3")."""
        if self.kind == "max_temperature":
            return f"max_temperature {_number(self.max_temperature)}"
        return self.kind


DETERMINISTIC = SemanticRule("deterministic")


def _number(value: float) -> str:
    """A temperature as a client wrote it: a float32 0.3 prints as 0.3, not 0.30000001192092896."""
    return f"{round(value, 6):g}"


def normalise_model(model: str) -> str:
    """`llama3.2` and `llama3.2:latest` are the same model in Ollama, so they share entries."""
    name = model.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def normalise_tenant(tenant: str) -> str:
    """The empty tenant (no credentials) is the default tenant."""
    return tenant or DEFAULT_TENANT


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _prune(value: Any) -> Any:
    """Drops empty containers so that `options {}` and no options key alike."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def canonical_dict(spec: Spec) -> dict[str, Any]:
    """The request as a JSON-ready dict without the fields that do not change the answer.

    Images are replaced by their sha256 (base64 megabytes would only slow hashing down) and the
    model by its normalised name.
    """
    raw: dict[str, Any] = json_format.MessageToDict(spec, preserving_proto_field_name=True)
    for name in IGNORED_FIELDS:
        raw.pop(name, None)
    options = raw.get("options")
    if isinstance(options, dict):
        for name in RUNNER_OPTIONS:
            options.pop(name, None)
    raw["model"] = normalise_model(spec.model)
    if isinstance(spec, common_pb2.GenerateSpec):
        if spec.images:
            raw["images"] = [_digest(image) for image in spec.images]
    else:
        for index, message in enumerate(spec.messages):
            if message.images:
                raw["messages"][index]["images"] = [_digest(image) for image in message.images]
    pruned: dict[str, Any] = _prune(raw)
    return pruned


def canonical_json(value: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same request always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _semantic_split(spec: Spec, canonical: dict[str, Any]) -> tuple[str | None, dict[str, Any], str]:
    """Separates the question from its context (the namespace); the third item says why there is
    no question when there is none."""
    if isinstance(spec, common_pb2.GenerateSpec):
        context = {k: v for k, v in canonical.items() if k != "prompt"}
        text = spec.prompt.strip()
        return (text or None), context, ("" if text else "empty prompt")
    if not spec.messages or spec.messages[-1].role != "user" or not spec.messages[-1].content.strip():
        return None, canonical, "last message is not a user question"
    if spec.tools:
        # NOTE: a request offering tools is never answered from the semantic tier: a similar question
        # may call the tool with other arguments ("weather in Tokyo" vs "in Paris").
        return None, canonical, "tools offered"
    context = dict(canonical)
    messages = [dict(m) for m in canonical.get("messages", [])]
    messages[-1].pop("content", None)
    context["messages"] = messages
    return spec.messages[-1].content.strip(), context, ""


def is_deterministic(spec: Spec) -> bool:
    """True when the request sets temperature to exactly 0."""
    return spec.HasField("options") and spec.options.HasField("temperature") and spec.options.temperature == 0


def temperature_of(spec: Spec) -> float | None:
    """The request's temperature, None when it sets none (the node then uses its default)."""
    if spec.HasField("options") and spec.options.HasField("temperature"):
        return float(spec.options.temperature)
    return None


def derive(tenant: str, spec: Spec) -> RequestView:
    """Derives the keys of one request (the caller has validated it)."""
    tenant = normalise_tenant(tenant)
    model = normalise_model(spec.model)
    canonical = canonical_dict(spec)
    kind = b"generate" if isinstance(spec, common_pb2.GenerateSpec) else b"chat"
    exact_key = _digest(
        b"\0".join([KEY_VERSION.encode(), tenant.encode(), model.encode(), kind, canonical_json(canonical)])
    )
    text, context, no_question = _semantic_split(spec, canonical)
    return RequestView(
        tenant=tenant,
        model=model,
        exact_key=exact_key,
        semantic_text=text,
        deterministic=is_deterministic(spec),
        context=context,
        kind=kind,
        temperature=temperature_of(spec),
        no_question=no_question,
    )


def request_bytes(spec: Spec) -> int:
    """Size of what the model reads: prompt, system, suffix, template, messages and images."""
    if isinstance(spec, common_pb2.GenerateSpec):
        texts = (spec.prompt, spec.system, spec.suffix, spec.template)
        return sum(len(t.encode()) for t in texts) + sum(len(i) for i in spec.images)
    total = 0
    for message in spec.messages:
        total += len(message.content.encode()) + len(message.thinking.encode())
        total += sum(len(i) for i in message.images)
    return total


def policy_ttl_s(policy: common_pb2.CachePolicy, *, default_ttl_s: float, max_ttl_s: float) -> float:
    """The lifetime a policy asks for, capped at `max_ttl_s`; `default_ttl_s` when it names none."""
    if not policy.HasField("ttl"):
        return default_ttl_s
    return min(policy.ttl.seconds + policy.ttl.nanos / 1e9, max_ttl_s)


def semantic_skip(
    mode: int, view: RequestView, rule: SemanticRule, *, semantic_enabled: bool
) -> tuple[str, str]:
    """Why the semantic tier may not serve this request: (reason, category), ("", "") when it may.

    The operator's rule decides in the default mode; a client's SEMANTIC mode opts in whatever the
    temperature, except under a "never" rule, which no client can override. EXACT mode keeps out.
    """
    if not semantic_enabled:
        return "semantic skipped: semantic tier disabled", "disabled"
    if view.semantic_text is None:
        return f"semantic skipped: {view.no_question}", "no_question"
    if mode == common_pb2.CACHE_MODE_EXACT:
        return "semantic skipped: exact mode requested", "mode"
    if rule.kind == "never":
        return f"semantic skipped: policy never ({rule.scope})", "policy_never"
    if mode == common_pb2.CACHE_MODE_SEMANTIC or rule.kind == "always":
        return "", ""
    temperature = view.temperature
    if rule.kind == "deterministic":
        if temperature is not None and temperature == 0:
            return "", ""
        return (
            f"semantic skipped: temperature {_shown(temperature)}, policy deterministic ({rule.scope})",
            "temperature",
        )
    effective = OLLAMA_DEFAULT_TEMPERATURE if temperature is None else temperature
    # NOTE: temperatures arrive as float32 (0.3 is 0.30000001...): compared as the client wrote them.
    if round(effective, 6) <= round(rule.max_temperature, 6):
        return "", ""
    ceiling = _number(rule.max_temperature)
    return (
        f"semantic skipped: temperature {_shown(temperature)} above policy max {ceiling} ({rule.scope})",
        "temperature",
    )


def _shown(temperature: float | None) -> str:
    """A request's temperature in a reason: as the client wrote it, or unset (Ollama's default)."""
    if temperature is None:
        return f"unset ({_number(OLLAMA_DEFAULT_TEMPERATURE)})"
    return _number(temperature)


def plan(
    policy: common_pb2.CachePolicy,
    view: RequestView,
    *,
    default_ttl_s: float,
    max_ttl_s: float,
    semantic_enabled: bool,
    rule: SemanticRule = DETERMINISTIC,
) -> TierPlan:
    """Decides the tiers for a request.

    The default (CACHE_MODE_UNSPECIFIED): exact tier always; semantic tier as the operator's `rule`
    allows (by default only for temperature 0). BYPASS neither reads nor writes; REFRESH writes
    without reading; EXACT never touches the semantic tier; SEMANTIC uses it whatever the
    temperature, unless the rule is "never". A request without a question (a chat ending in an
    assistant or tool turn, or offering tools) never uses the semantic tier.
    """
    mode = policy.mode
    ttl_s = policy_ttl_s(policy, default_ttl_s=default_ttl_s, max_ttl_s=max_ttl_s)
    max_age_s = policy.max_age.seconds + policy.max_age.nanos / 1e9 if policy.HasField("max_age") else None
    if mode == common_pb2.CACHE_MODE_BYPASS:
        return TierPlan(False, False, False, False, ttl_s, max_age_s, "bypass requested", "mode")
    reason, category = semantic_skip(mode, view, rule, semantic_enabled=semantic_enabled)
    semantic = not reason
    if mode == common_pb2.CACHE_MODE_REFRESH:
        return TierPlan(False, False, True, semantic, ttl_s, max_age_s, "refresh requested", "mode")
    return TierPlan(True, semantic, True, semantic, ttl_s, max_age_s, reason, category)
