"""Unit tests of the warm-up planner and the join/come-back detection."""

from __future__ import annotations

import math

from services.prewarm.config import WarmModel
from services.prewarm.planner import (
    ModelView,
    NodeView,
    WarmAction,
    WarmItem,
    next_rewarm_at,
    nodes_needing_warmup,
    normalize_model_name,
    plan_warm,
)

NOW = 1_000_000.0
LLAMA = WarmModel(name="llama3.2:1b", keep_alive_s=600, always_warm=True)
EMBED = WarmModel(name="nomic-embed-text:v1.5", keep_alive_s=600, always_warm=False)
MISTRAL = WarmModel(name="mistral:7b", keep_alive_s=600, always_warm=False)
QWEN = WarmModel(name="qwen2.5:0.5b", keep_alive_s=600, always_warm=True)


def node(
    node_id: str = "n1",
    loaded: dict[str, float | None] | None = None,
    installed: tuple[str, ...] = ("llama3.2:1b", "nomic-embed-text:v1.5", "mistral:7b", "qwen2.5:0.5b"),
    **kwargs: object,
) -> NodeView:
    loaded = loaded or {}
    models = {}
    for name in installed:
        caps = ("embedding",) if "embed" in name else ("completion", "tools")
        models[normalize_model_name(name)] = ModelView(
            name=name, loaded=name in loaded, expires_at_s=loaded.get(name), capabilities=caps
        )
    return NodeView(node_id=node_id, address=f"http://{node_id}", models=models, **kwargs)  # type: ignore[arg-type]


def actions(items: list[WarmItem]) -> list[tuple[str, str, WarmAction]]:
    return [(i.node_id, i.model, i.action) for i in items]


def test_cold_node_loads_every_configured_model_always_warm_first() -> None:
    items = plan_warm([node()], [EMBED, LLAMA], lambda _: 3, NOW, rewarm_lead_s=60)
    assert actions(items) == [
        ("n1", "llama3.2:1b", WarmAction.LOAD),
        ("n1", "nomic-embed-text:v1.5", WarmAction.LOAD),
    ]
    assert items[1].embedding and not items[0].embedding
    assert items[0].keep_alive_s == 600


def test_loaded_models_are_skipped() -> None:
    items = plan_warm(
        [node(loaded={"llama3.2:1b": NOW + 500})], [LLAMA, EMBED], lambda _: 3, NOW, rewarm_lead_s=60
    )
    assert actions(items) == [
        ("n1", "llama3.2:1b", WarmAction.SKIP),
        ("n1", "nomic-embed-text:v1.5", WarmAction.LOAD),
    ]
    assert items[0].reason == "already loaded"


def test_capacity_counts_models_loaded_by_others_and_never_evicts() -> None:
    # Two slots, one taken by a model that is not configured: only one configured model fits.
    view = node(loaded={"mistral:7b": NOW + 100})
    items = plan_warm([view], [LLAMA, EMBED, QWEN], lambda _: 2, NOW, rewarm_lead_s=60)
    assert actions(items) == [
        ("n1", "llama3.2:1b", WarmAction.LOAD),
        ("n1", "qwen2.5:0.5b", WarmAction.SKIP),
        ("n1", "nomic-embed-text:v1.5", WarmAction.SKIP),
    ]
    assert "no free model slot" in items[1].reason


def test_capacity_is_per_node() -> None:
    caps = {"small": 1, "big": 3}
    items = plan_warm([node("small"), node("big")], [LLAMA, EMBED], caps.__getitem__, NOW, rewarm_lead_s=60)
    assert actions(items) == [
        ("big", "llama3.2:1b", WarmAction.LOAD),
        ("big", "nomic-embed-text:v1.5", WarmAction.LOAD),
        ("small", "llama3.2:1b", WarmAction.LOAD),
        ("small", "nomic-embed-text:v1.5", WarmAction.SKIP),
    ]


def test_always_warm_model_is_refreshed_before_expiry_without_taking_a_slot() -> None:
    view = node(loaded={"llama3.2:1b": NOW + 30, "mistral:7b": NOW + 30, "qwen2.5:0.5b": NOW + 30})
    items = plan_warm([view], [LLAMA, MISTRAL], lambda _: 3, NOW, rewarm_lead_s=60)
    # llama is always-warm and ends within the lead: refresh; mistral is not always-warm: skip.
    assert actions(items) == [
        ("n1", "llama3.2:1b", WarmAction.REFRESH),
        ("n1", "mistral:7b", WarmAction.SKIP),
    ]


