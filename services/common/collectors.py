"""The registry of scrape-time Prometheus collectors: one per kind of service and process.

Each service keeps its collector beside the state it reads (services/<name>/collector.py) and
installs it here, so this shared layer knows no service. Collectors run on the service's event loop
(services.common.metrics serves /metrics there).
"""

from __future__ import annotations

from prometheus_client.registry import Collector

from services.common import metrics

_registered: dict[str, Collector] = {}


def install(kind: str, collector: Collector) -> None:
    """Registers `collector` as the one collector of `kind` ("cache", "router", ...) in this process."""
    # NOTE: one collector per kind and process; a second in-process server (tests) replaces the first.
    old = _registered.pop(kind, None)
    if old is not None:
        metrics.REGISTRY.unregister(old)
    metrics.register(collector)
    _registered[kind] = collector
