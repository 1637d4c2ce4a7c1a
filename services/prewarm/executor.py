"""Runs the steps of a run: warm-up on the nodes, seeding through the router, cache maintenance."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from services.prewarm.config import PrewarmConfig, WarmModel
from services.prewarm.planner import WarmAction, WarmItem, normalize_model_name, plan_warm
from services.prewarm.ports import Maintainer, NodeClient, PeerError, ScoreSource, Seeder
from services.prewarm.runs import Outcome, Run, Step, StepProgress
from services.prewarm.seeds import SeedFileError, SeedQuery, load_seed_file

logger = logging.getLogger(__name__)


class RunExecutor:
    """Carries out a run's steps through the adapters, with a concurrency limit of its own."""

    def __init__(
        self,
        cfg: PrewarmConfig,
        *,
        scores: ScoreSource,
        nodes: NodeClient,
        seeder: Seeder,
        maintainer: Maintainer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._scores = scores
        self._nodes = nodes
        self._seeder = seeder
        self._maintainer = maintainer
        self._clock = clock
        # NOTE: one limit across nodes and steps: prewarm never has more than this many requests out.
        self._limit = asyncio.Semaphore(cfg.concurrency)
        self.ledger: dict[tuple[str, str], float] = {}

    async def __call__(self, run: Run) -> None:
        """Runs the steps of the run in order; a failing step is reported and the next one runs."""
        for step in run.request.steps:
            if step is Step.WARM_MODELS:
                await self.warm(run)
            elif step is Step.SEED_CACHE:
                await self.seed(run)
            elif step is Step.MAINTENANCE:
                await self.maintain(run)

    def models_for(self, run: Run) -> list[WarmModel]:
        """The configured models, or the run's chosen ones (a model not configured gets the defaults)."""
        if not run.request.models:
            return list(self._cfg.models)
        configured = {normalize_model_name(m.name): m for m in self._cfg.models}
        chosen = sorted(run.request.models)
        return [configured.get(normalize_model_name(name)) or WarmModel(name=name) for name in chosen]

    # ------------------------------------------------------------------ warm-up
    async def warm(self, run: Run) -> None:
        """Plans the warm-up from health's view and loads the models, nodes in parallel."""
        # NOTE: an event at once, so a client following the run sees it while health is awaited.
        message = f"planning from the node scores of health at {self._scores.address}"
        run.emit(Step.WARM_MODELS, "", "", 0, 0, Outcome.STARTED, message)
        view = await self._scores.current(self._cfg.health_wait_s)
        if view is None:
            progress = run.step(Step.WARM_MODELS, 1)
            progress.finished(
                Outcome.FAILED,
                message=f"health at {self._scores.address} is unavailable: no node scores to plan from",
            )
            return
        items = plan_warm(
            view.values(),
            self.models_for(run),
            self._cfg.capacity_of,
            self._clock(),
            rewarm_lead_s=self._cfg.rewarm_lead_s,
            only_nodes=run.request.node_ids,
            ledger=self.ledger,
        )
        progress = run.step(Step.WARM_MODELS, len(items))
        if not items:
            run.emit(
                Step.WARM_MODELS, "", "", 0, 0, Outcome.SKIPPED, "nothing to warm: health knows no nodes"
            )
            return
        by_node: dict[str, list[WarmItem]] = {}
        for item in items:
            if item.action is WarmAction.SKIP:
                progress.finished(Outcome.SKIPPED, item.node_id, item.model, item.reason)
            elif item.action is WarmAction.FAIL:
                progress.finished(Outcome.FAILED, item.node_id, item.model, item.reason)
            else:
                by_node.setdefault(item.node_id, []).append(item)
        await asyncio.gather(*(self._warm_node(progress, node_items) for node_items in by_node.values()))

    async def _warm_node(self, progress: StepProgress, items: list[WarmItem]) -> None:
        # NOTE: one load at a time per node, in priority order: Ollama loads one model at a time anyway,
        # and parallel loads on one node would compete for its memory.
        unreachable = ""
        for item in items:
            if unreachable:
                progress.finished(
                    Outcome.FAILED, item.node_id, item.model, f"node unreachable: {unreachable}"
                )
                continue
            async with self._limit:
                progress.started(item.node_id, item.model, f"{item.action.value}: {item.reason}")
                started = time.perf_counter()
                try:
                    await self._nodes.warm(
                        item.address,
                        item.model,
                        embedding=item.embedding,
                        keep_alive_s=item.keep_alive_s,
                        timeout_s=self._cfg.warm_timeout_s,
                    )
                except PeerError as exc:
                    elapsed = time.perf_counter() - started
                    if exc.unreachable:
                        unreachable = str(exc)
                    logger.warning("warm-up of %s on %s failed: %s", item.model, item.node_id, exc)
                    progress.finished(Outcome.FAILED, item.node_id, item.model, str(exc), elapsed)
                    continue
            elapsed = time.perf_counter() - started
            expiry = math.inf if item.keep_alive_s < 0 else self._clock() + item.keep_alive_s
            self.ledger[(item.node_id, normalize_model_name(item.model))] = expiry
            verb = "loaded" if item.action is WarmAction.LOAD else "keep-alive refreshed"
            progress.finished(Outcome.OK, item.node_id, item.model, f"{verb} in {elapsed:.2f} s", elapsed)

    # ------------------------------------------------------------------ seeding
    async def seed(self, run: Run) -> None:
        """Sends the seed file's queries through the router at background priority, and stores each
        answer for the configured `seed_tenants` too (the cache is per tenant)."""
        try:
            seeds = load_seed_file(self._cfg.seed_file)
        except SeedFileError as exc:
            run.step(Step.SEED_CACHE, 1).finished(Outcome.FAILED, message=str(exc))
            return
        pairs = seeds.queries(run.request.models)
        progress = run.step(Step.SEED_CACHE, len(pairs))
        if not pairs:
            run.emit(Step.SEED_CACHE, "", "", 0, 0, Outcome.SKIPPED, "no seed queries for these models")
            return
        refresh = self._cfg.seed_cache_mode == "refresh"
        tenants = self._cfg.seed_tenants
        router_down = ""

        async def one(model: str, query: SeedQuery) -> None:
            nonlocal router_down
            async with self._limit:
                # NOTE: checked after the wait: an earlier query may have found the router down.
                if router_down:
                    progress.finished(
                        Outcome.FAILED, "", model, f"{query.label}: router unreachable: {router_down}"
                    )
                    return
                progress.started("", model, query.label)
                started = time.perf_counter()
                try:
                    result = await self._seeder.seed(
                        model, query, refresh=refresh, timeout_s=self._cfg.seed_timeout_s
                    )
                except PeerError as exc:
                    if exc.unreachable:
                        router_down = str(exc)
                    elapsed = time.perf_counter() - started
                    progress.finished(Outcome.FAILED, "", model, f"{query.label}: {exc}", elapsed)
                    return
                shared = ""
                if tenants and result.answer:
                    try:
                        stored = await self._maintainer.store_seeded(
                            model, query, result, tenants, timeout_s=self._cfg.seed_timeout_s
                        )
                    except PeerError as exc:
                        elapsed = time.perf_counter() - started
                        message = f"{query.label}: answered, but not stored for the seed tenants: {exc}"
                        progress.finished(Outcome.FAILED, result.node_id, model, message, elapsed)
                        return
                    shared = f", stored for {stored} of {len(tenants)} seed tenants"
            elapsed = time.perf_counter() - started
            if result.already_cached:
                message = f"{query.label}: already cached ({result.cache_outcome.lower()}){shared}"
                progress.finished(Outcome.SKIPPED, result.node_id, model, message, elapsed)
            else:
                message = f"{query.label}: answered by {result.node_id or 'the router'}, cached{shared}"
                progress.finished(Outcome.OK, result.node_id, model, message, elapsed)

        await asyncio.gather(*(one(model, query) for model, query in pairs))

    # ------------------------------------------------------------------ maintenance
    async def maintain(self, run: Run) -> None:
        """Asks the cache to expire old semantic entries and vacuum; records its report."""
        progress = run.step(Step.MAINTENANCE, 1)
        progress.started(message="cache maintenance")
        started = time.perf_counter()
        try:
            result = await self._maintainer.run_maintenance(
                max_age_s=self._cfg.maintenance_max_age_s,
                vacuum=self._cfg.maintenance_vacuum,
                timeout_s=self._cfg.maintenance_timeout_s,
            )
        except PeerError as exc:
            run.summary.maintenance_report = f"maintenance failed: {exc}"
            progress.finished(Outcome.FAILED, message=str(exc), duration_s=time.perf_counter() - started)
            return
        report = result.report()
        run.summary.maintenance_report = report
        progress.finished(Outcome.OK, message=report, duration_s=time.perf_counter() - started)
