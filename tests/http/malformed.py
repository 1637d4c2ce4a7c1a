"""Hypothesis strategies for malformed request bodies of the drop-in APIs."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

ENDPOINT_FIELDS: dict[str, list[str]] = {
    "/api/generate": [
        "model",
        "prompt",
        "stream",
        "options",
        "format",
        "images",
        "keep_alive",
        "think",
        "raw",
        "context",
        "system",
    ],
    "/api/chat": ["model", "messages", "stream", "options", "format", "tools", "keep_alive", "think"],
    "/api/embed": ["model", "input", "truncate", "dimensions", "options", "keep_alive"],
    "/api/embeddings": ["model", "prompt", "options", "keep_alive"],
    "/api/show": ["model", "name", "verbose"],
    "/v1/chat/completions": [
        "model",
        "messages",
        "stream",
        "temperature",
        "max_tokens",
        "stop",
        "response_format",
        "tools",
        "stream_options",
        "seed",
    ],
    "/v1/completions": [
        "model",
        "prompt",
        "suffix",
        "stream",
        "max_tokens",
        "stop",
        "seed",
        "stream_options",
    ],
    "/v1/responses": [
        "model",
        "input",
        "instructions",
        "tools",
        "stream",
        "max_output_tokens",
        "temperature",
        "reasoning",
        "text",
    ],
    "/v1/embeddings": ["model", "input", "dimensions", "encoding_format"],
}
OPTION_KEYS = [
    "temperature",
    "top_k",
    "top_p",
    "num_predict",
    "seed",
    "stop",
    "num_ctx",
    "use_mmap",
    "mirostat",
    "weird",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _messages() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries(
        {},
        optional={
            "role": json_values | st.sampled_from(["user", "assistant", "tool", "SYSTEM"]),
            "content": json_values,
            "images": json_values | st.lists(st.text(max_size=8), max_size=2),
            "tool_calls": json_values,
        },
    )
    return st.lists(message | json_values, max_size=3) | json_values


def body_for(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object whose fields are drawn with any type (mostly the wrong one)."""
    special: dict[str, st.SearchStrategy[Any]] = {
        "model": st.sampled_from(["llama3.2:1b", "nomic-embed-text", "", "no-such-model"]) | json_values,
        "options": st.dictionaries(st.sampled_from(OPTION_KEYS), json_values, max_size=4) | json_values,
        "messages": _messages(),
        "keep_alive": st.sampled_from(["5m", "-1", "3600", "1h30x", "", "0"]) | json_values,
    }
    fields = ENDPOINT_FIELDS[path]
    return st.fixed_dictionaries({}, optional={name: special.get(name, json_values) for name in fields})


def raw_body_for(path: str) -> st.SearchStrategy[bytes]:
    """Raw bodies: objects with wrong types, other JSON values, broken JSON and arbitrary bytes."""
    as_json = body_for(path).map(lambda b: json.dumps(b).encode())
    not_object = json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode())
    broken = as_json.map(lambda b: b[: max(1, len(b) // 2)])
    return as_json | as_json | not_object | broken | st.binary(max_size=64) | st.just(b'{"model": NaN}')


ENDPOINTS = sorted(ENDPOINT_FIELDS)
