"""The fleet registry in PostgreSQL: one source of truth for every health replica.

Every replica loads the `fleet_nodes` table at start and follows it with LISTEN/NOTIFY (a trigger
notifies `corral_fleet` on each change), so a node added, drained or removed through one replica
reaches every other within a notification's latency. The configured node list seeds an empty
registry once. When PostgreSQL is down the replica keeps serving its last known registry and
reloads the table when the connection returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from devstack import migrate
from services.health.registry import DuplicateNode, UnknownNode

logger = logging.getLogger(__name__)

CHANNEL = "corral_fleet"
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "cache" / "migrations"

# The longest read of the (small) registry table; past it the connection is taken for lost (say
# half-open after a network fault, where a read would otherwise wait for the kernel's TCP timeout,
# about 15 minutes) and the follower reconnects.
LOAD_TIMEOUT_S = 5.0

# libpq TCP keepalives on the registry's connections, so that a peer gone silently (a half-open
# connection) is noticed within about idle + interval x count seconds, and unacknowledged writes
# within tcp_user_timeout (milliseconds), instead of the kernel's defaults (hours and minutes).
KEEPALIVE_PARAMS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


@dataclass(frozen=True)
class StoredNode:
    """One row of the registry."""

    node_id: str
    address: str
    labels: dict[str, str]
    draining: bool


class StoreUnavailable(Exception):
    """PostgreSQL could not record a change; the caller may retry."""


class RegistryStore:
    """Reads, writes and follows the `fleet_nodes` table.

    Args:
        dsn: libpq connection string (with the password, if any).
        on_registry: Called with the whole registry after each load (start, notification, reconnect).
        connect_timeout_s: Bound of one connection attempt.
        retry_s: Pause between reconnection attempts while PostgreSQL is down.
        resync_s: The table is read again after this long without a notification (a safety net, and
            how a silently dead connection is noticed).
        load_timeout_s: Bound of one read of the table; a read that takes longer is taken for a lost
            connection (the follower reconnects).
    """

    def __init__(
        self,
        dsn: str,
        on_registry: Callable[[list[StoredNode]], None],
        connect_timeout_s: float = 2.0,
        retry_s: float = 1.0,
        resync_s: float = 10.0,
        load_timeout_s: float = LOAD_TIMEOUT_S,
    ) -> None:
        self._resync_s = resync_s
        self._load_timeout_s = load_timeout_s
        self._dsn = dsn
        self._on_registry = on_registry
        self._connect_timeout_s = connect_timeout_s
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._migrated = False

    async def start(self, seed: list[StoredNode], first_load_timeout_s: float) -> bool:
        """Seeds an empty registry, starts following it, and waits (bounded) for the first load.

        Returns:
            True when the registry was loaded from PostgreSQL; False when it was unreachable (the
            caller then starts from its seed and the follower catches up once PostgreSQL answers).
        """
        self._task = asyncio.create_task(self._follow(seed), name="health-registry-follower")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(first_load_timeout_s):
                await self.connected.wait()
        return self.connected.is_set()

    async def stop(self) -> None:
        """Stops following."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def add(self, node: StoredNode) -> None:
        """Records a new node.

        Raises:
            DuplicateNode: The registry holds the id (say added through another replica meanwhile) or
                the address already; the row is left as it was.
        """
        rows = await self._write(
            "INSERT INTO fleet_nodes (node_id, address, labels, draining) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (node_id) DO NOTHING RETURNING node_id",
            (node.node_id, node.address, Jsonb(node.labels), node.draining),
        )
        if rows == 0:
            raise DuplicateNode(f"node {node.node_id!r} is registered already")

    async def set_draining(self, node_id: str, draining: bool) -> None:
        """Records a node's drain state.

        Raises:
            UnknownNode: The registry has no such node (say removed through another replica before
                this one heard of it); nothing is written, so a removed node is never re-inserted.
        """
        rows = await self._write(
            "UPDATE fleet_nodes SET draining = %s, updated_at = now() WHERE node_id = %s RETURNING node_id",
            (draining, node_id),
        )
        if rows == 0:
            raise UnknownNode(node_id)

    async def delete(self, node_id: str) -> None:
        """Removes a node."""
        await self._write("DELETE FROM fleet_nodes WHERE node_id = %s", (node_id,))

    async def refresh(self) -> None:
        """Reads the table now, on a connection of its own, and passes it to `on_registry`.

        For a replica whose change the registry refused because another replica changed the node
        first: it shows the registry's version at once rather than at the next notification. A
        failure is only logged (the follower catches up anyway).
        """
        try:
            async with asyncio.timeout(self._connect_timeout_s * 2):
                conn = await self._connect()
                async with conn:
                    nodes = await self._load(conn)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            logger.info("could not re-read the fleet registry (%s); the follower will catch up", exc)
            return
        self._on_registry(nodes)

    # ---- internals ------------------------------------------------------------------------
    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        return await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout_s)),
            **KEEPALIVE_PARAMS,
        )

    async def _write(self, sql: str, params: tuple[object, ...]) -> int:
        """Runs one change; returns the number of rows it touched."""
        try:
            async with asyncio.timeout(self._connect_timeout_s * 2):
                conn = await self._connect()
                async with conn:
                    cur = await conn.execute(sql, params)
                    return cur.rowcount
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateNode(f"the address is registered already as another node: {exc}") from None
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"the fleet registry is unavailable: {exc}") from exc

    async def _read(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> list[StoredNode]:
        """Loads the table, bounded: a read slower than `load_timeout_s` means the connection is lost."""
        try:
            async with asyncio.timeout(self._load_timeout_s):
                return await self._load(conn)
        except TimeoutError:
            raise ConnectionError(
                f"reading the registry took over {self._load_timeout_s:g} s; reconnecting"
            ) from None

    async def _load(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> list[StoredNode]:
        cur = await conn.execute(
            "SELECT node_id, address, labels, draining FROM fleet_nodes ORDER BY node_id"
        )
        rows = await cur.fetchall()
        return [
            StoredNode(str(r[0]), str(r[1]), dict(r[2]) if isinstance(r[2], Mapping) else {}, bool(r[3]))
            for r in rows
        ]

    async def _seed(self, conn: psycopg.AsyncConnection[tuple[object, ...]], seed: list[StoredNode]) -> None:
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO fleet_registry_seed (id) VALUES (1) ON CONFLICT (id) DO NOTHING RETURNING id"
            )
            if await cur.fetchone() is None:
                return
            for node in seed:
                await conn.execute(
                    "INSERT INTO fleet_nodes (node_id, address, labels, draining) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (node.node_id, node.address, Jsonb(node.labels), node.draining),
                )
            logger.info("seeded the fleet registry with %d configured nodes", len(seed))

    async def _follow(self, seed: list[StoredNode]) -> None:
        while True:
            try:
                if not self._migrated:
                    await asyncio.to_thread(
                        migrate.apply, self._dsn, MIGRATIONS_DIR, max(1, int(self._connect_timeout_s))
                    )
                    self._migrated = True
                conn = await self._connect()
                async with conn:
                    await self._seed(conn, seed)
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # NOTE: load after LISTEN, so a change between the two is not missed.
                    self._on_registry(await self._read(conn))
                    if not self.connected.is_set():
                        logger.info("following the fleet registry in PostgreSQL")
                    self.connected.set()
                    while True:
                        # NOTE: the connection is locked while notifies() runs, so the generator ends
                        # at the first notification (or after resync_s) before the table is read.
                        # Notifications only say "something changed"; the table is small, and reading
                        # it whole makes every replica converge whatever it missed.
                        async for _ in conn.notifies(timeout=self._resync_s, stop_after=1):
                            pass
                        self._on_registry(await self._read(conn))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NOTE: degrade, don't cascade: keep the last known registry.
                if self.connected.is_set():
                    logger.warning("lost the fleet registry (%s); serving the last known one", exc)
                else:
                    logger.warning("the fleet registry is unreachable (%s); retrying", exc)
                self.connected.clear()
            await asyncio.sleep(self._retry_s)
