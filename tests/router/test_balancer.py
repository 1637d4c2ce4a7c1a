"""Unit tests of the balancers (pure Python, no I/O)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.router.balancer import (
    Candidate,
    LeastInflight,
    P2cEct,
    PickContext,
    RandomPick,
    RoundRobin,
    bounded_load_pick,
    expected_completion_ms,
    make_balancer,
    rendezvous_weight,
)
from services.router.config import BalancerConfig

CTX = PickContext(model="llama3.2:1b")


def nodes(n: int, **kw: object) -> list[Candidate]:
    return [Candidate(node_id=f"n{i}", address=f"http://n{i}", **kw) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["round_robin", "random", "least_inflight", "p2c_ect"])
def test_every_strategy_handles_empty_and_single(strategy: str) -> None:
    balancer = make_balancer(strategy, seed=1)  # type: ignore[arg-type]
    assert balancer.name == strategy
    assert balancer.pick(CTX, []) is None
    only = nodes(1)
    assert balancer.pick(CTX, only) is only[0]


def test_round_robin_cycles_in_node_order() -> None:
    rr = RoundRobin()
    cands = list(reversed(nodes(3)))
    assert [rr.pick(CTX, cands).node_id for _ in range(6)] == ["n0", "n1", "n2"] * 2  # type: ignore[union-attr]


def test_random_spreads() -> None:
    rnd = RandomPick(random.Random(3))
    picks = Counter(rnd.pick(CTX, nodes(4)).node_id for _ in range(400))  # type: ignore[union-attr]
    assert set(picks) == {"n0", "n1", "n2", "n3"}


def test_least_inflight_picks_the_least_loaded() -> None:
    cands = nodes(3)
    cands[0].local_inflight = 3
    cands[1].reported_inflight = 1
    cands[2].local_inflight = 2
    assert LeastInflight(random.Random(0)).pick(CTX, cands).node_id == "n1"  # type: ignore[union-attr]


def test_load_takes_the_larger_count_not_the_sum() -> None:
    c = Candidate("n", "a", local_inflight=2, reported_inflight=3)
    assert c.load == 3


def test_ect_penalises_cold_models_errors_and_queue() -> None:
    cfg = BalancerConfig(not_loaded_penalty_ms=5000, error_penalty_ms=10000, busy_penalty_ms=2000)
    warm = Candidate("a", "a", service_ms=100)
    assert expected_completion_ms(warm, cfg) == 100
    assert expected_completion_ms(Candidate("b", "b", service_ms=100, local_inflight=3), cfg) == 400
    assert expected_completion_ms(Candidate("c", "c", service_ms=100, loaded=False), cfg) == 5100
    assert expected_completion_ms(Candidate("d", "d", service_ms=100, error_rate=0.5), cfg) == 5100
    assert expected_completion_ms(Candidate("e", "e", service_ms=100, busy_rate=0.5), cfg) == 1100


def test_p2c_never_picks_the_worst_of_two() -> None:
    cands = nodes(2)
    cands[0].local_inflight = 10
    p2c = P2cEct(rng=random.Random(0))
    assert all(p2c.pick(CTX, cands).node_id == "n1" for _ in range(50))  # type: ignore[union-attr]


def test_p2c_prefers_loaded_nodes_until_they_queue_past_a_cold_load() -> None:
    cfg = BalancerConfig(not_loaded_penalty_ms=1000)
    cands = nodes(4, service_ms=100.0)
    for c in cands[1:]:
        c.loaded = False
    p2c = P2cEct(cfg, random.Random(0))
    assert {p2c.pick(CTX, cands).node_id for _ in range(50)} == {"n0"}  # type: ignore[union-attr]
    cands[0].local_inflight = 20  # 2,100 ms queued > 1,100 ms cold load elsewhere
    assert "n0" not in {p2c.pick(CTX, cands).node_id for _ in range(50)}  # type: ignore[union-attr]


def test_p2c_spreads_equal_nodes() -> None:
    p2c = P2cEct(rng=random.Random(1))
    picks = Counter(p2c.pick(CTX, nodes(4)).node_id for _ in range(400))  # type: ignore[union-attr]
    assert len(picks) == 4


def test_affinity_is_sticky_and_spreads_keys() -> None:
    p2c = P2cEct(rng=random.Random(0))
    cands = nodes(4)
    homes = {}
    for key in (f"session-{i}" for i in range(40)):
        ctx = PickContext(model="m", affinity_key=key)
        picks = {p2c.pick(ctx, cands).node_id for _ in range(5)}  # type: ignore[union-attr]
        assert len(picks) == 1
        homes[key] = picks.pop()
    assert len(set(homes.values())) == 4


def test_bounded_load_moves_a_key_off_an_overloaded_home() -> None:
    cands = nodes(4)
    home = bounded_load_pick("k", cands, 1.25)
    home.local_inflight = 5
    moved = bounded_load_pick("k", cands, 1.25)
    assert moved.node_id != home.node_id
    # ceil(1.25 * 6 / 4) = 2: the home is over the bound until its load falls back.
    home.local_inflight = 0
    assert bounded_load_pick("k", cands, 1.25).node_id == home.node_id


def _rendezvous_order(key: str, cands: list[Candidate]) -> list[str]:
    return sorted((c.node_id for c in cands), key=lambda n: rendezvous_weight(key, n), reverse=True)


# NOTE: keys whose homes cover every node, so that a picker preferring some fixed node cannot pass.
KEYS = [f"session-{i}" for i in range(12)]


def test_bounded_load_keeps_the_home_while_within_the_bound() -> None:
    homes = set()
    for key in KEYS:
        cands = nodes(4)
        home = _rendezvous_order(key, cands)[0]
        homes.add(home)
        for c in cands:
            c.local_inflight = 2
        # Total 9 with the new request: bound ceil(1.25 * 9 / 4) = 3; the home's 2 + 1 fits.
        assert bounded_load_pick(key, cands, 1.25).node_id == home, key
        next(c for c in cands if c.node_id == home).local_inflight = 3
        # Total 10: bound ceil(1.25 * 10 / 4) = 4; the home's 3 + 1 is exactly at it and still fits.
        assert bounded_load_pick(key, cands, 1.25).node_id == home, key
    assert homes == {"n0", "n1", "n2", "n3"}


def test_bounded_load_walks_to_the_next_node_of_the_key_past_the_bound() -> None:
    for key in KEYS:
        cands = nodes(4)
        home, runner_up = _rendezvous_order(key, cands)[:2]
        for c in cands:
            c.local_inflight = 2
        next(c for c in cands if c.node_id == home).reported_inflight = 4
        # Total 11: bound ceil(1.25 * 11 / 4) = 4; the home's 4 + 1 is past it, so the key's second
        # node in rendezvous order takes the request (not any node: the next one of this key).
        assert bounded_load_pick(key, cands, 1.25).node_id == runner_up, key
