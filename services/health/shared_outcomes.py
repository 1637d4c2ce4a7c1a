"""Passive scores shared by every health replica: the routers' outcomes travel through PostgreSQL NOTIFY.

A router reports its attempts to one health replica. With several replicas, each would score the
nodes from its own routers' outcomes only: a node failing for one router's traffic would be ejected
by that replica alone, and the routers following another replica would keep sending to it. With
the shared registry on (`health.shared_registry`), every replica publishes the outcomes its routers
report on the `corral_outcomes` channel, batched every `share_interval_s` into notifications under
PostgreSQL's 8,000-byte payload limit, and folds in those of the other replicas under their
reporters' names (prefixed with the publishing replica), so error rates, ejections and in-flight
counts cover every router on every replica.

NOTIFY rather than a table: outcomes are a stream of recent facts, not state; a replica that was
away has nothing to catch up on (its scores rebuild from the next outcomes and probes). When
PostgreSQL is down, outcomes are dropped and counted (each replica keeps scoring its own) and
sharing resumes when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from services.health.stats import Outcome, OutcomeKind, outcome_problem
from services.health.store import KEEPALIVE_PARAMS

logger = logging.getLogger(__name__)

CHANNEL = "corral_outcomes"
# NOTE: PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; the margin covers the envelope.
MAX_PAYLOAD_BYTES = 7_500
# Outcomes kept while PostgreSQL is away; older ones are dropped first.
MAX_PENDING = 20_000

Apply = Callable[[str, Sequence[Outcome]], object]


def encode(origin: str, pending: Sequence[tuple[str, Outcome]]) -> list[str]:
    """The notification payloads carrying `pending` (reporter, outcome) pairs, each under the limit."""
    payloads: list[str] = []
    head = json.dumps({"origin": origin, "outcomes": []})[:-2]
    rows: list[str] = []
    size = len(head) + 2
    for reporter, o in pending:
        row = json.dumps(
            [reporter, o.node_id, o.model, o.kind.value, o.latency_ms, o.ttft_ms, o.tokens_per_s, o.inflight],
            separators=(",", ":"),
        )
        if rows and size + len(row) + 1 > MAX_PAYLOAD_BYTES:
            payloads.append(head + ",".join(rows) + "]}")
            rows, size = [], len(head) + 2
        rows.append(row)
        size += len(row) + 1
    if rows:
        payloads.append(head + ",".join(rows) + "]}")
    return payloads


def decode(payload: str) -> tuple[str, list[tuple[str, Outcome]]]:
    """The origin and the (reporter, outcome) pairs of a payload.

    Raises:
        ValueError: The payload is not one `encode` writes (it is skipped, not trusted).
    """
    doc: Any = json.loads(payload)
    if not isinstance(doc, dict) or not isinstance(doc.get("origin"), str):
        raise ValueError("no origin")
    out: list[tuple[str, Outcome]] = []
    for row in doc.get("outcomes", []):
        reporter, node_id, model, kind, latency, ttft, tps, inflight = row
        outcome = Outcome(
            str(node_id),
            str(model),
            OutcomeKind(kind),
            float(latency),
            float(ttft),
            float(tps),
            int(inflight),
        )
        problem = outcome_problem(outcome.latency_ms, outcome.ttft_ms, outcome.tokens_per_s, outcome.inflight)
        if problem:
            raise ValueError(problem)
        out.append((str(reporter), outcome))
    return doc["origin"], out


class OutcomeShare:
    """Publishes this replica's outcomes and folds in the other replicas'.

    Args:
        dsn: libpq connection string of the registry's PostgreSQL.
        apply: Folds in outcomes of one (prefixed) reporter; called for the other replicas' only.
        interval_s: Longest time an outcome waits before it is published.
        retry_s: Pause between reconnections while PostgreSQL is down.
        connect_timeout_s: Bound of one connection attempt or one publication.
    """

    def __init__(
        self,
        dsn: str,
        apply: Apply,
        interval_s: float = 0.1,
        retry_s: float = 1.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._dsn = dsn
        self._apply = apply
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._connect_timeout_s = connect_timeout_s
        self._pending: list[tuple[str, Outcome]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()
        self.published = 0
        self.received = 0
        self.dropped = 0

    def publish(self, reporter: str, outcomes: Sequence[Outcome]) -> None:
        """Queues outcomes a router reported to this replica (sent within `interval_s`)."""
        self._pending.extend((reporter, o) for o in outcomes)
        excess = len(self._pending) - MAX_PENDING
        if excess > 0:
            del self._pending[:excess]
            self.dropped += excess
        self._wake.set()

    async def start(self) -> None:
        """Starts listening and publishing (returns at once)."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="health-outcomes-listen"),
            asyncio.create_task(self._publish(), name="health-outcomes-publish"),
        ]

    async def stop(self) -> None:
        """Stops both loops; outcomes not yet published are dropped."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        return await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout_s)),
            **KEEPALIVE_PARAMS,
        )

    async def _listen(self) -> None:
        while True:
            try:
                conn = await self._connect()
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    async for note in conn.notifies():
                        self._received(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NOTE: degrade: each replica keeps scoring its own routers.
                if self.listening.is_set():
                    logger.warning("lost the shared outcomes channel (%s); reconnecting", exc)
                self.listening.clear()
            await asyncio.sleep(self._retry_s)

    def _received(self, payload: str) -> None:
        try:
            origin, pairs = decode(payload)
        except (ValueError, TypeError, KeyError) as exc:
            logger.debug("ignored a malformed shared outcome payload: %s", exc)
            return
        if origin == self.origin:
            return
        by_reporter: dict[str, list[Outcome]] = {}
        for reporter, outcome in pairs:
            by_reporter.setdefault(f"{origin}/{reporter}", []).append(outcome)
        for reporter, outcomes in by_reporter.items():
            self._apply(reporter, outcomes)
        self.received += len(pairs)

    async def _publish(self) -> None:
        conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await asyncio.sleep(self._interval_s)  # NOTE: gathers what arrives meanwhile into one batch.
                batch, self._pending = self._pending, []
                if not batch:
                    continue
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect()
                    async with asyncio.timeout(self._connect_timeout_s):
                        for payload in encode(self.origin, batch):
                            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    self.published += len(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.dropped += len(batch)
                    logger.info("could not share %d outcomes (%s); dropped", len(batch), exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    await asyncio.sleep(self._retry_s)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
