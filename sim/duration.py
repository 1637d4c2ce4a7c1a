"""Parsing of Ollama's keep_alive values (seconds as a number, or a Go duration string)."""

from __future__ import annotations

import math
import re

_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER_RE = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")

FOREVER_S = math.inf


def parse_go_duration(text: str) -> float:
    """Parse a Go duration such as `5m`, `1h30m` or `-1s` into seconds.

    Raises:
        ValueError: with Go's own message (`time: invalid duration "x"`, `time: missing unit ...`).
    """
    raw = text
    sign = 1.0
    if text[:1] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f'time: invalid duration "{raw}"')
    if _NUMBER_RE.fullmatch(text):
        raise ValueError(f'time: missing unit in duration "{raw}"')
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _PART_RE.match(text, pos)
        if match is None:
            raise ValueError(f'time: invalid duration "{raw}"')
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return sign * total


def parse_keep_alive(value: object) -> float:
    """Return keep_alive in seconds; `math.inf` for a negative value (Ollama keeps the model forever).

    Raises:
        ValueError: when the value is neither a number nor a Go duration string.
    """
    if isinstance(value, bool):
        raise ValueError("json: cannot unmarshal bool into Go struct field .keep_alive of type string")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = parse_go_duration(value)
    else:
        raise ValueError(f"json: cannot unmarshal {type(value).__name__} into keep_alive")
    return FOREVER_S if seconds < 0 else seconds
