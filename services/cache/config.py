"""Configuration of the cache service."""

from __future__ import annotations

from services.common.settings import ServiceConfig


class CacheConfig(ServiceConfig):
    """Settings of the cache service (defaults work on one machine)."""

    port: int = 50052
