"""Request validation: INVALID_ARGUMENT naming the field, before any node or the cache is contacted."""

from __future__ import annotations

import json
import math
import re

from corral.v1 import common_pb2, router_service_pb2

from services.common.errors import InvalidArgument
from services.common.wire import check_keep_alive
from services.router.scores import normalize_model

ROLES = frozenset({"system", "user", "assistant", "tool"})
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")

# (field, lowest allowed value, highest allowed value); None means unbounded on that side.
_OPTION_RANGES: tuple[tuple[str, float | None, float | None], ...] = (
    ("temperature", 0.0, None),
    ("top_k", 0, None),
    ("top_p", 0.0, 1.0),
    ("min_p", 0.0, 1.0),
    ("typical_p", 0.0, 1.0),
    ("num_predict", -2, None),
    ("repeat_penalty", 0.0, None),
    ("repeat_last_n", -1, None),
    ("num_keep", -1, None),
    ("num_ctx", 1, None),
    ("num_batch", 1, None),
    ("num_gpu", -1, None),
    ("num_thread", 0, None),
)


def check_model(field: str, model: str, known: set[str] | None) -> str:
    """Checks a model name; returns its normalised form.

    Args:
        field: The field path for errors.
        model: The name as requested.
        known: Models installed somewhere in the fleet, or None when not known yet (no check then).
    """
    if not model:
        raise InvalidArgument(field, "a model is required")
    if not _MODEL_NAME.match(model):
        raise InvalidArgument(field, f"{model!r} is not a valid model name")
    normalized = normalize_model(model)
    if known is not None and normalized not in known:
        raise InvalidArgument(
            field, f"model {model!r} is not installed on any node", reason="MODEL_NOT_FOUND"
        )
    return normalized


def check_options(field: str, options: common_pb2.ModelOptions) -> None:
    """Checks option values (ranges, finite numbers)."""
    for name, low, high in _OPTION_RANGES:
        if not options.HasField(name):  # type: ignore[arg-type]
            continue
        value = getattr(options, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"{field}.{name}", "must be a finite number")
        if low is not None and value < low:
            raise InvalidArgument(f"{field}.{name}", f"must be >= {low:g}, got {value:g}")
        if high is not None and value > high:
            raise InvalidArgument(f"{field}.{name}", f"must be <= {high:g}, got {value:g}")
    for name in ("presence_penalty", "frequency_penalty"):
        if options.HasField(name) and not math.isfinite(getattr(options, name)):  # type: ignore[arg-type]
            raise InvalidArgument(f"{field}.{name}", "must be a finite number")


def check_format(field: str, fmt: str) -> None:
    """`format` is empty, "json", or a JSON Schema object as JSON text."""
    if not fmt or fmt == "json":
        return
    try:
        schema = json.loads(fmt)
    except ValueError:
        raise InvalidArgument(field, 'must be "json" or a JSON Schema object as JSON text') from None
    if not isinstance(schema, dict):
        raise InvalidArgument(field, "a JSON Schema must be a JSON object")


def _check_size(field: str, size_bytes: int, limit: int) -> None:
    if size_bytes > limit:
        raise InvalidArgument(
            field, f"the prompt is {size_bytes} bytes, over the limit of {limit}", reason="PROMPT_TOO_LARGE"
        )


def validate_generate(spec: common_pb2.GenerateSpec, known: set[str] | None, max_prompt_bytes: int) -> str:
    """Validates a GenerateSpec; returns the normalised model name."""
    model = check_model("spec.model", spec.model, known)
    if spec.raw and (spec.template or spec.system):
        raise InvalidArgument("spec.raw", "raw mode does not support template or system")
    check_format("spec.format", spec.format)
    check_keep_alive("spec.keep_alive", spec)
    if spec.HasField("options"):
        check_options("spec.options", spec.options)
    size = len(spec.prompt.encode()) + len(spec.system.encode()) + len(spec.suffix.encode())
    size += len(spec.template.encode()) + sum(len(i) for i in spec.images)
    _check_size("spec.prompt", size, max_prompt_bytes)
    return model


def validate_chat(spec: common_pb2.ChatSpec, known: set[str] | None, max_prompt_bytes: int) -> str:
    """Validates a ChatSpec; returns the normalised model name."""
    model = check_model("spec.model", spec.model, known)
    if not spec.messages:
        raise InvalidArgument("spec.messages", "at least one message is required")
    size = 0
    for index, message in enumerate(spec.messages):
        if message.role.lower() not in ROLES:
            raise InvalidArgument(
                f"spec.messages[{index}].role",
                f"invalid role {message.role!r}; expected one of system, user, assistant, tool",
            )
        size += len(message.content.encode()) + len(message.thinking.encode())
        size += sum(len(i) for i in message.images)
    for index, tool in enumerate(spec.tools):
        if tool.type not in ("", "function"):
            raise InvalidArgument(f"spec.tools[{index}].type", f"unknown tool type {tool.type!r}")
        if not tool.function.name:
            raise InvalidArgument(f"spec.tools[{index}].function.name", "a function name is required")
    check_format("spec.format", spec.format)
    check_keep_alive("spec.keep_alive", spec)
    if spec.HasField("options"):
        check_options("spec.options", spec.options)
    _check_size("spec.messages", size, max_prompt_bytes)
    return model


def validate_embed(
    req: router_service_pb2.EmbedRequest, known: set[str] | None, max_prompt_bytes: int, max_inputs: int
) -> str:
    """Validates an EmbedRequest; returns the normalised model name."""
    model = check_model("model", req.model, known)
    if not req.inputs:
        raise InvalidArgument("inputs", "at least one input is required")
    if len(req.inputs) > max_inputs:
        raise InvalidArgument("inputs", f"{len(req.inputs)} inputs, over the limit of {max_inputs}")
    if req.dimensions < 0:
        raise InvalidArgument("dimensions", f"must be >= 0, got {req.dimensions}")
    if req.HasField("options"):
        check_options("options", req.options)
    _check_size("inputs", sum(len(text.encode()) for text in req.inputs), max_prompt_bytes)
    return model
