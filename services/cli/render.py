"""Rich renderings of the fleet, models and cache statistics (pure functions of the protos)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Literal

from corral.v1 import cache_service_pb2, health_service_pb2, prewarm_service_pb2, router_service_pb2
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

_STATES = {
    health_service_pb2.NODE_STATE_UNSPECIFIED: ("unprobed", "dim"),
    health_service_pb2.NODE_STATE_HEALTHY: ("healthy", "green"),
    health_service_pb2.NODE_STATE_DEGRADED: ("degraded", "yellow"),
    health_service_pb2.NODE_STATE_UNHEALTHY: ("down", "red"),
    health_service_pb2.NODE_STATE_EJECTED: ("ejected", "red"),
    health_service_pb2.NODE_STATE_DRAINING: ("draining", "blue"),
}


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders `node-2` before `node-10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def fmt_ms(value_ms: float) -> str:
    """A duration for people: `850ms`, `1.2s`, `-` when unknown."""
    if value_ms <= 0:
        return "-"
    if value_ms < 1000:
        return f"{value_ms:.0f}ms"
    return f"{value_ms / 1000:.1f}s"


def fmt_bytes(size_bytes: int) -> str:
    """A size for people, in decimal units as Ollama prints them (`1.3 GB`)."""
    value = float(size_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size_bytes} B"  # pragma: no cover - the loop always returns


def state_text(node: health_service_pb2.NodeScore) -> Text:
    """The node's state as a coloured word."""
    label, style = _STATES.get(node.state, ("?", ""))
    return Text(label, style=style)


def node_score_ms(node: health_service_pb2.NodeScore) -> float:
    """The node's best expected completion time: over loaded models first, else installed ones."""
    loaded = [m.expected_ms for m in node.models if m.loaded and m.expected_ms > 0]
    installed = [m.expected_ms for m in node.models if m.installed and m.expected_ms > 0]
    return min(loaded or installed or [0.0])


def node_latency_ms(node: health_service_pb2.NodeScore) -> float:
    """Recent request latency: the fastest model EWMA with data, else the probe latency."""
    ewmas = [m.ewma_latency_ms for m in node.models if m.ewma_latency_ms > 0]
    return min(ewmas) if ewmas else node.probe_latency_ms


def status_table(
    nodes: Iterable[health_service_pb2.NodeScore], version: int = 0, width: int = 80
) -> RenderableType:
    """The `corral status` view: one row per node, fitted to `width` columns (80 by default)."""
    rows = sorted(nodes, key=lambda n: natural_key(n.node_id))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    # NOTE: fixed widths keep the numbers whole at 80 columns; the loaded models (one per line, cut
    # with an ellipsis rather than folded mid-name) take what the node id leaves.
    fixed = {"STATE": 8, "SCORE": 6, "INFL": 4, "LATENCY": 7, "ERR": 4}
    node_width = min(max([len(n.node_id) for n in rows] + [4]), 24)
    # NOTE: columns are separated by 2 spaces and the table has 1 space at each edge.
    loaded_width = max(12, width - node_width - sum(fixed.values()) - 2 * len(fixed) - 2 - 1)
    table.add_column("NODE", no_wrap=True, width=node_width, overflow="ellipsis")
    for name, column_width in fixed.items():
        justify: Literal["left", "right"] = "left" if name == "STATE" else "right"
        table.add_column(name, justify=justify, no_wrap=True, width=column_width)
    table.add_column("LOADED", no_wrap=True, overflow="ellipsis", width=loaded_width)
    for node in rows:
        loaded = sorted(m.model for m in node.models if m.loaded)
        table.add_row(
            node.node_id,
            state_text(node),
            fmt_ms(node_score_ms(node)),
            str(node.inflight),
            fmt_ms(node_latency_ms(node)),
            f"{node.error_rate * 100:.0f}%",
            "\n".join(loaded) if loaded else Text("-", style="dim"),
        )
    serving = sum(
        1
        for n in rows
        if n.state in (health_service_pb2.NODE_STATE_HEALTHY, health_service_pb2.NODE_STATE_DEGRADED)
    )
    header = Text(f"{len(rows)} nodes, {serving} serving")
    if version:
        header.append(f"  (scores v{version}, {time.strftime('%H:%M:%S')})", style="dim")
    problems = [
        Text(f"  {n.node_id}: {n.last_error}", style="dim red")
        for n in rows
        if n.last_error and n.state != health_service_pb2.NODE_STATE_HEALTHY
    ]
    # NOTE: the labels the router routes by (priority, num_parallel, what pins select) under the table.
    labelled = [
        Text(f"  {n.node_id}: " + ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items())), style="dim")
        for n in rows
        if n.labels
    ]
    if labelled:
        labelled.insert(0, Text("labels", style="dim"))
    return Group(header, table, *problems, *labelled)


