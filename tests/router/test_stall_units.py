"""Stall bounds from a node's learned pace: pure functions over recorded waits, no processes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.common.config import load_config
from services.router.config import RouterConfig, StallConfig
from services.router.learning import (
    Spread,
    StallLearner,
    StallStats,
    first_chunk_bound,
    gap_bound,
    is_stall,
)

CFG = StallConfig()
CAP_S = 10.0


def learned(
    gaps: Sequence[float] = (), ttfts: Sequence[float] = (), loads: Sequence[float] = ()
) -> StallStats:
    """The stats a learner holds after these waits (seconds) of one node and model."""
    learner = StallLearner(CFG)
    stats = learner.stats_of("node-1", "m")
    for gap in gaps:
        learner.gap(stats, gap)
    for ttft in ttfts:
        learner.first_chunk(stats, ttft)
    for load in loads:
        learner.loaded("node-1", "m", load)
    return stats


def test_spread_starts_like_tcp_and_follows_the_mean_and_deviation() -> None:
    spread = Spread()
    spread.add(0.2, 0.5)
    assert (spread.mean, spread.dev) == (0.2, 0.1) and spread.high == pytest.approx(0.4)
    for _ in range(60):
        spread.add(0.2, 0.5)
    # a steady wait: the deviation fades, the high mark comes down to the wait itself
    assert spread.mean == pytest.approx(0.2) and spread.dev < 1e-9
    spread.add(1.0, 0.5)
    assert spread.mean == pytest.approx(0.6) and spread.dev == pytest.approx(0.4)


def test_unknown_node_or_model_keeps_the_fixed_timeouts() -> None:
    for stats in (None, StallStats(), learned(gaps=[0.02] * (CFG.min_gap_samples - 1), ttfts=[0.1] * 4)):
        first = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=CAP_S)
        gap = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
        assert (first.seconds, first.learned) == (CAP_S, False)
        assert (gap.seconds, gap.learned) == (CAP_S, False)
        # the watch never declares a stall on a fixed bound: the transport's read timeout does
        assert not is_stall(gap, 60.0, 60.0) and not is_stall(first, 60.0, 60.0)
    assert StallLearner(CFG).bounds("node-9", "m", loaded=True, cap_s=CAP_S)[1].learned is False


def test_fast_steady_node_gets_the_floor_and_a_frozen_one_is_stalled() -> None:
    stats = learned(gaps=[0.02, 0.025, 0.018, 0.022] * 10)
    bound = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
    # 4 x (about 20 ms + 2 x a few ms) is far below the floor
    assert bound.learned and bound.seconds == CFG.gap_floor_s
    assert "floor 2 s" in bound.why and "gap 0.02" in bound.why
    assert not is_stall(bound, 0.5, 0.5)
    assert is_stall(bound, 2.5, 2.5)


def test_slow_but_steady_node_is_not_stalled() -> None:
    # a CPU node that sends a token every 0.8 s, every time
    stats = learned(gaps=[0.8, 0.82, 0.79, 0.81] * 10)
    bound = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
    assert bound.learned and 3.2 <= bound.seconds < 4.0
    # a wait of 2.5 s (a stall for the fast node above) is within its pace, and so is 3 s
    assert not is_stall(bound, 2.5, 2.5) and not is_stall(bound, 3.0, 3.0)
    assert is_stall(bound, 4.0, 4.0)


def test_a_node_whose_gaps_jump_is_stalled_below_the_fixed_timeout() -> None:
    before = gap_bound(learned(gaps=[0.05] * 40), cfg=CFG, cap_s=CAP_S)
    assert is_stall(before, 2.1, 2.1) and before.seconds < CAP_S / 4


def test_a_node_sending_on_other_streams_is_alive() -> None:
    bound = gap_bound(learned(gaps=[0.05] * 40), cfg=CFG, cap_s=CAP_S)
    # this attempt waited long, but the node sent a chunk on another stream 0.1 s ago
    assert not is_stall(bound, 5.0, 0.1)


def test_bound_never_exceeds_the_fixed_timeout() -> None:
    # a node whose gaps vary widely: 4 x its high gap is beyond the fixed budget
    stats = learned(gaps=[0.1, 3.0] * 20, ttfts=[1.0, 4.0] * 5)
    gap = gap_bound(stats, cfg=CFG, cap_s=CAP_S)
    first = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=CAP_S)
    assert (gap.seconds, gap.learned) == (CAP_S, False) and "fixed 10 s" in gap.why
    assert (first.seconds, first.learned) == (CAP_S, False)


def test_first_chunk_bound_from_learned_ttft_and_floor() -> None:
    quick = first_chunk_bound(learned(ttfts=[0.1] * 10), loaded=True, cfg=CFG, cap_s=CAP_S)
    assert quick.learned and quick.seconds == CFG.ttft_floor_s
    slow = learned(ttfts=[1.0, 1.2, 0.9, 1.1, 1.0, 1.0])
    bound = first_chunk_bound(slow, loaded=True, cfg=CFG, cap_s=CAP_S)
    expected = CFG.factor * slow.ttft.high
    assert bound.learned and bound.seconds == pytest.approx(expected) and bound.seconds > CFG.ttft_floor_s


def test_cold_model_adds_the_learned_load_or_keeps_the_fixed_budget() -> None:
    cold_cap = CAP_S + 60.0
    unknown_load = first_chunk_bound(learned(ttfts=[0.1] * 10), loaded=False, cfg=CFG, cap_s=cold_cap)
    assert (unknown_load.seconds, unknown_load.learned) == (cold_cap, False)
    assert "load time not learned" in unknown_load.why
    stats = learned(ttfts=[0.1] * 10, loads=[4.0])
    cold = first_chunk_bound(stats, loaded=False, cfg=CFG, cap_s=cold_cap)
    assert cold.learned and cold.seconds == pytest.approx(CFG.ttft_floor_s + CFG.load_factor * 4.0)
    assert "load 4.000 s" in cold.why
    # a wait that would be a stall with the model loaded is not one while it loads
    warm = first_chunk_bound(stats, loaded=True, cfg=CFG, cap_s=CAP_S)
    assert is_stall(warm, 5.0, 5.0) and not is_stall(cold, 5.0, 5.0)


def test_counts_stalls_per_node_and_phase() -> None:
    learner = StallLearner(CFG)
    learner.stalled("node-1", "between_chunks")
    learner.stalled("node-1", "between_chunks")
    learner.stalled("node-2", "first_chunk")
    assert learner.stalls == {("node-1", "between_chunks"): 2, ("node-2", "first_chunk"): 1}


def test_configuration_keys_and_turning_it_off() -> None:
    env = {"CORRAL_ROUTER__STALL__ENABLED": "false", "CORRAL_ROUTER__STALL__GAP_FLOOR_S": "0.5"}
    cfg = load_config(env=env).router
    assert cfg.stall.enabled is False and cfg.stall.gap_floor_s == 0.5
    assert RouterConfig().stall == StallConfig() and StallConfig().factor == 4.0
    with pytest.raises(ValueError, match="factor"):
        StallConfig(factor=0.5)
