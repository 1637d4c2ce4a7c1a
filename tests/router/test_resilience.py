"""Unit tests of the retry budget, TTFT timeout, concurrency limit and background gate."""

from __future__ import annotations

import asyncio

import pytest

from services.common.errors import ResourceExhausted, Unavailable
from services.router.config import RetryBudgetConfig
from services.router.resilience import BackgroundGate, ConcurrencyLimit, RetryBudget, TtftTimeout


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_the_floor_when_idle() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(ttl_s=10, min_retries_per_s=1, percent_can_retry=0.2), clock)
    assert sum(budget.try_withdraw() for _ in range(20)) == 10
    assert budget.retries_refused == 10


def test_budget_grows_with_traffic() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(ttl_s=10, min_retries_per_s=0, percent_can_retry=0.2), clock)
    for _ in range(100):
        budget.deposit()
    assert sum(budget.try_withdraw() for _ in range(50)) == 20


def test_budget_tokens_expire_after_ttl() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(ttl_s=10, min_retries_per_s=0, percent_can_retry=0.5), clock)
    for _ in range(10):
        budget.deposit()
    clock.now += 11
    assert not budget.try_withdraw()


def test_budget_spent_retries_come_back_after_ttl() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(ttl_s=10, min_retries_per_s=0.5, percent_can_retry=0.2), clock)
    assert sum(budget.try_withdraw() for _ in range(10)) == 5
    clock.now += 10.5
    assert budget.try_withdraw()


def test_budget_outage_caps_retries_at_a_share_of_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetConfig(ttl_s=10, min_retries_per_s=1, percent_can_retry=0.2), clock)
    retries = 0
    for _ in range(1000):
        clock.now += 0.001
        budget.deposit()
        while budget.try_withdraw():  # every request would retry forever in an outage
            retries += 1
    assert retries <= 10 + 0.2 * 1000 + 1


def test_ttft_budget() -> None:
    ttft = TtftTimeout(timeout_s=2.0, cold_extra_s=30.0)
    assert ttft.budget_s(True, None) == 2.0
    assert ttft.budget_s(False, None) == 32.0
    assert ttft.budget_s(False, 5.0) == 5.0
    assert ttft.budget_s(True, -1.0) == 0.0


def test_concurrency_limit() -> None:
    limit = ConcurrencyLimit(2)
    limit.acquire()
    limit.acquire()
    with pytest.raises(ResourceExhausted, match="max_concurrent_requests"):
        limit.acquire()
    limit.release()
    limit.acquire()


async def test_background_gate_limits_and_wakes() -> None:
    gate = BackgroundGate(max_inflight=1, wait_s=0.05)
    await gate.enter(None)
    with pytest.raises(Unavailable, match="yielded"):
        await gate.enter(None)
    gate.leave()
    await gate.enter(None)
    waiter = asyncio.create_task(gate.wait_for_room(5.0))
    await asyncio.sleep(0)
    gate.notify_room()
    assert await waiter
    assert not await gate.wait_for_room(0.0)