def pins_line(pins: dict[str, dict[str, str]]) -> Text:
    """The router's model pins, e.g. "pins (router): mistral:7b -> gpu=true"."""
    text = Text("pins (router): ", style="dim")
    text.append("; ".join(f"{model} -> {_labels(labels)}" for model, labels in sorted(pins.items())))
    return text


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def models_table(models: Iterable[router_service_pb2.FleetModel]) -> RenderableType:
    """The `corral models` view: one row per model in the fleet (with the router's pins, if any)."""
    models = list(models)
    pinned = any(m.pin for m in models)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("MODEL", no_wrap=True, max_width=28, overflow="ellipsis")
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("PARAMS", no_wrap=True)
    table.add_column("QUANT", no_wrap=True)
    table.add_column("NODES", justify="right", no_wrap=True)
    table.add_column("LOADED ON", overflow="fold")
    if pinned:
        table.add_column("PINNED TO", overflow="fold")
    for model in models:
        loaded = [p.node_id for p in model.placements if p.loaded]
        cells: list[RenderableType] = [
            model.name,
            fmt_bytes(model.details.size_bytes) if model.details.size_bytes else "-",
            model.details.parameter_size or "-",
            model.details.quantization_level or "-",
            str(len(model.placements)),
            ", ".join(loaded) if loaded else Text("-", style="dim"),
        ]
        if pinned:
            cells.append(_labels(dict(model.pin)) if model.pin else Text("-", style="dim"))
        table.add_row(*cells)
    return table


_REQUIRED_STATES = {
    prewarm_service_pb2.REQUIRED_MODEL_STATE_PRESENT: ("present", "green"),
    prewarm_service_pb2.REQUIRED_MODEL_STATE_PULLING: ("pulling", "yellow"),
    prewarm_service_pb2.REQUIRED_MODEL_STATE_MISSING: ("missing", "red"),
    prewarm_service_pb2.REQUIRED_MODEL_STATE_FAILED: ("failed", "red"),
}


def required_models_view(states: Iterable[prewarm_service_pb2.RequiredModelStatus]) -> RenderableType:
    """Where each required model is missing, pulling (with progress) or present: a row per model and state."""
    by_model: dict[str, dict[int, list[str]]] = {}
    failures: list[Text] = []
    for item in states:
        label = item.node_id
        if item.state == prewarm_service_pb2.REQUIRED_MODEL_STATE_PULLING and item.total:
            label += f" {100 * item.completed // item.total}%"
        by_model.setdefault(item.model, {}).setdefault(item.state, []).append(label)
        if item.state == prewarm_service_pb2.REQUIRED_MODEL_STATE_FAILED and item.error:
            failures.append(Text(f"  {item.node_id} {item.model}: {item.error}", style="dim red"))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="required models", title_justify="left")
    table.add_column("MODEL", no_wrap=True, max_width=28, overflow="ellipsis")
    table.add_column("STATE", no_wrap=True)
    table.add_column("NODES", overflow="fold")
    for model in sorted(by_model, key=natural_key):
        for state, (name, style) in _REQUIRED_STATES.items():
            nodes = by_model[model].get(state)
            if nodes:
                table.add_row(model, Text(name, style=style), ", ".join(sorted(nodes, key=natural_key)))
    return Group(table, *failures)


def _rate(hits: int, misses: int) -> str:
    total = hits + misses
    return f"{hits / total * 100:.0f}%" if total else "-"


def cache_stats_view(stats: cache_service_pb2.StatsResponse) -> RenderableType:
    """The `corral cache stats` view."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("TIER", "HITS", "MISSES", "HIT RATE", "STORES", "ENTRIES", "P50", "P99"):
        table.add_column(name, justify="left" if name == "TIER" else "right", no_wrap=True)
    for label, tier, degraded in (
        ("exact", stats.exact, stats.exact_degraded),
        ("semantic", stats.semantic, stats.semantic_degraded),
    ):
        table.add_row(
            Text(label + (" (down)" if degraded else ""), style="red" if degraded else ""),
            str(tier.hits),
            str(tier.misses),
            _rate(tier.hits, tier.misses),
            str(tier.stores),
            str(tier.entries),
            fmt_ms(tier.lookup_p50_ms),
            fmt_ms(tier.lookup_p99_ms),
        )
    footer = Text(
        f"coalesced {stats.coalesced}, guard rejections {stats.guard_rejections}, "
        f"degraded lookups {stats.degraded_lookups}, embedder {stats.embedder or '-'}"
    )
    return Group(table, footer)
