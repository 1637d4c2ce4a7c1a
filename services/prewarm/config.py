"""Configuration of the prewarm service."""

from __future__ import annotations

from services.common.settings import ServiceConfig


class PrewarmConfig(ServiceConfig):
    """Settings of the prewarm service (defaults work on one machine)."""

    port: int = 50054
