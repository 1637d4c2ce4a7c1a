"""The lookup budget follows a cache that answers slowly and holds for one that does not answer."""

from __future__ import annotations

import pydantic
import pytest

from services.router.config import RouterConfig
from services.router.lookup_budget import FACTOR, MIN_REPLIES, REFRESH_EVERY, WINDOW, LookupBudget

BASE = 0.015
CEILING = 0.25


def _replies(budget: LookupBudget, seconds: float, n: int) -> None:
    for _ in range(n):
        budget.replied(seconds)


def test_the_budget_starts_at_the_configured_one() -> None:
    assert LookupBudget(BASE, CEILING).seconds() == BASE


def test_replies_slower_than_the_budget_raise_it_to_a_multiple_of_their_95th_percentile() -> None:
    budget = LookupBudget(BASE, CEILING)
    _replies(budget, 0.040, 2 * REFRESH_EVERY)
    assert budget.seconds() == pytest.approx(FACTOR * 0.040)


def test_the_raised_budget_stops_at_the_ceiling() -> None:
    budget = LookupBudget(BASE, CEILING)
    _replies(budget, 1.0, 2 * REFRESH_EVERY)
    assert budget.seconds() == CEILING


def test_replies_within_the_budget_leave_it_where_it_was_configured() -> None:
    budget = LookupBudget(BASE, CEILING)
    _replies(budget, 0.002, WINDOW)
    assert budget.seconds() == BASE


def test_a_cache_that_gets_fast_again_brings_the_budget_back_down() -> None:
    budget = LookupBudget(BASE, CEILING)
    _replies(budget, 0.050, WINDOW)
    assert budget.seconds() > BASE
    _replies(budget, 0.001, WINDOW)
    assert budget.seconds() == BASE


def test_a_few_replies_are_not_enough_to_move_it() -> None:
    budget = LookupBudget(BASE, CEILING)
    _replies(budget, 0.100, MIN_REPLIES - 1)
    assert budget.seconds() == BASE


def test_a_cache_that_stops_answering_returns_the_budget_to_the_configured_one() -> None:
    budget = LookupBudget(BASE, CEILING)
    _replies(budget, 0.060, WINDOW)
    assert budget.seconds() > BASE
    # NOTE: as many calls without a reply as with one: unwell, not busy.
    for _ in range(WINDOW // 2):
        budget.failed()
    assert budget.seconds() == BASE


def test_a_failure_now_and_then_does_not_undo_a_busy_cache_budget() -> None:
    budget = LookupBudget(BASE, CEILING)
    for n in range(WINDOW):
        if n % 10 == 0:
            budget.failed()
        else:
            budget.replied(0.060)
    assert budget.seconds() == pytest.approx(FACTOR * 0.060)


def test_lookups_that_gave_up_waiting_for_a_call_slot_count_as_at_least_their_wait() -> None:
    budget = LookupBudget(BASE, CEILING)
    for n in range(WINDOW):
        if n % 4 == 0:
            budget.unsent(0.030)
        else:
            budget.replied(0.010)
    assert budget.seconds() == pytest.approx(FACTOR * 0.030)


def test_a_budget_whose_ceiling_is_the_budget_stays_fixed() -> None:
    budget = LookupBudget(BASE, BASE)
    _replies(budget, 0.200, WINDOW)
    assert not budget.adaptive and budget.seconds() == BASE


def test_a_ceiling_below_the_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="below the budget"):
        LookupBudget(BASE, BASE / 2)


def test_the_router_refuses_a_ceiling_below_its_lookup_budget_naming_both() -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        RouterConfig(lookup_budget_ms=20, lookup_budget_max_ms=10)
    assert "lookup_budget_max_ms (10)" in str(err.value) and "lookup_budget_ms (20)" in str(err.value)
    assert RouterConfig(lookup_budget_ms=20, lookup_budget_max_ms=20).lookup_budget_max_ms == 20


def test_a_lookup_budget_above_the_default_ceiling_with_no_ceiling_given_is_fixed() -> None:
    assert RouterConfig(lookup_budget_ms=2000).lookup_budget_ceiling_ms == 2000
    assert RouterConfig().lookup_budget_ceiling_ms == 250
