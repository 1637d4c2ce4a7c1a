"""Runs and the run manager: one run at a time, shared progress streams, a history of finished runs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import Enum

logger = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 50


class Step(Enum):
    """One kind of prewarm work, in the order a run does them."""

    WARM_MODELS = 1
    SEED_CACHE = 2
    MAINTENANCE = 3


ALL_STEPS: tuple[Step, ...] = (Step.WARM_MODELS, Step.SEED_CACHE, Step.MAINTENANCE)


class Outcome(Enum):
    """The outcome of one item of a step."""

    STARTED = 1
    OK = 2
    SKIPPED = 3
    FAILED = 4


class Trigger(Enum):
    """Why a run started."""

    STARTUP = 1
    SCHEDULE = 2
    NODE_JOINED = 3
    MANUAL = 4


class RunState(Enum):
    """The state of a run."""

    RUNNING = 1
    SUCCEEDED = 2
    PARTIAL = 3
    FAILED = 4


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a run does.

    Attributes:
        trigger: Why it runs.
        steps: The steps, run in the canonical order whatever the order given.
        node_ids: Restrict warm-up to these nodes (empty: every node).
        models: Restrict warm-up and seeding to these models (empty: the configured ones).
    """

    trigger: Trigger
    steps: tuple[Step, ...] = ALL_STEPS
    node_ids: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(s for s in ALL_STEPS if s in set(self.steps)) or ALL_STEPS)

    def merged(self, other: RunRequest) -> RunRequest:
        """A request doing the work of both (an empty restriction means everything)."""
        nodes = frozenset() if not self.node_ids or not other.node_ids else self.node_ids | other.node_ids
        models = frozenset() if not self.models or not other.models else self.models | other.models
        return RunRequest(self.trigger, (*self.steps, *other.steps), nodes, models)


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One progress event of a run (see prewarm_service.proto for the fields)."""

    run_id: str
    step: Step | None
    node_id: str
    model: str
    done: int
    total: int
    outcome: Outcome
    message: str
    at_s: float
    run_finished: bool = False
    duration_s: float = 0.0


@dataclass(slots=True)
class RunSummary:
    """The summary of a run, kept in the history once it finished."""

    run_id: str
    trigger: Trigger
    steps: tuple[Step, ...]
    node_ids: frozenset[str]
    started_at_s: float
    state: RunState = RunState.RUNNING
    finished_at_s: float | None = None
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    maintenance_report: str = ""


class StepProgress:
    """Counts the items of one step and emits their events."""

    def __init__(self, run: Run, step: Step, total: int) -> None:
        self._run = run
        self.step = step
        self.total = total
        self.done = 0

    def started(self, node_id: str = "", model: str = "", message: str = "") -> None:
        """Reports that an item started."""
        self._run.emit(self.step, node_id, model, self.done, self.total, Outcome.STARTED, message)

    def finished(
        self, outcome: Outcome, node_id: str = "", model: str = "", message: str = "", duration_s: float = 0.0
    ) -> None:
        """Reports that an item finished with an outcome and counts it."""
        self.done += 1
        self._run.count(outcome, self.step, node_id, model, message)
        self._run.emit(self.step, node_id, model, self.done, self.total, outcome, message, duration_s)


class Run:
    """A run in progress: its summary, its events so far and the subscribers waiting for more."""

    def __init__(self, run_id: str, request: RunRequest, clock: Callable[[], float] = time.time) -> None:
        self.request = request
        self._clock = clock
        self.summary = RunSummary(run_id, request.trigger, request.steps, request.node_ids, clock())
        self._events: list[ProgressEvent] = []
        self._wakeup = asyncio.Event()
        self.finished = asyncio.Event()

    @property
    def run_id(self) -> str:
        """The run id."""
        return self.summary.run_id

    def step(self, step: Step, total: int) -> StepProgress:
        """Starts counting the items of a step."""
        return StepProgress(self, step, total)

    def count(self, outcome: Outcome, step: Step, node_id: str, model: str, message: str) -> None:
        """Adds one finished item to the summary."""
        if outcome is Outcome.OK:
            self.summary.succeeded += 1
        elif outcome is Outcome.SKIPPED:
            self.summary.skipped += 1
        elif outcome is Outcome.FAILED:
            self.summary.failed += 1
            if len(self.summary.errors) < MAX_ERRORS_KEPT:
                where = "/".join(p for p in (node_id, model) if p)
                prefix = f"{step.name.lower()} {where}".strip()
                self.summary.errors.append(f"{prefix}: {message}")

    def emit(
        self,
        step: Step | None,
        node_id: str,
        model: str,
        done: int,
        total: int,
        outcome: Outcome,
        message: str = "",
        duration_s: float = 0.0,
        run_finished: bool = False,
    ) -> None:
        """Appends an event and wakes the subscribers."""
        event = ProgressEvent(
            self.run_id,
            step,
            node_id,
            model,
            done,
            total,
            outcome,
            message,
            self._clock(),
            run_finished,
            duration_s,
        )
        self._events.append(event)
        # NOTE: one Event per generation of events: waiters of the old one wake, new waiters take the new.
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    def finish(self, aborted: str = "") -> None:
        """Sets the final state and emits the last event."""
        s = self.summary
        if aborted:
            s.state = RunState.FAILED
            s.errors.append(f"run aborted: {aborted}")
        elif s.failed == 0:
            s.state = RunState.SUCCEEDED
        elif s.succeeded == 0 and s.skipped == 0:
            s.state = RunState.FAILED
        else:
            s.state = RunState.PARTIAL
        s.finished_at_s = self._clock()
        message = f"run {s.state.name.lower()}: {s.succeeded} ok, {s.skipped} skipped, {s.failed} failed" + (
            f" ({aborted})" if aborted else ""
        )
        total = s.succeeded + s.skipped + s.failed
        self.emit(None, "", "", total, total, _final_outcome(s.state), message, run_finished=True)
        self.finished.set()

    async def events(self) -> AsyncIterator[ProgressEvent]:
        """Every event of the run from its start, then live ones, until the run finishes."""
        index = 0
        while True:
            wakeup = self._wakeup
            while index < len(self._events):
                event = self._events[index]
                index += 1
                yield event
                if event.run_finished:
                    return
                wakeup = self._wakeup
            if index >= len(self._events):
                await wakeup.wait()

    def snapshot(self) -> RunSummary:
        """A copy of the summary."""
        return replace(self.summary, errors=list(self.summary.errors))


def _final_outcome(state: RunState) -> Outcome:
    return {RunState.SUCCEEDED: Outcome.OK, RunState.PARTIAL: Outcome.OK}.get(state, Outcome.FAILED)


class RunInProgress(Exception):
    """A run was requested while another one is in progress."""

    def __init__(self, run: Run) -> None:
        started = time.strftime("%H:%M:%S", time.gmtime(run.summary.started_at_s))
        super().__init__(
            f"run {run.run_id} ({run.summary.trigger.name.lower()}, started {started} UTC) is in progress;"
            " set join_if_running to follow it"
        )
        self.run = run


Executor = Callable[[Run], Awaitable[None]]


class RunManager:
    """Starts runs one at a time; background requests that arrive meanwhile are merged and run next."""

    def __init__(
        self, executor: Executor, *, history_size: int = 20, clock: Callable[[], float] = time.time
    ) -> None:
        self._executor = executor
        self._clock = clock
        self._history: deque[RunSummary] = deque(maxlen=history_size)
        self._current: Run | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: RunRequest | None = None
        self._ids = itertools.count(1)
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.on_finished: list[Callable[[Run], None]] = []

    @property
    def current(self) -> Run | None:
        """The run in progress, if any."""
        return self._current

    @property
    def pending(self) -> RunRequest | None:
        """The background work waiting for the current run to end."""
        return self._pending

    def recent(self, limit: int) -> list[RunSummary]:
        """Finished runs, newest first."""
        return list(itertools.islice(reversed(self._history), limit))

    def start(self, request: RunRequest, *, join_if_running: bool = False) -> Run:
        """Starts a run now, or returns the current one when joining.

        Raises:
            RunInProgress: A run is in progress and join_if_running is false.
        """
        if self._current is not None:
            if join_if_running:
                return self._current
            raise RunInProgress(self._current)
        return self._launch(request)

    def submit(self, request: RunRequest) -> Run | None:
        """Starts background work now, or merges it into the work queued behind the current run."""
        if self._closed:
            return None
        if self._current is None:
            return self._launch(request)
        self._pending = request if self._pending is None else self._pending.merged(request)
        logger.info("run %s in progress; queued %s work", self._current.run_id, request.trigger.name.lower())
        return None

    def _launch(self, request: RunRequest) -> Run:
        run_id = f"run-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(self._clock()))}-{next(self._ids)}"
        run = Run(run_id, request, self._clock)
        self._current = run
        self._idle.clear()
        self._task = asyncio.get_running_loop().create_task(self._drive(run), name=run_id)
        logger.info(
            "run %s started (%s): steps %s",
            run_id,
            request.trigger.name.lower(),
            ",".join(s.name.lower() for s in request.steps),
        )
        return run

    async def _drive(self, run: Run) -> None:
        aborted = ""
        try:
            await self._executor(run)
        except asyncio.CancelledError:
            aborted = "the service is shutting down"
        except Exception as exc:
            logger.exception("run %s crashed", run.run_id)
            aborted = f"internal error: {type(exc).__name__}"
        run.finish(aborted)
        self._history.append(run.snapshot())
        logger.info("run %s finished: %s", run.run_id, run.summary.state.name.lower())
        self._current = None
        for callback in self.on_finished:
            callback(run)
        pending, self._pending = self._pending, None
        if pending is not None and not self._closed:
            self._launch(pending)
        else:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Waits until no run is in progress or queued."""
        await self._idle.wait()

    async def close(self) -> None:
        """Aborts the run in progress (it finishes as FAILED) and refuses new background work."""
        self._closed = True
        self._pending = None
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
