"""The health engine: runs the probe loops and the score publisher around the fleet model."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.health.config import HealthConfig
from services.health.fleet import Fleet
from services.health.hub import Hub, Subscription
from services.health.registry import DuplicateNode, ProbeResult, UnknownNode
from services.health.scoring import NodeView
from services.health.shared_outcomes import OutcomeShare
from services.health.stats import Outcome
from services.health.store import RegistryStore, StoredNode

logger = logging.getLogger(__name__)


class NodeProber(Protocol):
    """What the engine needs from the probe adapter."""

    async def probe(self, base_url: str, want_tags: bool) -> ProbeResult:
        """Probes one node."""

    async def close(self) -> None:
        """Releases connections."""


class MessageKind(enum.Enum):
    """What a score message holds (mirrors corral.v1.ScoreUpdateKind)."""

    SNAPSHOT = "snapshot"
    UPDATE = "update"
    HEARTBEAT = "heartbeat"


@dataclass
class ScoreMessage:
    """One message of the score stream.

    Attributes:
        kind: Snapshot, update or heartbeat.
        version: The fleet version it corresponds to.
        generated_at: Epoch seconds.
        nodes: Every node (snapshot), the changed ones (update), none (heartbeat).
        removed_node_ids: Nodes removed since the previous version (update).
        encoded: Per-message cache for the wire form, filled by the servicer (encode once, send to many).
    """

    kind: MessageKind
    version: int
    generated_at: float
    nodes: tuple[NodeView, ...] = ()
    removed_node_ids: tuple[str, ...] = ()
    encoded: dict[str, Any] = field(default_factory=dict)


def _update_version(message: ScoreMessage) -> int | None:
    return message.version if message.kind is not MessageKind.HEARTBEAT else None


class HealthEngine:
    """Owns the fleet, one probe loop per node and the publisher that feeds WatchScores."""

    def __init__(self, cfg: HealthConfig, prober: NodeProber, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.fleet = Fleet(cfg, clock)
        self._clock = clock
        self._prober = prober
        self.hub: Hub[ScoreMessage] = Hub(self._snapshot_message, cfg.subscriber_queue_size, _update_version)
        self._changed = asyncio.Event()
        self.fleet.on_change = self._changed.set
        self._probe_tasks: dict[str, asyncio.Task[None]] = {}
        self._publisher: asyncio.Task[None] | None = None
        self.probes_done = 0
        self._store: RegistryStore | None = None
        self.share: OutcomeShare | None = None

    def use_store(self, dsn: str) -> None:
        """Makes PostgreSQL the fleet registry (call before start): shared by every replica."""
        cfg = self.cfg
        self._store = RegistryStore(dsn, self.reconcile, cfg.registry_timeout_s, cfg.registry_retry_s)
        if cfg.share_outcomes:
            self.share = OutcomeShare(
                dsn, self._record_shared, cfg.share_interval_s, cfg.registry_retry_s, cfg.registry_timeout_s
            )

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Registers the configured nodes (or loads the shared registry) and starts probing and publishing."""
        loaded = False
        if self._store is not None:
            seed = [StoredNode(n.id, n.address, dict(n.labels), False) for n in self.cfg.nodes]
            loaded = await self._store.start(seed, self.cfg.registry_timeout_s * 2)
            if not loaded:
                logger.warning("starting from the configured nodes until the fleet registry answers")
        if not loaded:
            for spec in self.cfg.nodes:
                self.add_node(spec.id, spec.address, spec.labels)
        # NOTE: the configured nodes are the starting point of the stream, not an update.
        self.fleet.collect_changes()
        self._publisher = asyncio.create_task(self._publish_loop(), name="health-publisher")
        if self.share is not None:
            await self.share.start()

    async def stop(self) -> None:
        """Ends every subscription and background task, then closes the prober."""
        self.hub.close()
        if self.share is not None:
            await self.share.stop()
        if self._store is not None:
            await self._store.stop()
        tasks = [*self._probe_tasks.values(), *([self._publisher] if self._publisher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probe_tasks.clear()
        await self._prober.close()

    # ---- admin ----------------------------------------------------------------------------
    def add_node(self, node_id: str, address: str, labels: Mapping[str, str]) -> NodeView:
        """Registers a node and starts probing it at once."""
        view = self.fleet.add_node(node_id, address, labels)
        self._probe_tasks[node_id] = asyncio.create_task(self._probe_loop(node_id), name=f"probe-{node_id}")
        return view

    def remove_node(self, node_id: str) -> NodeView:
        """Unregisters a node and stops probing it."""
        view = self.fleet.remove_node(node_id)
        task = self._probe_tasks.pop(node_id, None)
        if task is not None:
            task.cancel()
        return view

    def set_draining(self, node_id: str, draining: bool) -> NodeView:
        """Drains or undrains a node."""
        return self.fleet.set_draining(node_id, draining)

    def reconcile(self, nodes: Sequence[StoredNode]) -> None:
        """Makes the local registry match the shared one (added, removed, relabelled, drained nodes)."""
        wanted = {n.node_id: n for n in nodes}
        for node_id in self.fleet.registry.ids():
            entry = self.fleet.registry.get(node_id)
            stored = wanted.get(node_id)
            if stored is None or stored.address != entry.address or stored.labels != entry.labels:
                self.remove_node(node_id)
        for stored in nodes:
            try:
                if stored.node_id not in self.fleet.registry:
                    self.add_node(stored.node_id, stored.address, stored.labels)
                self.set_draining(stored.node_id, stored.draining)
            except Exception:  # NOTE: one bad row must not hide the rest of the fleet.
                logger.exception("cannot apply registry row for node %s", stored.node_id)

    async def admin_add(self, node_id: str, address: str, labels: Mapping[str, str]) -> NodeView:
        """AddNode: registers locally, then records it in the shared registry.

        StoreUnavailable, or DuplicateNode when the shared registry holds the id already (added through
        another replica), undoes the local add; after DuplicateNode the registry is re-read, so that
        this replica shows the other replica's node at once.
        """
        view = self.add_node(node_id, address, labels)
        if self._store is not None:
            try:
                await self._store.add(StoredNode(view.node_id, view.address, dict(view.labels), False))
            except Exception as exc:
                if node_id in self.fleet.registry:
                    self.remove_node(node_id)
                if isinstance(exc, DuplicateNode):
                    await self._store.refresh()
                raise
        return view

    async def admin_drain(self, node_id: str, draining: bool) -> NodeView:
        """DrainNode / UndrainNode, recorded in the shared registry.

        StoreUnavailable, or UnknownNode when the shared registry no longer holds the node (removed
        through another replica), undoes the local change; after UnknownNode the registry is re-read,
        so that this replica drops the removed node at once.
        """
        before = self.fleet.registry.get(node_id).draining
        view = self.set_draining(node_id, draining)
        if self._store is not None:
            try:
                await self._store.set_draining(node_id, draining)
            except Exception as exc:
                if node_id in self.fleet.registry:
                    self.set_draining(node_id, before)
                if isinstance(exc, UnknownNode):
                    await self._store.refresh()
                raise
        return view

    async def admin_remove(self, node_id: str) -> NodeView:
        """RemoveNode, recorded in the shared registry (StoreUnavailable undoes it)."""
        view = self.remove_node(node_id)
        if self._store is not None:
            try:
                await self._store.delete(node_id)
            except Exception:
                if node_id not in self.fleet.registry:
                    self.add_node(view.node_id, view.address, dict(view.labels))
                    self.set_draining(node_id, view.draining)
                raise
        return view

    # ---- passive signals ------------------------------------------------------------------
    def record_outcomes(self, reporter: str, outcomes: Sequence[Outcome]) -> int:
        """Folds in validated outcomes of a router reporting to this replica (and shares them with
        the other replicas, see services/health/shared_outcomes.py); returns how many named a
        registered node."""
        if self.share is not None and outcomes:
            self.share.publish(reporter, outcomes)
        return self._record_shared(reporter, outcomes)

    def _record_shared(self, reporter: str, outcomes: Sequence[Outcome]) -> int:
        """Folds in outcomes (another replica's routers' when shared: `reporter` then names that
        replica); returns how many named a registered node."""
        return sum(1 for outcome in outcomes if self.fleet.record_outcome(outcome, reporter))

    def forget_reporter(self, reporter: str) -> None:
        """A reporter's stream closed: its in-flight counts no longer hold."""
        self.fleet.forget_reporter(reporter)

    # ---- watch ----------------------------------------------------------------------------
    def subscribe(self, name: str) -> tuple[Subscription[ScoreMessage], ScoreMessage]:
        """A new subscriber and the snapshot it starts from."""
        sub, snapshot = self.hub.subscribe(name)
        logger.info("subscriber %s joined (%d in total)", name, len(self.hub))
        return sub, snapshot

    def _snapshot_message(self) -> ScoreMessage:
        # NOTE: publish what changed first, so that the snapshot's version names exactly its contents
        # and the next update a subscriber sees is a real change.
        self._publish_changes()
        version, views = self.fleet.snapshot()
        return ScoreMessage(MessageKind.SNAPSHOT, version, self._clock(), tuple(views))

    def _publish_changes(self) -> bool:
        """Publishes the fleet's pending changes as one update; False when there were none."""
        try:
            changes = self.fleet.collect_changes()
        except Exception:
            logger.exception("collecting score changes failed")
            return False
        if changes is None:
            return False
        self.hub.publish(
            ScoreMessage(
                MessageKind.UPDATE, changes.version, self._clock(), changes.nodes, changes.removed_node_ids
            )
        )
        return True

    # ---- loops ----------------------------------------------------------------------------
    async def _probe_loop(self, node_id: str) -> None:
        interval_s = self.cfg.probe_interval_s
        loop = asyncio.get_running_loop()
        while node_id in self.fleet.registry:
            started = loop.time()
            entry = self.fleet.registry.get(node_id)
            try:
                result = await self._prober.probe(entry.address, self.fleet.wants_tags(node_id))
            except Exception as exc:  # NOTE: a probe bug must not end the loop silently.
                logger.exception("probe of %s failed unexpectedly", node_id)
                result = ProbeResult(ok=False, latency_ms=0.0, error=f"probe error: {exc}")
            self.fleet.record_probe(node_id, result)
            self.probes_done += 1
            await asyncio.sleep(max(0.0, started + interval_s - loop.time()))

    async def _publish_loop(self) -> None:
        loop = asyncio.get_running_loop()
        heartbeat_s = self.cfg.heartbeat_interval_s
        last_sent = loop.time()
        while True:
            # NOTE: asyncio.timeout, not wait_for: on Python 3.11 a wait_for whose event is set just as
            # the task is cancelled swallows the cancellation, and stop() then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, last_sent + heartbeat_s - loop.time())):
                    await self._changed.wait()
            if self._changed.is_set() and self.cfg.min_update_interval_s > 0:
                # NOTE: let a burst of outcomes settle into one update.
                await asyncio.sleep(self.cfg.min_update_interval_s)
            self._changed.clear()
            now = loop.time()
            if self._publish_changes():
                last_sent = now
            elif now - last_sent >= heartbeat_s:
                self.hub.publish(ScoreMessage(MessageKind.HEARTBEAT, self.fleet.version, self._clock()))
                last_sent = now
