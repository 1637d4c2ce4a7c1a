"""Addresses of the test stores for the users the deployments give each service."""

from __future__ import annotations

from urllib.parse import quote

from devstack.redis import RedisServer
from services.cache.exact_store import EVENTS_USER


def events_url(server: RedisServer) -> str:
    """The URL of the server's near-cache user (`EVENTS_USER`, subscribe-only), its password in it."""
    password, _ = server.users[EVENTS_USER]
    return f"redis://{EVENTS_USER}:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
