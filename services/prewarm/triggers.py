"""What starts runs: the service starting, the schedule, always-warm expiries and nodes (re)joining."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping

from services.prewarm.config import PrewarmConfig
from services.prewarm.planner import ExpiryLedger, NodeView, next_rewarm_at, nodes_needing_warmup
from services.prewarm.required import missing_required
from services.prewarm.runs import Run, RunManager, RunRequest, Step, Trigger

logger = logging.getLogger(__name__)

# NOTE: after a refresh was requested, wait at least this long before asking again for the same expiry,
# so a refresh that fails (or a health view that lags) cannot spin the loop.
MIN_REFRESH_RETRY_S = 5.0


def next_slot_s(now_s: float, interval_s: float) -> float:
    """The first scheduled-run time after `now_s`: the next multiple of the interval since the epoch.

    NOTE: on the wall clock rather than counted from the replica's start, so every replica has the same
    schedule: a replica taking over from a leader that died runs the next cycle when it is due, never
    one the old leader already ran (a cycle due while no replica led is skipped, not run late).
    """
    return (math.floor(now_s / interval_s) + 1) * interval_s


class Triggers:
    """Submits background runs to the manager; a run in progress makes them queue and merge."""

    def __init__(
        self,
        cfg: PrewarmConfig,
        manager: RunManager,
        *,
        view: Callable[[], Mapping[str, NodeView] | None],
        ledger: ExpiryLedger,
        clock: Callable[[], float],
    ) -> None:
        self._cfg = cfg
        self._manager = manager
        self._view = view
        self._ledger = ledger
        self._clock = clock
        self._wake = asyncio.Event()
        self._refresh_hold_until_s = 0.0
        self.next_scheduled_at_s: float | None = None
        manager.on_finished.append(self._run_finished)

    def on_scores(self, before: Mapping[str, NodeView] | None, after: Mapping[str, NodeView]) -> None:
        """Health listener: warms nodes that joined, came back or lost an always-warm model."""
        nodes = nodes_needing_warmup(before, after, self._cfg.models)
        required = self._cfg.required_models
        if required and before is not None:
            # NOTE: desired state first: a node still lacking a required model is warmed once
            # health's view lists the last one (required.py pulls them), not before.
            completed = {
                node_id
                for node_id, node in after.items()
                if node.serving
                and node_id in before
                and missing_required(before[node_id], required)
                and not missing_required(node, required)
            }
            nodes = frozenset(n for n in nodes | completed if not missing_required(after[n], required))
        if nodes:
            logger.info("node(s) %s joined or came back: warming them", ",".join(sorted(nodes)))
            self._manager.submit(RunRequest(Trigger.NODE_JOINED, (Step.WARM_MODELS,), nodes))
        # NOTE: expiries may have moved; the loop recomputes when the next refresh is due.
        self._wake.set()

    def _run_finished(self, run: Run) -> None:
        self._wake.set()

    def _next_refresh(self) -> tuple[float, frozenset[str]] | None:
        view = self._view()
        if not view:
            return None
        due = next_rewarm_at(
            view.values(), self._cfg.models, rewarm_lead_s=self._cfg.rewarm_lead_s, ledger=self._ledger
        )
        if due is None:
            return None
        return max(due[0], self._refresh_hold_until_s), due[1]

    async def run(self, *, startup: bool = True) -> None:
        """Starts the start-up run (when `startup` and configured), then fires scheduled runs and
        always-warm refreshes until cancelled."""
        now_s = self._clock()
        if self._cfg.run_on_start and startup:
            self._manager.submit(RunRequest(Trigger.STARTUP))
        interval_s = self._cfg.schedule_interval_s
        self.next_scheduled_at_s = next_slot_s(now_s, interval_s) if interval_s > 0 else None
        always_warm = frozenset(m.name for m in self._cfg.models if m.always_warm)
        while True:
            refresh = self._next_refresh()
            deadline_s = min(
                self.next_scheduled_at_s if self.next_scheduled_at_s is not None else math.inf,
                refresh[0] if refresh is not None else math.inf,
            )
            wait_s = deadline_s - self._clock()
            if wait_s > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(None if math.isinf(wait_s) else wait_s):
                        await self._wake.wait()
                    continue
                except TimeoutError:
                    pass
            now_s = self._clock()
            if self.next_scheduled_at_s is not None and now_s >= self.next_scheduled_at_s:
                self._manager.submit(RunRequest(Trigger.SCHEDULE))
                # NOTE: the first slot after now (this one is due or overdue, so it is past), not one
                # interval after the run ended.
                self.next_scheduled_at_s = next_slot_s(now_s, interval_s)
            elif refresh is not None and now_s >= refresh[0]:
                logger.info("always-warm models expire soon on %s: refreshing", ",".join(sorted(refresh[1])))
                self._refresh_hold_until_s = now_s + max(MIN_REFRESH_RETRY_S, self._cfg.rewarm_lead_s / 4)
                self._manager.submit(
                    RunRequest(Trigger.SCHEDULE, (Step.WARM_MODELS,), refresh[1], always_warm)
                )
