"""Wire helpers: Ollama-style request validation, error bodies, timestamps and NDJSON streams."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from sim.duration import parse_keep_alive

_ENCODER = json.JSONEncoder(separators=(",", ":"))
encode = _ENCODER.encode

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
NDJSON_CONTENT_TYPE = "application/x-ndjson"


class ApiError(Exception):
    """An error answered as `{"error": message}` with an HTTP status, as Ollama does."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> web.Response:
        """The JSON error response."""
        return json_response({"error": self.message}, status=self.status)


def json_response(body: Any, status: int = 200) -> web.Response:
    """A compact JSON response with Ollama's content type."""
    return web.Response(
        body=encode(body).encode(), status=status, headers={"Content-Type": JSON_CONTENT_TYPE}
    )


def rfc3339(ts: float | None = None) -> str:
    """RFC3339 UTC timestamp with microseconds, e.g. `2024-09-12T21:17:29.110811Z`."""
    ts = time.time() if ts is None else ts
    whole = int(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((ts - whole) * 1e6):06d}Z"


def _go_kind(value: Any) -> str:
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


async def read_body(request: web.Request, struct: str) -> dict[str, Any]:
    """Parse a JSON object body; 400 with Ollama's messages for an empty or broken body."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid character in request body: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {_go_kind(body)} into Go value of type api.{struct}")
    return body


class Fields:
    """Typed access to a request body, with Go's decoder messages naming the field on a type error."""

    def __init__(self, body: dict[str, Any], struct: str) -> None:
        self.body = body
        self.struct = struct

    def _fail(self, name: str, value: Any, go_type: str) -> ApiError:
        return ApiError(
            400,
            f"json: cannot unmarshal {_go_kind(value)} into Go struct field "
            f"{self.struct}.{name} of type {go_type}",
        )

    def string(self, name: str, default: str = "") -> str:
        """A string field."""
        value = self.body.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(name, value, "string")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        """A boolean field."""
        value = self.body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(name, value, "bool")
        return value

    def int_list(self, name: str) -> list[int]:
        """An array of integers."""
        value = self.body.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self._fail(name, value, "[]int")
        return value

    def obj_list(self, name: str) -> list[dict[str, Any]]:
        """An array of objects."""
        value = self.body.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._fail(name, value, "[]api.Message" if name == "messages" else "[]api.Tool")
        return value

    def keep_alive(self, default_s: float) -> float:
        """keep_alive in seconds (`math.inf` = forever)."""
        value = self.body.get("keep_alive")
        if value is None:
            return default_s
        try:
            return parse_keep_alive(value)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None


class Options:
    """The `options` object, checked the way Ollama's `Options.FromMap` does."""

    _INT = frozenset({"num_predict", "seed", "top_k", "num_ctx", "num_keep", "repeat_last_n", "num_batch"})
    _FLOAT = frozenset({"temperature", "top_p", "min_p", "typical_p", "repeat_penalty"})

    def __init__(self, raw: Any) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ApiError(400, f"json: cannot unmarshal {_go_kind(raw)} into Go struct field .options")
        for key, value in raw.items():
            if value is None:
                continue
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if key in self._INT and not numeric:
                raise ApiError(400, f'option "{key}" must be of type integer')
            if key in self._FLOAT and not numeric:
                raise ApiError(400, f'option "{key}" must be of type float32')
            if key == "stop" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
                raise ApiError(400, 'option "stop" must be of type array of strings')
        self.raw: dict[str, Any] = raw

    def integer(self, name: str) -> int | None:
        """An integer option, if set."""
        value = self.raw.get(name)
        return None if value is None else int(value)

    @property
    def stop(self) -> list[str]:
        """Stop sequences."""
        value = self.raw.get("stop")
        return list(value) if value else []


def metrics(
    total_ns: int, load_ns: int, prompt_count: int, prompt_ns: int, eval_count: int, eval_ns: int
) -> dict[str, int]:
    """Final-chunk metrics; zero values are left out, as Ollama's `omitempty` does."""
    fields = {
        "total_duration": total_ns,
        "load_duration": load_ns,
        "prompt_eval_count": prompt_count,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_count,
        "eval_duration": eval_ns,
    }
    return {k: v for k, v in fields.items() if v}


async def start_ndjson(request: web.Request) -> web.StreamResponse:
    """Start a chunked NDJSON stream."""
    response = web.StreamResponse(status=200, headers={"Content-Type": NDJSON_CONTENT_TYPE})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def start_sse(request: web.Request) -> web.StreamResponse:
    """Start a chunked server-sent events stream (the OpenAI-compatible endpoints)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def send_line(response: web.StreamResponse, obj: Any) -> None:
    """Write one NDJSON line (ASCII-escaped, so no U+2028 can break a client's line splitting)."""
    await response.write((encode(obj) + "\n").encode())
