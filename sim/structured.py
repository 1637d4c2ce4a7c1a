"""Structured output for the simulator: values conforming to a JSON Schema, and tool calls.

Everything is deterministic in (seed, key), like the generated text: the same request on the same node
gives the same object and the same call.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

from sim import textgen

# NOTE: words too generic to tell one tool from another ("get_weather" is picked by "weather").
_GENERIC = frozenset(
    {"get", "set", "call", "fetch", "find", "make", "list", "run", "do", "the", "tool", "use"}
)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_MAX_DEPTH = 8


class _Draws:
    """An endless deterministic stream of 32-bit draws."""

    def __init__(self, seed: int, key: str) -> None:
        self._seed = f"{seed}\x00{key}"
        self._block = 0
        self._buffer: Iterator[int] = iter(())

    def __call__(self) -> int:
        for value in self._buffer:
            return value
        digest = hashlib.shake_128(f"{self._seed}\x00{self._block}".encode()).digest(256)
        self._block += 1
        self._buffer = iter(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 256, 4))
        return next(self._buffer)


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}


def _words(draw: _Draws, count: int) -> str:
    return " ".join(textgen._WORDS[draw() % len(textgen._WORDS)] for _ in range(count))


def _string(schema: dict[str, Any], draw: _Draws, hint: str | None) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2025-01-15T10:00:00Z"
    if fmt == "date":
        return "2025-01-15"
    if fmt == "email":
        return f"{_words(draw, 1)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{_words(draw, 1)}"
    if fmt == "uuid":
        return "123e4567-e89b-12d3-a456-426614174000"
    text = hint if hint else _words(draw, 1 + draw() % 3)
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = (text + " " + _words(draw, low)) if text else _words(draw, low)
    if isinstance(high, int) and high >= 0:
        text = text[:high]
    if isinstance(low, int) and len(text) < low:
        text = text.ljust(low, "x")
    return text


def _number(schema: dict[str, Any], draw: _Draws, integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    lo = float(low) if isinstance(low, int | float) else 0.0
    hi = float(high) if isinstance(high, int | float) else lo + 100.0
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
        lo += 1 if integer else 0.01
    if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], int | float):
        hi -= 1 if integer else 0.01
    if integer:
        ilo, ihi = int(-(-lo // 1)), int(hi // 1)
        return ilo if ihi < ilo else ilo + draw() % (ihi - ilo + 1)
    return round(lo + (hi - lo) * (draw() % 10_000) / 10_000, 2)


def value_for(
    schema: Any, draw: _Draws, root: dict[str, Any], depth: int = 0, hints: dict[str, str] | None = None
) -> Any:
    """A value conforming to `schema` (the common subset: types, enum, const, properties, items, $ref)."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if depth > _MAX_DEPTH else _words(draw, 2)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[draw() % len(enum)]
    for combinator in ("anyOf", "oneOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")] or options
            return value_for(usable[0], draw, root, depth + 1, hints)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {}
        for part in all_of:
            part = _resolve(part, root)
            if isinstance(part, dict):
                merged.update(part)
        return value_for(merged, draw, root, depth + 1, hints)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        out: dict[str, Any] = {}
        if isinstance(props, dict):
            # NOTE: every listed property is filled, required or not: a constrained model usually does.
            for name, sub in props.items():
                hint = (hints or {}).get(name)
                out[name] = value_for(sub, draw, root, depth + 1, {"": hint} if hint else None)
        return out
    if kind == "array":
        low = schema.get("minItems")
        high = schema.get("maxItems")
        lo = low if isinstance(low, int) else 1
        hi = high if isinstance(high, int) else max(lo, 3)
        count = lo + draw() % (max(hi, lo) - lo + 1)
        return [value_for(schema.get("items", {}), draw, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return _number(schema, draw, True)
    if kind == "number":
        return _number(schema, draw, False)
    if kind == "boolean":
        return bool(draw() & 1)
    if kind == "null":
        return None
    return _string(schema, draw, (hints or {}).get(""))


def schema_value(schema: dict[str, Any], seed: int, key: str) -> Any:
    """The deterministic value a constrained model gives for `schema`."""
    return value_for(schema, _Draws(seed, key), schema)


def json_pieces(value: Any) -> list[str]:
    """The JSON text of `value`, cut into token-sized pieces for streaming."""
    text = json.dumps(value, ensure_ascii=False)
    return re.findall(r"\w+|\s+|[^\w\s]", text) or [text]


def pick_tool(tools: list[dict[str, Any]], prompt: str) -> dict[str, Any] | None:
    """The tool the prompt asks for: one whose name, or a distinctive word of it, the prompt mentions."""
    lowered = prompt.lower()
    words = set(w.lower() for w in _WORD_RE.findall(prompt))
    for tool in tools:
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        name = function["name"]
        if name.lower() in lowered:
            return tool
        parts = [p.lower() for p in re.split(r"[_\-\s]+|(?<=[a-z])(?=[A-Z])", name) if p]
        if any(len(p) >= 3 and p not in _GENERIC and (p in words or p + "s" in words) for p in parts):
            return tool
    return None


def _prompt_hints(prompt: str, schema: Any) -> dict[str, str]:
    """String arguments taken from the prompt: capitalised words (a city, a name) fill string properties."""
    # NOTE: the first word of a sentence is capitalised anyway; only later ones are taken.
    candidates: list[str] = []
    for sentence in re.split(r"[.!?]\s*", prompt):
        tokens = _WORD_RE.findall(sentence)
        run: list[str] = []
        for token in [*tokens[1:], ""]:
            if token[:1].isupper():
                run.append(token)  # consecutive capitalised words are one name: "New York"
            elif run:
                candidates.append(" ".join(run))
                run = []
    props = schema.get("properties") if isinstance(schema, dict) else None
    hints: dict[str, str] = {}
    if isinstance(props, dict):
        strings = [
            n
            for n, s in props.items()
            if isinstance(s, dict) and s.get("type") == "string" and "enum" not in s
        ]
        for name, word in zip(strings, candidates, strict=False):
            hints[name] = word
    return hints


def tool_call(tool: dict[str, Any], prompt: str, seed: int, key: str) -> dict[str, Any]:
    """An Ollama tool call for `tool`: 8-character id, index 0, arguments as an object."""
    function = tool["function"]
    schema = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    draw = _Draws(seed, key)
    arguments = value_for({"type": "object", **schema}, draw, schema, 0, _prompt_hints(prompt, schema))
    call_id = hashlib.sha256(f"{seed}\x00{key}\x00call".encode()).hexdigest()[:8]
    return {
        "id": call_id,
        "function": {
            "index": 0,
            "name": function["name"],
            "arguments": arguments if isinstance(arguments, dict) else {},
        },
    }
