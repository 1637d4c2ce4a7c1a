"""Fleet change detection and versions; admin operations; the probe-driven model lists."""

from __future__ import annotations

import pytest

from services.health.fleet import Fleet
from services.health.registry import InstalledModel, LoadedModel, ProbeResult, UnknownNode
from services.health.scoring import NodeStateKind
from services.health.stats import Outcome, OutcomeKind
from tests.health.helpers import MODEL, ManualClock, make_config, make_fleet, ok_probe, outcome


def test_versions_grow_only_on_material_changes() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(2), clock)
    first = fleet.collect_changes()
    assert first is not None and first.version == 1 and len(first.nodes) == 2
    assert fleet.collect_changes() is None
    fleet.record_probe("n1", ok_probe())  # same findings: only timestamps move
    assert fleet.collect_changes() is None
    fleet.set_draining("n1", True)
    change = fleet.collect_changes()
    assert change is not None and change.version == 2
    assert [v.node_id for v in change.nodes] == ["n1"] and change.nodes[0].state is NodeStateKind.DRAINING
    fleet.remove_node("n2")
    change = fleet.collect_changes()
    assert change is not None and change.removed_node_ids == ("n2",) and change.nodes == ()
    assert fleet.snapshot()[0] == 3


def test_small_score_moves_are_not_news_but_big_ones_are() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(1, score={"ewma_alpha": 1.0}), clock)
    fleet.record_outcome(outcome("n1", latency_ms=1000.0), "r")
    fleet.collect_changes()
    fleet.record_outcome(outcome("n1", latency_ms=1050.0), "r")
    assert fleet.collect_changes() is None
    fleet.record_outcome(outcome("n1", latency_ms=3000.0), "r")
    assert fleet.collect_changes() is not None


def test_unknown_nodes() -> None:
    fleet = make_fleet(make_config(1), ManualClock())
    assert not fleet.record_outcome(outcome("ghost"), "r")
    fleet.record_probe("ghost", ok_probe())  # a node removed mid-probe is ignored
    with pytest.raises(UnknownNode):
        fleet.set_draining("ghost", True)
    with pytest.raises(UnknownNode):
        fleet.remove_node("ghost")


def test_models_come_from_tags_and_ps() -> None:
    clock = ManualClock()
    cfg = make_config(1, tags_every_n_probes=3)
    fleet = Fleet(cfg, clock)
    fleet.add_node("n1", "http://127.0.0.1:1", {})
    assert fleet.wants_tags("n1")  # never read yet
    assert fleet.view("n1").state is NodeStateKind.UNPROBED
    fleet.record_probe(
        "n1",
        ProbeResult(
            ok=True,
            latency_ms=1,
            version="0.12.6",
            installed=(
                InstalledModel(MODEL, 10, ("completion",)),
                InstalledModel("nomic-embed-text:v1.5", 5),
            ),
            loaded=(LoadedModel("nomic-embed-text:v1.5", 5, clock.now + 300),),
        ),
    )
    view = fleet.view("n1")
    assert [(m.model, m.installed, m.loaded) for m in view.models] == [
        (MODEL, True, False),
        ("nomic-embed-text:v1.5", True, True),
    ]
    assert view.models[1].expires_at == clock.now + 300
    assert not fleet.wants_tags("n1")
    fleet.record_probe(
        "n1", ProbeResult(ok=True, latency_ms=1, loaded=(LoadedModel("qwen2.5:0.5b", 3, 0.0),))
    )
    assert fleet.wants_tags("n1")  # a loaded model that tags did not list: read tags again


def test_outcome_for_a_model_without_tags_is_kept_for_later() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(1), clock)
    fleet.record_outcome(
        Outcome(node_id="n1", model="qwen2.5:0.5b", kind=OutcomeKind.SUCCESS, latency_ms=50.0), "r"
    )
    assert "qwen2.5:0.5b" not in [m.model for m in fleet.view("n1").models]
    fleet.record_probe(
        "n1", ProbeResult(ok=True, latency_ms=1, installed=(InstalledModel("qwen2.5:0.5b", 3),), loaded=())
    )
    (model,) = fleet.view("n1").models
    assert model.ewma_latency_ms == 50.0
