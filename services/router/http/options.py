"""Ollama's `options` object to ModelOptions, checked as Ollama's `Options.FromMap` checks it."""

from __future__ import annotations

from typing import Any

from corral.v1 import common_pb2 as cpb
from google.protobuf import struct_pb2

from services.router.http.errors import ApiError

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# Options with a ModelOptions field.
_TYPED_INT = frozenset(
    {
        "top_k",
        "num_predict",
        "seed",
        "repeat_last_n",
        "num_keep",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "num_thread",
    }
)
_TYPED_FLOAT = frozenset(
    {"temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", "typical_p"}
)
# Other options Ollama knows (api.Options and api.Runner): type-checked, then passed through in `extra`.
_EXTRA_INT = frozenset({"mirostat", "main_gpu", "draft_num_predict", "num_gqa"})
_EXTRA_FLOAT = frozenset(
    {"tfs_z", "mirostat_tau", "mirostat_eta", "rope_frequency_base", "rope_frequency_scale"}
)
_EXTRA_BOOL = frozenset(
    {"penalize_newline", "numa", "use_mmap", "use_mlock", "low_vram", "f16_kv", "vocab_only"}
)


def _as_int(key: str, value: Any) -> int:
    # NOTE: Go decodes JSON numbers as float64 and Ollama truncates them into int fields.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f'option "{key}" must be of type integer')
    number = int(value)
    if not _INT32_MIN <= number <= _INT32_MAX:
        raise ApiError(400, f'option "{key}" is out of range for a 32-bit integer')
    return number


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f'option "{key}" must be of type float32')
    return float(value)


def _as_stop(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ApiError(400, 'option "stop" must be of type array')
    if not all(isinstance(item, str) for item in value):
        raise ApiError(400, 'option "stop" must be of an array of strings')
    return list(value)


def parse_options(raw: Any, where: str = "options") -> cpb.ModelOptions:
    """Builds ModelOptions from an `options` object.

    Known options are type-checked (a wrong type is a 400 naming the option); unknown ones are passed
    through in `extra`, as Ollama only logs a warning for them.
    """
    options = cpb.ModelOptions()
    if raw is None:
        return options
    if not isinstance(raw, dict):
        kind = "array" if isinstance(raw, list) else type(raw).__name__
        raise ApiError(
            400,
            f"json: cannot unmarshal {kind} into Go struct field .{where} of type map[string]interface {{}}",
        )
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in _TYPED_INT:
            setattr(options, key, _as_int(key, value))
        elif key in _TYPED_FLOAT:
            setattr(options, key, _as_float(key, value))
        elif key == "stop":
            options.stop.extend(_as_stop(value))
        elif key in _EXTRA_INT:
            extra[key] = _as_int(key, value)
        elif key in _EXTRA_FLOAT:
            extra[key] = _as_float(key, value)
        elif key in _EXTRA_BOOL:
            if not isinstance(value, bool):
                raise ApiError(400, f'option "{key}" must be of type boolean')
            extra[key] = value
        else:
            extra[key] = value
    if extra:
        struct = struct_pb2.Struct()
        try:
            struct.update(extra)
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"{where}: {exc}") from None
        options.extra.CopyFrom(struct)
    return options
