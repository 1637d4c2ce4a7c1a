"""Configuration of the health service."""

from __future__ import annotations

from services.common.settings import ServiceConfig


class HealthConfig(ServiceConfig):
    """Settings of the health service (defaults work on one machine)."""

    port: int = 50053
