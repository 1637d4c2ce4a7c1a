"""Unit tests of the benchmark summaries that scenario tables rest on (bench/harness/stats.py)."""

from __future__ import annotations

from bench.harness import stats, workload


def test_share_timeline_counts_the_sends_in_each_window() -> None:
    # Ten requests a second; the node gets every other one until 5 s, then none, then all from 8 s.
    sends = [(i / 10, (i / 10 < 5 and i % 2 == 0) or i / 10 >= 8) for i in range(100)]
    timeline = dict(stats.share_timeline(sends, 10.0, window_s=1.0, step_s=0.5))
    assert timeline[1.0] == 0.5
    assert timeline[6.0] == 0.0
    assert timeline[5.5] == 0.2  # 4.5-5.4 s: 4.6 and 4.8 went to the node, none after 5 s
    assert timeline[9.0] == 1.0
    assert stats.share_timeline([], 3.0, window_s=1.0)[0] == (1.0, None)


def test_time_to_share_is_measured_from_the_change_to_the_first_window_past_the_level() -> None:
    sends = [(i / 10, (i / 10 < 5 and i % 2 == 0) or i / 10 >= 8) for i in range(100)]
    timeline = stats.share_timeline(sends, 10.0, window_s=1.0, step_s=0.5)
    assert stats.time_to_share(timeline, 5.0, below=True, level=0.25) == 0.5
    assert stats.time_to_share(timeline, 5.0, below=True, level=0.0) == 1.0
    assert stats.time_to_share(timeline, 8.0, below=False, level=0.25) == 0.5
    assert stats.time_to_share(timeline, 0.0, below=False, level=1.5) is None


def test_a_rate_profile_shapes_the_arrivals_and_keeps_them_reproducible() -> None:
    profile = [(10.0, 3.0), (20.0, 0.0), (30.0, 1.0)]
    arrivals = list(workload.poisson_arrivals(20.0, 38.0, 2.0, seed=5, profile=profile))
    assert arrivals == list(workload.poisson_arrivals(20.0, 38.0, 2.0, seed=5, profile=profile))

    def count(lo: float, hi: float) -> int:
        return sum(lo <= a.at_s < hi for a in arrivals)

    # Poisson counts: 200 expected in 0-10 s, 600 in 10-20 s, none in the off period, 200 after.
    assert 150 < count(0, 10) < 250
    assert 500 < count(10, 20) < 700
    assert count(20, 30) == 0
    assert 150 < count(30, 40) < 250
    assert all(a.phase == ("warmup" if a.at_s < 2.0 else "measure") for a in arrivals)
    assert max(a.at_s for a in arrivals) < 40.0
    # A profile of one step at 1 gives the plain process's statistics (not its exact draws).
    flat = list(workload.poisson_arrivals(20.0, 98.0, 2.0, seed=5, profile=[(0.0, 1.0)]))
    assert 1800 < len(flat) < 2200


def test_a_system_that_failed_many_requests_is_no_latency_yardstick() -> None:
    from bench.harness import routing

    systems = {
        "corral/ect": {"p99_ms": 900.0, "p50_ms": 300.0, "requests": 1000, "errors": 0},
        "litellm/fails-fast": {"p99_ms": 700.0, "requests": 1000, "errors": 200},
        "litellm/slow": {"p99_ms": 3000.0, "requests": 1000, "errors": 5},
    }
    assert routing.best_p99(systems, "litellm") == ("litellm/slow", 3000.0)
    found = {t.name: t for t in routing.targets("s", systems)}
    against = found["s: Corral default p99 / LiteLLM's best p99"]
    assert against.value == 0.3 and "litellm/slow" in against.detail and "left out" in against.detail
