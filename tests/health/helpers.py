"""Shared helpers for the health tests: a manual clock, config and outcome builders."""

from __future__ import annotations

from typing import Any

from services.health.config import HealthConfig, NodeSpec, OutlierConfig, ScoreConfig
from services.health.fleet import Fleet
from services.health.registry import InstalledModel, LoadedModel, ProbeResult
from services.health.stats import Outcome, OutcomeKind

MODEL = "llama3.2:1b"
MODEL_SIZE = 1_321_098_329


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(nodes: int = 4, **overrides: Any) -> HealthConfig:
    """A config with `nodes` nodes on unused ports (nothing probes them in domain tests)."""
    outlier = overrides.pop("outlier", {})
    score = overrides.pop("score", {})
    return HealthConfig(
        nodes=[NodeSpec(id=f"n{i}", address=f"http://127.0.0.1:{20000 + i}") for i in range(1, nodes + 1)],
        outlier=OutlierConfig(**outlier),
        score=ScoreConfig(**score),
        **overrides,
    )


def make_fleet(cfg: HealthConfig, clock: ManualClock) -> Fleet:
    """A fleet with the config's nodes registered and probed healthy once, with MODEL installed."""
    fleet = Fleet(cfg, clock)
    for spec in cfg.nodes:
        fleet.add_node(spec.id, spec.address, spec.labels)
        fleet.record_probe(spec.id, ok_probe())
    return fleet


def ok_probe(loaded: bool = True) -> ProbeResult:
    """A successful probe that sees MODEL installed (and loaded when asked)."""
    return ProbeResult(
        ok=True,
        latency_ms=1.0,
        version="0.12.6",
        installed=(InstalledModel(MODEL, MODEL_SIZE, ("completion",)),),
        loaded=(LoadedModel(MODEL, MODEL_SIZE, 0.0),) if loaded else (),
    )


def failed_probe(error: str = "connection refused") -> ProbeResult:
    """A failed probe."""
    return ProbeResult(ok=False, latency_ms=0.5, error=error)


def outcome(
    node_id: str, kind: OutcomeKind = OutcomeKind.SUCCESS, latency_ms: float = 500.0, **kw: Any
) -> Outcome:
    """An outcome for MODEL."""
    return Outcome(node_id=node_id, model=MODEL, kind=kind, latency_ms=latency_ms, **kw)


def model_view(fleet: Fleet, node_id: str) -> Any:
    """The node's view of MODEL."""
    (view,) = [m for m in fleet.view(node_id).models if m.model == MODEL]
    return view
