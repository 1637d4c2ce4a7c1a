"""Unit tests of the run manager: one run at a time, joiners share the stream, queued work merges."""

from __future__ import annotations

import asyncio

import pytest

from services.prewarm.runs import (
    ALL_STEPS,
    Outcome,
    ProgressEvent,
    Run,
    RunInProgress,
    RunManager,
    RunRequest,
    RunState,
    Step,
    Trigger,
)

WAIT_S = 5.0


class GatedExecutor:
    """Runs one OK item per step, holding each run until released."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = asyncio.Event()
        self.runs: list[RunRequest] = []
        self.started = asyncio.Event()
        self.fail = fail

    async def __call__(self, run: Run) -> None:
        self.runs.append(run.request)
        self.started.set()
        progress = run.step(Step.WARM_MODELS, 2)
        progress.started("n1", "m")
        await self.gate.wait()
        progress.finished(Outcome.FAILED if self.fail else Outcome.OK, "n1", "m", "done")
        progress.finished(Outcome.SKIPPED, "n2", "m", "already loaded")


async def collect(run: Run) -> list[ProgressEvent]:
    async with asyncio.timeout(WAIT_S):
        return [event async for event in run.events()]


async def test_run_streams_events_and_lands_in_history() -> None:
    executor = GatedExecutor()
    manager = RunManager(executor)
    run = manager.start(RunRequest(Trigger.MANUAL))
    collector = asyncio.create_task(collect(run))
    executor.gate.set()
    events = await collector
    assert [e.outcome for e in events] == [Outcome.STARTED, Outcome.OK, Outcome.SKIPPED, Outcome.OK]
    assert [e.done for e in events[:3]] == [0, 1, 2]
    assert events[-1].run_finished and not any(e.run_finished for e in events[:-1])
    await manager.wait_idle()
    assert manager.current is None
    [summary] = manager.recent(10)
    assert (summary.state, summary.succeeded, summary.skipped, summary.failed) == (
        RunState.SUCCEEDED,
        1,
        1,
        0,
    )
    assert summary.finished_at_s is not None


async def test_second_start_is_refused_naming_the_run_or_joins_it() -> None:
    executor = GatedExecutor()
    manager = RunManager(executor)
    first = manager.start(RunRequest(Trigger.MANUAL))
    with pytest.raises(RunInProgress, match=first.run_id):
        manager.start(RunRequest(Trigger.MANUAL))
    joined = manager.start(RunRequest(Trigger.MANUAL), join_if_running=True)
    assert joined is first
    early, late = asyncio.create_task(collect(first)), None
    async with asyncio.timeout(WAIT_S):
        await executor.started.wait()
    late = asyncio.create_task(collect(joined))
    executor.gate.set()
    assert await early == await late
    assert len(executor.runs) == 1


async def test_background_requests_queue_behind_the_current_run_and_merge() -> None:
    executor = GatedExecutor()
    manager = RunManager(executor)
    manager.start(RunRequest(Trigger.MANUAL, (Step.MAINTENANCE,)))
    assert manager.submit(RunRequest(Trigger.NODE_JOINED, (Step.WARM_MODELS,), frozenset({"a"}))) is None
    manager.submit(RunRequest(Trigger.NODE_JOINED, (Step.WARM_MODELS,), frozenset({"b"})))
    assert manager.pending == RunRequest(Trigger.NODE_JOINED, (Step.WARM_MODELS,), frozenset({"a", "b"}))
    executor.gate.set()
    async with asyncio.timeout(WAIT_S):
        await manager.wait_idle()
    assert [r.node_ids for r in executor.runs] == [frozenset(), frozenset({"a", "b"})]
    assert [s.trigger for s in manager.recent(10)] == [Trigger.NODE_JOINED, Trigger.MANUAL]


def test_merge_keeps_everything_when_one_side_is_unrestricted() -> None:
    a = RunRequest(Trigger.NODE_JOINED, (Step.WARM_MODELS,), frozenset({"a"}))
    b = RunRequest(Trigger.SCHEDULE)
    merged = a.merged(b)
    assert merged.steps == ALL_STEPS and merged.node_ids == frozenset() and merged.models == frozenset()
    assert RunRequest(Trigger.MANUAL, (Step.MAINTENANCE, Step.WARM_MODELS)).steps == (
        Step.WARM_MODELS,
        Step.MAINTENANCE,
    )


async def test_all_failed_items_make_a_failed_run_and_errors_are_listed() -> None:
    executor = GatedExecutor(fail=True)
    executor.gate.set()
    manager = RunManager(executor)
    events = await collect(manager.start(RunRequest(Trigger.MANUAL)))
    summary = manager.recent(1)[0]
    # One failure and one skip: partial, with the failure listed.
    assert summary.state is RunState.PARTIAL
    assert summary.errors == ["warm_models n1/m: done"]
    assert events[-1].outcome is Outcome.OK


async def test_crashing_executor_ends_the_run_as_failed_and_history_is_bounded() -> None:
    async def crash(run: Run) -> None:
        raise RuntimeError("boom")

    manager = RunManager(crash, history_size=2)
    for _ in range(3):
        events = await collect(manager.start(RunRequest(Trigger.MANUAL)))
        assert events[-1].outcome is Outcome.FAILED and "internal error" in events[-1].message
        await manager.wait_idle()
    recent = manager.recent(10)
    assert len(recent) == 2 and all(s.state is RunState.FAILED for s in recent)
    assert recent[0].started_at_s >= recent[1].started_at_s


async def test_close_aborts_the_run_in_progress() -> None:
    executor = GatedExecutor()
    manager = RunManager(executor)
    run = manager.start(RunRequest(Trigger.MANUAL))
    async with asyncio.timeout(WAIT_S):
        await executor.started.wait()
    await manager.close()
    events = await collect(run)
    assert events[-1].run_finished and "shutting down" in events[-1].message
    assert manager.recent(1)[0].state is RunState.FAILED
    assert manager.submit(RunRequest(Trigger.SCHEDULE)) is None
