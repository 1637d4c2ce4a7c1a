"""The score model: formula, priors, penalties, and a fast-failing node scoring worse than a slow one."""

from __future__ import annotations

import pytest

from services.health.config import ScoreConfig
from services.health.scoring import ModelInputs, NodeStateKind, expected_ms
from services.health.stats import OutcomeKind
from tests.health.helpers import (
    MODEL_SIZE,
    ManualClock,
    make_config,
    make_fleet,
    model_view,
    ok_probe,
    outcome,
)


def test_formula_terms() -> None:
    cfg = ScoreConfig(
        prior_latency_ms=1000,
        load_base_ms=300,
        load_ms_per_gb=2000,
        error_penalty_ms=60_000,
        busy_penalty_ms=10_000,
    )
    base = ModelInputs(
        loaded=True, size_bytes=2_000_000_000, queue=0, ewma_latency_ms=None, error_rate=0, busy_rate=0
    )
    assert expected_ms(base, cfg) == 1000  # prior, no queue
    assert expected_ms(ModelInputs(True, 2_000_000_000, 3, 400.0, 0, 0), cfg) == 1600  # (3 + 1) * 400
    assert expected_ms(ModelInputs(False, 2_000_000_000, 0, 400.0, 0, 0), cfg) == 400 + 300 + 4000
    assert expected_ms(ModelInputs(True, 0, 0, 400.0, 0.5, 0.1), cfg) == 400 + 30_000 + 1000


def test_unloaded_model_pays_the_load_penalty() -> None:
    clock = ManualClock()
    cfg = make_config(2)
    fleet = make_fleet(cfg, clock)
    fleet.record_probe("n2", ok_probe(loaded=False))
    loaded, cold = model_view(fleet, "n1"), model_view(fleet, "n2")
    assert loaded.loaded and not cold.loaded
    assert cold.expected_ms - loaded.expected_ms == pytest.approx(
        cfg.score.load_base_ms + cfg.score.load_ms_per_gb * MODEL_SIZE / 1e9
    )


def test_fast_failing_node_scores_worse_than_slow_healthy_node() -> None:
    clock = ManualClock()
    # NOTE: no ejection here, to compare scores alone.
    fleet = make_fleet(
        make_config(2, outlier={"consecutive_errors": 1000, "failure_percentage_min_requests": 1000}), clock
    )
    for _ in range(20):
        fleet.record_outcome(outcome("n1", OutcomeKind.SERVER, latency_ms=3.0), "r")
        fleet.record_outcome(outcome("n2", OutcomeKind.SUCCESS, latency_ms=20_000.0), "r")
    fast_fail, slow = model_view(fleet, "n1"), model_view(fleet, "n2")
    assert fast_fail.error_rate == 1.0
    assert fast_fail.ewma_latency_ms == fleet.cfg.score.prior_latency_ms  # fast failures are not "fast"
    assert fast_fail.expected_ms > slow.expected_ms
    assert fleet.view("n1").state is NodeStateKind.DEGRADED
    assert fleet.view("n2").state is NodeStateKind.HEALTHY


def test_half_failing_node_is_degraded_and_scored_down() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(2), clock)
    for i in range(20):
        kind = OutcomeKind.SERVER if i % 2 else OutcomeKind.SUCCESS
        fleet.record_outcome(outcome("n1", kind, latency_ms=500.0), "r")
        fleet.record_outcome(outcome("n2", OutcomeKind.SUCCESS, latency_ms=500.0), "r")
    assert fleet.view("n1").state is NodeStateKind.DEGRADED
    assert model_view(fleet, "n1").error_rate == pytest.approx(0.5)
    assert model_view(fleet, "n1").expected_ms > 10 * model_view(fleet, "n2").expected_ms


def test_ewma_and_inflight_feed_the_score() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(1, score={"ewma_alpha": 0.5}), clock)
    fleet.record_outcome(outcome("n1", latency_ms=1000.0, ttft_ms=100.0, tokens_per_s=50.0, inflight=0), "r1")
    fleet.record_outcome(outcome("n1", latency_ms=2000.0, ttft_ms=300.0, tokens_per_s=30.0, inflight=2), "r1")
    fleet.record_outcome(outcome("n1", latency_ms=1500.0, inflight=1), "r2")
    view = model_view(fleet, "n1")
    # 1000 -> 1500 -> 1500
    assert view.ewma_latency_ms == 1500.0
    assert view.ewma_ttft_ms == 200.0
    assert view.ewma_tokens_per_s == 40.0
    assert fleet.view("n1").inflight == 3  # r1 says 2, r2 says 1
    assert view.expected_ms == (3 + 1) * 1500.0
    fleet.forget_reporter("r1")
    assert fleet.view("n1").inflight == 1
    clock.advance(fleet.cfg.score.inflight_ttl_s + 1)
    assert fleet.view("n1").inflight == 0


def test_client_errors_and_cancels_do_not_count_against_the_node() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(1), clock)
    for _ in range(10):
        fleet.record_outcome(outcome("n1", OutcomeKind.IGNORED, latency_ms=1.0), "r")
    assert fleet.view("n1").error_rate == 0
    assert fleet.view("n1").state is NodeStateKind.HEALTHY


def test_error_window_ages_out() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(2, outlier={"consecutive_errors": 100}, score={"window_s": 10}), clock)
    for _ in range(4):
        fleet.record_outcome(outcome("n1", OutcomeKind.SERVER), "r")
        fleet.record_outcome(outcome("n1", OutcomeKind.SUCCESS), "r")
    assert fleet.view("n1").error_rate == 0.5
    clock.advance(11)
    assert fleet.view("n1").error_rate == 0
