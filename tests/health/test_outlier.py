"""Outlier ejection: consecutive errors, busy bursts, failure share, growing time, the share cap, returns."""

from __future__ import annotations

from services.health.config import OutlierConfig
from services.health.outlier import EjectionReason, EjectionState, OutlierDetector
from services.health.scoring import NodeStateKind
from services.health.stats import OutcomeKind
from tests.health.helpers import ManualClock, failed_probe, make_config, make_fleet, ok_probe, outcome


def test_envoy_like_defaults() -> None:
    cfg = OutlierConfig()
    assert (cfg.consecutive_errors, cfg.base_ejection_time_s, cfg.max_ejection_time_s) == (5, 30.0, 300.0)
    assert cfg.failure_percentage_threshold == 0.85


def test_consecutive_errors_eject_and_a_success_resets_the_run() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(4), clock)
    for _ in range(4):
        fleet.record_outcome(outcome("n1", OutcomeKind.CONNECTION, latency_ms=1.0), "r")
    fleet.record_outcome(outcome("n1"), "r")
    for _ in range(4):
        fleet.record_outcome(outcome("n1", OutcomeKind.TIMEOUT, latency_ms=1.0), "r")
    assert not fleet.view("n1").ejected
    fleet.record_outcome(outcome("n1", OutcomeKind.SERVER, latency_ms=1.0), "r")
    view = fleet.view("n1")
    assert view.ejected and view.state is NodeStateKind.EJECTED
    assert view.ejected_until == clock.now + 30.0
    assert view.ejection_count == 1


def test_busy_burst_ejects() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(4, outlier={"consecutive_busy": 3}), clock)
    for _ in range(3):
        fleet.record_outcome(outcome("n2", OutcomeKind.BUSY, latency_ms=2.0), "r")
    assert fleet.view("n2").ejected
    assert "busy burst" in fleet.view("n2").last_error


def test_failure_percentage_ejects() -> None:
    detector = OutlierDetector(OutlierConfig(failure_percentage_min_requests=10))
    assert detector.reason_to_eject(1, 0, 10, 0.9) is EjectionReason.FAILURE_PERCENTAGE
    assert detector.reason_to_eject(1, 0, 9, 0.9) is None
    assert detector.reason_to_eject(1, 0, 10, 0.8) is None


def test_ejection_time_grows_caps_and_decays() -> None:
    detector = OutlierDetector(OutlierConfig(base_ejection_time_s=10, max_ejection_time_s=25))
    state = EjectionState()
    lengths = []
    now = 0.0
    for _ in range(4):
        detector.eject(state, EjectionReason.CONSECUTIVE_ERRORS, now)
        lengths.append(state.ejected_until - now)
        now = state.ejected_until
        detector.restore(state, now)
    assert lengths == [10, 20, 25, 25]
    # A long stretch in service brings the multiplier back down.
    now += 1000
    detector.eject(state, EjectionReason.CONSECUTIVE_ERRORS, now)
    assert state.ejected_until - now == 10
    assert state.ejection_count == 5


def test_share_cap_allows_at_least_one() -> None:
    detector = OutlierDetector(OutlierConfig(max_ejection_share=0.1))
    assert detector.may_eject(0, 4)
    assert not detector.may_eject(1, 4)
    assert OutlierDetector(OutlierConfig(max_ejection_share=0.5)).may_eject(1, 4)
    assert not OutlierDetector(OutlierConfig(max_ejection_share=0.5)).may_eject(2, 4)


def test_fleet_never_ejects_more_than_the_share() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(4, outlier={"max_ejection_share": 0.5}), clock)
    for node_id in ("n1", "n2", "n3", "n4"):
        for _ in range(5):
            fleet.record_outcome(outcome(node_id, OutcomeKind.SERVER, latency_ms=1.0), "r")
    assert [v.node_id for v in fleet.views() if v.ejected] == ["n1", "n2"]
    # The others still score down through their error rate.
    assert fleet.view("n3").state is NodeStateKind.DEGRADED


def test_node_returns_only_after_the_time_and_a_successful_probe() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(4), clock)
    for _ in range(5):
        fleet.record_outcome(outcome("n1", OutcomeKind.SERVER, latency_ms=1.0), "r")
    fleet.record_probe("n1", ok_probe())
    assert fleet.view("n1").ejected  # too early
    clock.advance(31)
    fleet.record_probe("n1", failed_probe())
    assert fleet.view("n1").ejected  # time passed but the probe failed
    fleet.record_probe("n1", ok_probe())
    view = fleet.view("n1")
    assert not view.ejected and view.state is NodeStateKind.HEALTHY
    assert view.error_rate == 0  # back on probation with a clean window
    # Failing again ejects for twice as long.
    for _ in range(5):
        fleet.record_outcome(outcome("n1", OutcomeKind.SERVER, latency_ms=1.0), "r")
    assert fleet.view("n1").ejected_until == clock.now + 60


def test_probe_failures_mark_unhealthy_and_recovery_clears_old_errors() -> None:
    clock = ManualClock()
    fleet = make_fleet(make_config(4, unhealthy_after_probe_failures=2), clock)
    fleet.record_outcome(outcome("n3", OutcomeKind.CONNECTION, latency_ms=1.0), "r")
    fleet.record_probe("n3", failed_probe())
    assert fleet.view("n3").healthy  # one failure is tolerated with a threshold of 2
    fleet.record_probe("n3", failed_probe())
    view = fleet.view("n3")
    assert not view.healthy and view.state is NodeStateKind.UNHEALTHY
    assert view.consecutive_probe_failures == 2 and view.last_error == "connection refused"
    fleet.record_probe("n3", ok_probe())
    view = fleet.view("n3")
    assert view.healthy and view.error_rate == 0 and view.state is NodeStateKind.HEALTHY
