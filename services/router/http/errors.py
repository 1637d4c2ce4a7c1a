"""HTTP errors of the drop-in APIs: Ollama's `{"error": ...}` shape and the domain-error status table."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.common import errors

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# NOTE: Ollama has no deadline or rate-limit statuses of its own. RESOURCE_EXHAUSTED is Corral's
# "too busy" (router concurrency limit, every node busy), which Ollama answers with 503, so it stays
# 503 unless the reason names a rate limit (429: a tenant over its rate or concurrency limit). A deadline is a
# gateway timeout (504). Clients that retry (openai-python) retry 429, 503 and 504 alike.
_STATUS_BY_ERROR: dict[type[errors.CorralError], int] = {
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 400,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.ResourceExhausted: 503,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
}
_RATE_LIMIT_REASONS = frozenset({"RATE_LIMITED", "QUOTA_EXCEEDED"})
# NOTE: every 503 tells the client when to come back, as Ollama's own "server busy" does; a refusal
# because of saturation says how long (services/router/admission.py), the others wait a second.
DEFAULT_RETRY_AFTER_S = 1.0


class ApiError(Exception):
    """An error answered with an HTTP status and Ollama's body `{"error": message}`.

    Attributes:
        headers: Extra response headers (`Retry-After` on a 503).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def status_of(err: errors.CorralError) -> int:
    """The HTTP status for a domain error (500 only for an error class without a mapping)."""
    if isinstance(err, errors.ResourceExhausted) and err.reason in _RATE_LIMIT_REASONS:
        return 429
    for cls in type(err).__mro__:
        if cls in _STATUS_BY_ERROR:
            return _STATUS_BY_ERROR[cls]
    return 500


def retry_after_of(err: errors.CorralError) -> str:
    """The `Retry-After` of a 503: the error's own suggestion when it has one, in whole seconds (>= 1)."""
    seconds = err.retry_after_s
    if seconds is None or seconds <= 0:
        seconds = DEFAULT_RETRY_AFTER_S
    return errors.retry_after_header(seconds)


def from_domain(err: errors.CorralError) -> ApiError:
    """Translates a domain error into an ApiError keeping its message (a 503 with `Retry-After`)."""
    status = status_of(err)
    headers = {"Retry-After": retry_after_of(err)} if status == 503 else None
    return ApiError(status, err.message, headers)


def dumps(obj: Any) -> str:
    """Compact ASCII-escaped JSON (no raw U+2028 that would split an NDJSON line in Python clients)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with Ollama's content type."""
    all_headers = {"Content-Type": JSON_CONTENT_TYPE}
    if headers:
        all_headers.update(headers)
    return web.Response(body=dumps(body).encode(), status=status, headers=all_headers)


def ollama_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Ollama's error reply."""
    return json_response({"error": message}, status=status, headers=headers)


_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error"}


def openai_error_body(status: int, message: str) -> dict[str, Any]:
    """OpenAI's error object, as Ollama's compatibility layer sends it."""
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPES.get(status, "api_error"),
            "param": None,
            "code": None,
        }
    }


def openai_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """OpenAI's error reply with the native status."""
    return json_response(openai_error_body(status, message), status=status, headers=headers)
