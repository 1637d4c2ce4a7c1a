"""The CLI's renderings: readable at 80 columns, nothing important cut."""

from __future__ import annotations

from corral.v1 import (
    cache_service_pb2,
    common_pb2,
    health_service_pb2,
    prewarm_service_pb2,
    router_service_pb2,
)
from rich.console import Console

from services.cli.fleet import leader_line
from services.cli.inference import routing_line
from services.cli.render import cache_stats_view, fmt_bytes, fmt_ms, models_table, pins_line, status_table

MODELS = ("llama3.2:1b", "nomic-embed-text:v1.5", "mistral:7b")
LONG_MODEL = "mistral:7b-instruct-v0.3-q4_K_M"
NODE_IDS = ("node-1", "node-2", "gpu-a10-west-2", "node-4")


def _nodes() -> list[health_service_pb2.NodeScore]:
    nodes = []
    states = [
        health_service_pb2.NODE_STATE_HEALTHY,
        health_service_pb2.NODE_STATE_DEGRADED,
        health_service_pb2.NODE_STATE_EJECTED,
        health_service_pb2.NODE_STATE_DRAINING,
    ]
    for i, state in enumerate(states, start=1):
        node = health_service_pb2.NodeScore(
            node_id=NODE_IDS[i - 1],
            address=f"http://10.0.0.{i}:11434",
            state=state,
            inflight=i * 3,
            error_rate=0.05 * i,
            probe_latency_ms=2.5,
            last_error="connection refused" if state == health_service_pb2.NODE_STATE_EJECTED else "",
        )
        for name in (*MODELS, LONG_MODEL):
            node.models.add(
                model=name, installed=True, loaded=True, expected_ms=850.0 * i, ewma_latency_ms=1234.0
            )
        nodes.append(node)
    return nodes


def _render(renderable: object, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def test_status_fits_80_columns_and_keeps_what_matters() -> None:
    lines = _render(status_table(_nodes(), version=42))
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for node_id in NODE_IDS:
        assert node_id in text
    for word in ("healthy", "degraded", "ejected", "draining", "NODE", "SCORE", "LOADED", "850ms", "3.4s"):
        assert word in text
    assert "4 nodes, 2 serving" in lines[0]
    assert "connection refused" in text
    # Usual model names stay whole; a very long one is cut with an ellipsis, never folded.
    assert all(name in text for name in MODELS)
    assert "mistral:7b-instruct" in text and "…" in text


def test_status_lists_the_labels_the_router_routes_by() -> None:
    nodes = _nodes()
    nodes[0].labels.update({"priority": "0", "gpu": "true"})
    nodes[3].labels.update({"priority": "1", "num_parallel": "2"})
    lines = _render(status_table(nodes))
    assert max(len(line) for line in lines) <= 80
    assert "labels" in lines
    assert "  node-1: gpu=true, priority=0" in lines
    assert "  node-4: num_parallel=2, priority=1" in lines
    assert not any(line.startswith("  node-2:") for line in lines)  # no labels, no line
    assert "labels" not in _render(status_table(_nodes()))


def test_status_with_no_nodes_and_unprobed_nodes() -> None:
    assert "0 nodes" in _render(status_table([]))[0]
    lines = _render(status_table([health_service_pb2.NodeScore(node_id="n1")]))
    assert any("unprobed" in line and "-" in line for line in lines)


def test_models_and_cache_views_fit_80_columns() -> None:
    model = router_service_pb2.FleetModel(
        name="llama3.2:1b",
        details=router_service_pb2.ModelDetails(
            size_bytes=1_321_098_329, parameter_size="1.2B", quantization_level="Q8_0"
        ),
        placements=[
            router_service_pb2.ModelPlacement(node_id=f"node-{i}", loaded=i < 3) for i in range(1, 5)
        ],
    )
    lines = _render(models_table([model]))
    assert max(len(line) for line in lines) <= 80
    assert "1.3 GB" in "\n".join(lines) and "node-1, node-2" in "\n".join(lines)
    stats = cache_service_pb2.StatsResponse(
        exact=cache_service_pb2.TierStats(hits=3, misses=1, stores=4, entries=4, lookup_p50_ms=0.4),
        semantic=cache_service_pb2.TierStats(hits=0, misses=1),
        semantic_degraded=True,
        embedder="ollama:nomic-embed-text",
    )
    lines = _render(cache_stats_view(stats))
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80
    assert "75%" in text and "semantic (down)" in text and "ollama:nomic-embed-text" in text


def test_small_formatters() -> None:
    assert fmt_ms(0) == "-" and fmt_ms(12.4) == "12ms" and fmt_ms(1500) == "1.5s"
    assert fmt_bytes(274_302_450) == "274.3 MB" and fmt_bytes(12) == "12 B"
    routing = common_pb2.RoutingInfo(
        node_id="node-2", attempts=2, cache_outcome=common_pb2.CACHE_OUTCOME_MISS, ttft_ms=80
    )
    stats = common_pb2.GenerationStats(eval_count=100)
    stats.eval_duration.FromMilliseconds(500)
    assert routing_line(routing, stats) == "node-2 · cache miss · 2 attempts · ttft 80ms · 200 tok/s"


def test_the_prewarm_leader_line_says_who_leads_and_who_answered() -> None:
    name = "corral-prewarm host-a pid 7"
    assert leader_line(prewarm_service_pb2.GetStatusResponse(leads=True, leader=name)) == (
        f"prewarm leader: {name} (answered)"
    )
    standby = leader_line(prewarm_service_pb2.GetStatusResponse(leads=False, leader=name))
    assert name in standby and "standby" in standby
    assert "no leader" in leader_line(prewarm_service_pb2.GetStatusResponse())


def test_the_routers_pins_show_in_models_and_status() -> None:
    plain = router_service_pb2.FleetModel(name="llama3.2:1b")
    assert not any("PINNED" in line for line in _render(models_table([plain])))  # no pins: no column
    big = router_service_pb2.FleetModel(name="mistral:7b", pin={"gpu": "true", "zone": "a"})
    lines = _render(models_table([plain, big]))
    assert any("PINNED TO" in line for line in lines) and max(len(line) for line in lines) <= 80
    assert any("mistral:7b" in line and "gpu=true, zone=a" in line for line in lines)
    line = _render(pins_line({"mistral:7b": {"gpu": "true"}}))[0]
    assert line == "pins (router): mistral:7b -> gpu=true"
