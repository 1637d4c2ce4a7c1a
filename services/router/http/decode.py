"""Reads Ollama JSON request bodies with Go's checks and messages, and builds the router protos."""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from aiohttp import web
from corral.v1 import common_pb2 as cpb
from google.protobuf import json_format, struct_pb2

from services.router.http.duration import keep_alive_to_proto
from services.router.http.errors import ApiError

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _reject_constant(name: str) -> float:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"json: cannot unmarshal number {text} into a Go value of type float64")
    return value


def loads(raw: bytes) -> Any:
    """Parses JSON as Go does: no NaN/Infinity, no number overflowing a float64."""
    return json.loads(raw, parse_constant=_reject_constant, parse_float=_parse_float)


def go_kind(value: Any) -> str:
    """The JSON kind of a value, in Go decoder vocabulary."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def number(body: dict[str, Any], name: str, kind: type[int] | type[float]) -> float | int | None:
    """A number field of an OpenAI body (None when absent or null); an int is an int32.

    Raises:
        ApiError: 400 naming the field for another type or an int out of range.
    """
    value = body.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise ApiError(400, f"{name}: must be {'an integer' if kind is int else 'a number'}")
    if kind is int and not -(2**31) <= value < 2**31:
        raise ApiError(400, f"{name}: out of range")
    return value


async def read_object(request: web.Request, struct: str) -> dict[str, Any]:
    """Reads a JSON object body; 400 with Ollama's messages for an empty or broken body.

    Raises:
        ApiError: 400 for a missing or malformed body (an oversized one raises aiohttp's 413,
            which the app's middleware answers in Ollama's shape).
    """
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = loads(raw)
    except RecursionError:
        raise ApiError(400, "invalid request body: nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"invalid request body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {go_kind(body)} into Go value of type api.{struct}")
    return body


class Fields:
    """Typed access to a request object; a wrong type gives Go's decoder message naming the field."""

    def __init__(self, body: dict[str, Any], struct: str) -> None:
        self.body = body
        self.struct = struct

    def fail(self, name: str, value: Any, go_type: str) -> ApiError:
        """The 400 error for a field of the wrong type."""
        return ApiError(
            400,
            f"json: cannot unmarshal {go_kind(value)} into Go struct field "
            f"{self.struct}.{name} of type {go_type}",
        )

    def string(self, name: str) -> str:
        """A string field ("" when absent or null)."""
        value = self.body.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(name, value, "string")
        return value

    def boolean(self, name: str) -> bool | None:
        """A boolean field (None when absent or null)."""
        value = self.body.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self.fail(name, value, "bool")
        return value

    def integer(self, name: str) -> int | None:
        """An int32 field (None when absent or null)."""
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not _INT32_MIN <= value <= _INT32_MAX:
            raise self.fail(name, value, "int")
        return value

    def objects(self, name: str, go_type: str) -> list[dict[str, Any]]:
        """An array of objects ([] when absent or null)."""
        value = self.body.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(name, value, go_type)
        return value

    def images(self, name: str = "images") -> list[bytes]:
        """An array of base64 strings, decoded."""
        value = self.body.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(name, value, "[]api.ImageData")
        try:
            return [base64.b64decode(item, validate=True) for item in value]
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{self.struct}.{name}: illegal base64 data") from None

    def keep_alive(self, target: Any) -> None:
        """Sets `target.keep_alive` from the body's keep_alive, when present."""
        value = self.body.get("keep_alive")
        if value is None:
            return
        try:
            target.keep_alive.CopyFrom(keep_alive_to_proto(value))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def think(self) -> cpb.ThinkMode.ValueType:
        """The think field: a boolean or an effort level."""
        value = self.body.get("think")
        if value is None:
            return cpb.THINK_MODE_UNSPECIFIED
        if isinstance(value, bool):
            return cpb.THINK_MODE_ON if value else cpb.THINK_MODE_OFF
        if isinstance(value, str) and value in _THINK_LEVELS:
            return _THINK_LEVELS[value]
        raise ApiError(
            400,
            f"invalid think value: {dump_short(value)} "
            '(must be "max", "high", "medium", "low", true, or false)',
        )

    def format(self) -> str:
        """The format field: "" or "json", or a JSON Schema object kept as JSON text."""
        value = self.body.get("format")
        if value is None or value in ("", "json"):
            return value or ""
        if isinstance(value, dict):
            return json.dumps(value, separators=(",", ":"))
        # NOTE: Ollama answers an invalid format with 500 when the runner rejects it; a facade must
        # never answer bad input with a 5xx, so this is a 400 with Ollama's text.
        raise ApiError(
            400, f'invalid format: {dump_short(value)}; expected "json" or a valid JSON Schema object'
        )


_THINK_LEVELS = {
    "low": cpb.THINK_MODE_LOW,
    "medium": cpb.THINK_MODE_MEDIUM,
    "high": cpb.THINK_MODE_HIGH,
    "max": cpb.THINK_MODE_MAX,
    "true": cpb.THINK_MODE_ON,
    "false": cpb.THINK_MODE_OFF,
}


def dump_short(value: Any, limit: int = 80) -> str:
    """A JSON rendering of a value, cut for error messages."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_struct(value: dict[str, Any], where: str) -> struct_pb2.Struct:
    """A JSON object as a protobuf Struct."""
    out = struct_pb2.Struct()
    try:
        json_format.ParseDict(value, out)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise ApiError(400, f"{where}: {exc}") from None
    return out
