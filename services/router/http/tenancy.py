"""The tenant of an HTTP request: the single seam where authentication will plug in."""

from __future__ import annotations

from aiohttp import web

DEFAULT_TENANT = "default"


def tenant_of(request: web.Request) -> str:
    """The tenant a request acts for.

    Every request is the default tenant until authentication lands; it will read the tenant from
    `Authorization: Bearer <token>` here (and only here), so cache entries stay per tenant.
    """
    return DEFAULT_TENANT