def test_ledger_of_own_warmups_prevents_repeated_refresh() -> None:
    view = node(loaded={"llama3.2:1b": NOW + 30})
    ledger = {("n1", "llama3.2:1b"): NOW + 600}
    items = plan_warm([view], [LLAMA], lambda _: 3, NOW, rewarm_lead_s=60, ledger=ledger)
    assert actions(items) == [("n1", "llama3.2:1b", WarmAction.SKIP)]


def test_nodes_not_serving_are_skipped_and_unknown_requested_nodes_fail() -> None:
    nodes = [
        node("down", state="UNHEALTHY", healthy=False),
        node("ejected", state="EJECTED", ejected=True),
        node("drained", state="DRAINING", draining=True),
        node("new", state="UNSPECIFIED", healthy=False),
        node("ok"),
    ]
    items = plan_warm(nodes, [LLAMA], lambda _: 3, NOW, rewarm_lead_s=60)
    by_node = {i.node_id: i for i in items}
    assert by_node["ok"].action is WarmAction.LOAD
    for name in ("down", "ejected", "drained", "new"):
        assert by_node[name].action is WarmAction.SKIP
        assert by_node[name].reason.startswith("node not serving")
    restricted = plan_warm(nodes, [LLAMA], lambda _: 3, NOW, rewarm_lead_s=60, only_nodes={"ok", "ghost"})
    assert actions(restricted) == [
        ("ghost", "llama3.2:1b", WarmAction.FAIL),
        ("ok", "llama3.2:1b", WarmAction.LOAD),
    ]


def test_model_not_installed_is_skipped_and_names_are_normalised() -> None:
    view = node(installed=("LLAMA3.2:1b",))
    bare = WarmModel(name="nomic-embed-text")
    items = plan_warm([view], [LLAMA, bare], lambda _: 3, NOW, rewarm_lead_s=60)
    assert actions(items) == [
        ("n1", "llama3.2:1b", WarmAction.LOAD),
        ("n1", "nomic-embed-text", WarmAction.SKIP),
    ]
    assert items[1].reason == "not installed on the node"
    assert normalize_model_name("registry.ollama.ai/library/Llama3.2") == "llama3.2:latest"


def test_next_rewarm_is_the_earliest_always_warm_expiry_minus_the_lead() -> None:
    nodes = [
        node("a", loaded={"llama3.2:1b": NOW + 300, "mistral:7b": NOW + 10}),
        node("b", loaded={"llama3.2:1b": NOW + 200}),
        node("c", loaded={"llama3.2:1b": math.inf}),
        node("d", loaded={"llama3.2:1b": NOW + 5}, state="UNHEALTHY", healthy=False),
    ]
    due = next_rewarm_at(nodes, [LLAMA, MISTRAL], rewarm_lead_s=60)
    assert due == (NOW + 140, frozenset({"b"}))
    assert next_rewarm_at([node("c", loaded={"llama3.2:1b": math.inf})], [LLAMA], rewarm_lead_s=60) is None


def test_join_and_come_back_are_detected_but_not_the_first_view() -> None:
    healthy = node("a", loaded={"llama3.2:1b": NOW + 300})
    down = node("a", state="UNHEALTHY", healthy=False)
    assert nodes_needing_warmup(None, {"a": healthy}, [LLAMA]) == frozenset()
    assert nodes_needing_warmup({}, {"a": healthy}, [LLAMA]) == {"a"}
    assert nodes_needing_warmup({"a": down}, {"a": healthy}, [LLAMA]) == {"a"}
    assert nodes_needing_warmup({"a": healthy}, {"a": down}, [LLAMA]) == frozenset()
    assert nodes_needing_warmup({"a": healthy}, {"a": healthy}, [LLAMA]) == frozenset()
    ejected = node("a", state="EJECTED", ejected=True)
    assert nodes_needing_warmup({"a": ejected}, {"a": healthy}, [LLAMA]) == {"a"}


def test_a_healthy_node_that_lost_an_always_warm_model_is_rewarmed() -> None:
    before = node("a", loaded={"llama3.2:1b": NOW + 300, "mistral:7b": NOW + 300})
    lost_llama = node("a", loaded={"mistral:7b": NOW + 300})
    lost_mistral = node("a", loaded={"llama3.2:1b": NOW + 300})
    assert nodes_needing_warmup({"a": before}, {"a": lost_llama}, [LLAMA, MISTRAL]) == {"a"}
    # mistral is not always-warm: losing it (Ollama's own eviction) triggers nothing.
    assert nodes_needing_warmup({"a": before}, {"a": lost_mistral}, [LLAMA, MISTRAL]) == frozenset()
