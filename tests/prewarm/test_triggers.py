"""Triggers: start-up run, schedule, always-warm refresh before expiry, nodes joining or coming back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

import pytest

from services.prewarm.config import PrewarmConfig, WarmModel
from services.prewarm.planner import ModelView, NodeView
from services.prewarm.runs import ALL_STEPS, Run, RunManager, RunRequest, Step, Trigger
from services.prewarm.triggers import Triggers

WAIT_S = 5.0
LLAMA = WarmModel(name="llama3.2:1b", keep_alive_s=600, always_warm=True)


class Recorder:
    """An executor that records each run's request and lets the test await them."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[RunRequest] = asyncio.Queue()

    async def __call__(self, run: Run) -> None:
        await self.requests.put(run.request)

    async def next(self) -> RunRequest:
        async with asyncio.timeout(WAIT_S):
            return await self.requests.get()


def node(node_id: str, expires_at_s: float | None = None, **state: object) -> NodeView:
    loaded = expires_at_s is not None
    model = ModelView(
        name="llama3.2:1b", loaded=loaded, expires_at_s=expires_at_s, capabilities=("completion",)
    )
    models = {"llama3.2:1b": model}
    return NodeView(node_id=node_id, address="http://x", models=models, **state)  # type: ignore[arg-type]


class Harness:
    def __init__(self, view: Mapping[str, NodeView] | None, **cfg: object) -> None:
        self.view = view
        self.recorder = Recorder()
        self.manager = RunManager(self.recorder)
        self.cfg = PrewarmConfig.model_validate({"models": [LLAMA], **cfg})
        self.ledger: dict[tuple[str, str], float] = {}
        self.triggers = Triggers(
            self.cfg, self.manager, view=lambda: self.view, ledger=self.ledger, clock=time.time
        )


async def run_triggers(h: Harness) -> asyncio.Task[None]:
    return asyncio.create_task(h.triggers.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_start_up_run_then_scheduled_runs_with_every_step() -> None:
    h = Harness({}, run_on_start=True, schedule_interval_s=0.2)
    task = await run_triggers(h)
    try:
        assert (await h.recorder.next()) == RunRequest(Trigger.STARTUP)
        scheduled = await h.recorder.next()
        assert scheduled.trigger is Trigger.SCHEDULE and scheduled.steps == ALL_STEPS
        assert h.triggers.next_scheduled_at_s is not None and h.triggers.next_scheduled_at_s > time.time() - 1
    finally:
        await stop(task)
        await h.manager.close()


async def test_always_warm_model_is_refreshed_before_its_keep_alive_ends() -> None:
    now = time.time()
    view = {"a": node("a", now + 1.3), "b": node("b", now + 600)}
    h = Harness(view, run_on_start=False, schedule_interval_s=0, rewarm_lead_s=1.0)
    task = await run_triggers(h)
    try:
        refresh = await h.recorder.next()
        assert refresh == RunRequest(
            Trigger.SCHEDULE, (Step.WARM_MODELS,), frozenset({"a"}), frozenset({"llama3.2:1b"})
        )
        assert time.time() >= now + 0.3 - 0.05
        # The warm-up recorded a new expiry: no second refresh for the same expiry.
        h.ledger[("a", "llama3.2:1b")] = time.time() + 600
        await h.manager.wait_idle()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await h.recorder.requests.get()
    finally:
        await stop(task)
        await h.manager.close()


async def test_node_back_or_new_gets_a_warm_up_run_for_that_node_only() -> None:
    h = Harness(None, run_on_start=False, schedule_interval_s=0)
    down = {"a": node("a", state="UNHEALTHY", healthy=False), "b": node("b", time.time() + 600)}
    h.triggers.on_scores(None, down)
    back = {**down, "a": node("a")}
    h.triggers.on_scores(down, back)
    request = await h.recorder.next()
    assert request == RunRequest(Trigger.NODE_JOINED, (Step.WARM_MODELS,), frozenset({"a"}))
    with_new = {**back, "c": node("c")}
    h.triggers.on_scores(back, with_new)
    assert (await h.recorder.next()).node_ids == frozenset({"c"})
    await h.manager.close()
