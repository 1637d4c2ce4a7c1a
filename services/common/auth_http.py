"""HTTP side of authentication: an aiohttp middleware checking `Authorization: Bearer <key>`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.common.auth import Access, Authenticator, RateLimited, parse_bearer, set_principal
from services.common.errors import CorralError, PermissionDenied, Unauthenticated, retry_after_header

logger = logging.getLogger("corral.auth")

ErrorReply = Callable[[web.Request, int, str], web.StreamResponse]

# NOTE: liveness routes stay open, as the gRPC health service does: Ollama clients and load
# balancers call them without credentials, and they reveal nothing but the version.
OPEN_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("HEAD", "/api/version")}
)


def _status_of(exc: CorralError) -> int:
    if isinstance(exc, Unauthenticated):
        return 401
    if isinstance(exc, PermissionDenied):
        return 403
    return 429


def auth_middleware(
    authenticator: Authenticator,
    error_reply: ErrorReply,
    *,
    open_routes: Collection[tuple[str, str]] = OPEN_ROUTES,
    needed: Access = Access.TENANT,
) -> Middleware:
    """A middleware that refuses requests without a valid key (401), over their limits (429).

    Args:
        authenticator: The keys and their limits (the same object as the gRPC interceptor's).
        error_reply: Builds the API's own error body for (request, status, message).
        open_routes: (method, path) pairs served without a key.
        needed: The access every other route needs.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in open_routes:
            return await handler(request)
        try:
            state = authenticator.authenticate(parse_bearer(request.headers.get("Authorization")))
            authenticator.authorize(state, needed, f"{request.method} {request.path}")
            authenticator.admit(state)
            authenticator.enter(state)
        except CorralError as exc:
            logger.info("auth: %s %s refused: %s", request.method, request.path, exc.reason)
            reply = error_reply(request, _status_of(exc), exc.message)
            if isinstance(exc, Unauthenticated):
                reply.headers["WWW-Authenticate"] = 'Bearer realm="corral"'
            if isinstance(exc, RateLimited):
                reply.headers["Retry-After"] = retry_after_header(exc.retry_after_s)
            return reply
        set_principal(state.principal)
        try:
            return await handler(request)
        finally:
            authenticator.leave(state)

    return middleware
