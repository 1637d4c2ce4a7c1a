"""The tenant of an HTTP request, as the auth middleware established it from the API key."""

from __future__ import annotations

from aiohttp import web

from services.common.auth import current_tenant


def tenant_of(request: web.Request) -> str:
    """The tenant a request acts for: the API key's (set by the auth middleware), else "default".

    Never a request field: the auth middleware (services/common/auth_http.py) sets it from
    `Authorization: Bearer <key>`, so cache entries stay per tenant.
    """
    return current_tenant()
