"""Ollama's keep_alive values: a number of seconds or a Go duration string, negative meaning forever."""

from __future__ import annotations

import re

from google.protobuf import duration_pb2

_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_UNIT_NS["h"] = 3600 * 10**9
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER_RE = re.compile(r"(\d+(\.\d*)?|\.\d+)")
# NOTE: protobuf Durations stop at about 10,000 years; longer values are clamped to that.
_MAX_PROTO_S = 315_576_000_000


def parse_go_duration_ns(text: str) -> int:
    """Parses a Go duration (`5m`, `1h30m`, `-1s`, `0`) into nanoseconds.

    Raises:
        ValueError: with Go's own message, e.g. `time: missing unit in duration "3600"`.
    """
    body = text
    negative = False
    if body[:1] in ("+", "-"):
        negative = body[0] == "-"
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    if _NUMBER_RE.fullmatch(body):
        raise ValueError(f'time: missing unit in duration "{text}"')
    pos = 0
    total_ns = 0.0
    while pos < len(body):
        match = _PART_RE.match(body, pos)
        if match is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total_ns += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    return -int(total_ns) if negative else int(total_ns)


def keep_alive_to_proto(value: object) -> duration_pb2.Duration:
    """Converts a JSON keep_alive value to a Duration (negative: keep the model loaded forever).

    Raises:
        ValueError: for a wrong type or a malformed duration string (Ollama's messages).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = "bool" if isinstance(value, bool) else type(value).__name__
        raise ValueError(f"Unsupported type: '{kind}'")
    if isinstance(value, str):
        total_ns = parse_go_duration_ns(value)
        seconds, nanos = (-1, 0) if total_ns < 0 else divmod(total_ns, 10**9)
    else:
        # NOTE: Ollama truncates a number of seconds to an integer, as `int(t) * time.Second` does.
        seconds, nanos = (-1, 0) if value < 0 else (int(value), 0)
    return duration_pb2.Duration(seconds=min(seconds, _MAX_PROTO_S), nanos=nanos)
