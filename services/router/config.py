"""Configuration of the router service."""

from __future__ import annotations

from services.common.settings import ServiceConfig


class RouterConfig(ServiceConfig):
    """Settings of the router service (defaults work on one machine)."""

    port: int = 50051
