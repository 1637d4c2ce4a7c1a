"""Leader election: one prewarm replica acts (runs, pulls), the others stand by and take over.

The leader holds a PostgreSQL session advisory lock on a connection of its own. PostgreSQL releases
the lock when that session ends, whatever ends it: the process exiting or being killed (the kernel
closes its socket), the connection breaking, or the leader hanging. For the last, the session sets
`idle_session_timeout` to the lease: a leader that sends nothing for `lease_s` (frozen, stopped,
partitioned from the database) has its session ended by the server, so a standby gets the lock
without trusting the old leader to notice. The leader confirms the lock every `lease_s / 4`; it acts
only while its last confirmation was *sent* less than `lease_s` ago (`holds()`), which ends before
the server's timer (that one starts after the server answered), so an old leader and a new one never
act at the same time. Standbys try the lock every second or so and report who holds it.

NOTE: PostgreSQL rather than a Redis lease: the lock lives exactly as long as the session, so a
crashed leader costs no lease expiry and nothing needs renewing against clock drift; the stack's
Redis is a cache (LRU eviction, no persistence) that may drop a lease key under memory pressure;
and PostgreSQL is already where the shared fleet registry lives.

Without leader election (`prewarm.leader_election: false`) `SoleLeader` stands in: the replica is
always the leader, as a single-replica setup needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import psycopg

from services.prewarm.ports import Maintainer, MaintenanceResult, NodeClient, PeerError, Seeder, SeedResult
from services.prewarm.required import PullClient
from services.prewarm.seeds import SeedQuery

logger = logging.getLogger(__name__)

# The advisory lock's key ("pwrm"), below 2^31 so that pg_locks shows it as classid 0, objid KEY.
LOCK_KEY = 0x7077726D
LOCK_CLASS_ID = 0
LOCK_OBJSUBID = 1  # a single bigint key

STOPPING = "the service is stopping"

_HOLDER_SQL = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = %s"
)
_HELD_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = %s)"
)


def replica_name() -> str:
    """This replica as other replicas see it: host name (the pod's name in Kubernetes) and pid."""
    return f"corral-prewarm {socket.gethostname()} pid {os.getpid()}"[:63]


class Leadership(Protocol):
    """What the app needs of an election."""

    name: str
    on_change: list[Callable[[bool], None]]

    def holds(self) -> bool:
        """True while this replica may act."""

    @property
    def leader(self) -> str:
        """Who leads, as far as this replica knows ("" when unknown)."""

    @property
    def saw_other_leader(self) -> bool:
        """True once another replica was seen holding the leadership."""

    async def run(self) -> None:
        """Takes part in the election until cancelled."""


class SoleLeader:
    """No election: this replica is the leader from the start (`prewarm.leader_election: false`)."""

    saw_other_leader = False

    def __init__(self) -> None:
        self.name = replica_name()
        self.on_change: list[Callable[[bool], None]] = []

    def holds(self) -> bool:
        return True

    @property
    def leader(self) -> str:
        return self.name

    async def run(self) -> None:
        logger.info(
            "leader election is off (prewarm.leader_election: false): this replica acts as the only "
            "prewarm leader; run exactly one replica"
        )
        for callback in self.on_change:
            callback(True)
        await asyncio.Event().wait()


class LostLeadership(Exception):
    """The lock could not be confirmed."""


class LeaderElection:
    """Holds or waits for the prewarm advisory lock in PostgreSQL.

    Args:
        dsn: libpq connection string (with the password, if any).
        lease_s: How long a confirmation of the lock stays good; also the session's idle timeout.
        retry_s: Pause between two attempts to take the lock (standby), or to reconnect.
        clock: Monotonic clock in seconds.
        name: How other replicas see this one (its session's application_name); default: host and pid.
    """

    def __init__(
        self,
        dsn: str,
        *,
        lease_s: float = 10.0,
        retry_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self._dsn = dsn
        self._lease_s = lease_s
        self._confirm_s = lease_s / 4
        self._retry_s = retry_s if retry_s is not None else min(1.0, lease_s / 4)
        self._clock = clock
        self._is_leader = False
        self._valid_until = 0.0
        self._leader = ""
        self._saw_other = False
        self._logged_standby_for: str | None = None
        self._last_error = ""
        self._warned_old_server = False
        self.name = name or replica_name()
        self.on_change: list[Callable[[bool], None]] = []

    # ---- the state the app reads --------------------------------------------------------------
    def holds(self) -> bool:
        """True while this replica is the leader and its last confirmation is within the lease."""
        return self._is_leader and self._clock() < self._valid_until

    @property
    def leader(self) -> str:
        return self._leader

    @property
    def saw_other_leader(self) -> bool:
        return self._saw_other

    # ---- the election ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Connects, takes the lock or stands by, and starts over when the connection is lost."""
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NOTE: degrade, don't cascade: stand by and reconnect.
                    self._step_down(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
                await asyncio.sleep(self._retry_s)
        finally:
            self._step_down(STOPPING)

    async def _connect(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        timeout = max(1, int(self._lease_s / 2))
        return await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=timeout,
            application_name=self.name,
            # NOTE: a database gone silent is noticed by the confirmations' timeouts anyway; keepalives
            # make the kernel drop such a socket too instead of keeping it for hours.
            keepalives=1,
            keepalives_idle=max(1, int(self._lease_s)),
            keepalives_interval=max(1, int(self._confirm_s)),
            keepalives_count=3,
            tcp_user_timeout=int(self._lease_s * 1000),
        )

    async def _query(self, conn: psycopg.AsyncConnection[tuple[Any, ...]], sql: str, *params: Any) -> Any:
        async with asyncio.timeout(self._confirm_s):
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def _session(self) -> None:
        async with asyncio.timeout(self._lease_s):
            conn = await self._connect()
        try:
            # NOTE: the server ends this session once it has been idle for the lease, which releases the
            # lock of a leader that hangs; an active replica is never idle that long.
            try:
                idle_ms = f"{int(self._lease_s * 1000)}"
                await self._query(conn, "SELECT set_config('idle_session_timeout', %s, false)", idle_ms)
            except psycopg.errors.UndefinedObject:
                # NOTE: PostgreSQL before 14. The leader's own bound still stops it, but its session (and
                # the lock) then lasts until the connection drops, which keepalives bound for a dead
                # host, not for a hung process.
                if not self._warned_old_server:
                    self._warned_old_server = True
                    logger.warning(
                        "PostgreSQL has no idle_session_timeout (before 14): a hung prewarm leader keeps "
                        "the lock until its connection drops"
                    )
            while True:
                sent = self._clock()
                if await self._query(conn, "SELECT pg_try_advisory_lock(%s)", LOCK_KEY):
                    self._valid_until = sent + self._lease_s
                    self._become_leader()
                    await self._hold(conn)
                holder = await self._query(conn, _HOLDER_SQL, LOCK_CLASS_ID, LOCK_KEY, LOCK_OBJSUBID)
                self._stand_by(str(holder) if holder else "")
                await asyncio.sleep(self._retry_s)
        finally:
            # NOTE: closing the session is what releases the lock; a close that hangs is abandoned
            # (the server's idle timeout ends the session then).
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._confirm_s):
                    await conn.close()

    async def _hold(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        """Confirms the lock every lease / 4 until that fails (raises)."""
        while True:
            await asyncio.sleep(self._confirm_s)
            sent = self._clock()
            try:
                held = await self._query(conn, _HELD_SQL, LOCK_CLASS_ID, LOCK_KEY, LOCK_OBJSUBID)
            except TimeoutError:
                message = f"PostgreSQL did not confirm the lock within {self._confirm_s:g} s"
                raise LostLeadership(message) from None
            if not held:
                raise LostLeadership("the session no longer holds the lock")
            self._valid_until = sent + self._lease_s

    # ---- transitions ----------------------------------------------------------------------------
    def _become_leader(self) -> None:
        self._is_leader = True
        self._leader = self.name
        self._last_error = ""
        self._logged_standby_for = None
        logger.info(
            "prewarm leader: this replica (%s) holds the leader lock in PostgreSQL and acts", self.name
        )
        self._notify(True)

    def _stand_by(self, holder: str) -> None:
        self._leader = holder
        self._last_error = ""
        if holder:
            self._saw_other = True
        if holder != self._logged_standby_for:
            self._logged_standby_for = holder
            logger.info(
                "prewarm standby: %s leads; this replica (%s) stands by and takes over if it goes away",
                holder or "another replica",
                self.name,
            )

    def _step_down(self, reason: str) -> None:
        self._logged_standby_for = None
        if not self._is_leader:
            self._leader = ""
            # NOTE: once per distinct failure, not at every retry while PostgreSQL is down.
            if reason != self._last_error and reason != STOPPING:
                self._last_error = reason
                logger.warning(
                    "prewarm standby: no leader can be elected through PostgreSQL (%s); "
                    "nothing acts until it answers",
                    reason,
                )
            return
        self._is_leader = False
        self._valid_until = 0.0
        self._leader = ""
        if reason == STOPPING:
            logger.info("prewarm leader: this replica hands over the leadership: %s", reason)
        else:
            logger.warning("prewarm leader: this replica lost the leadership (%s); it stops acting", reason)
        self._notify(False)

    def _notify(self, leading: bool) -> None:
        for callback in self.on_change:
            try:
                callback(leading)
            except Exception:
                logger.exception("a leadership listener failed")


# ---- the guard before each action ---------------------------------------------------------------
NOT_LEADER = "this replica is not the prewarm leader (any more): it stands by and does nothing"


class NotLeader(PeerError):
    """An action was refused because this replica does not hold the leadership now."""

    def __init__(self) -> None:
        super().__init__(NOT_LEADER, unreachable=True)


class GuardedNodes:
    """A NodeClient that checks the leadership before each warm-up."""

    def __init__(self, inner: NodeClient, holds: Callable[[], bool]) -> None:
        self._inner = inner
        self._holds = holds

    async def warm(
        self, address: str, model: str, *, embedding: bool, keep_alive_s: float, timeout_s: float
    ) -> None:
        if not self._holds():
            raise NotLeader()
        await self._inner.warm(
            address, model, embedding=embedding, keep_alive_s=keep_alive_s, timeout_s=timeout_s
        )


class GuardedSeeder:
    """A Seeder that checks the leadership before each query."""

    def __init__(self, inner: Seeder, holds: Callable[[], bool]) -> None:
        self._inner = inner
        self._holds = holds

    async def seed(self, model: str, query: SeedQuery, *, refresh: bool, timeout_s: float) -> SeedResult:
        if not self._holds():
            raise NotLeader()
        return await self._inner.seed(model, query, refresh=refresh, timeout_s=timeout_s)


class GuardedMaintainer:
    """A Maintainer that checks the leadership before asking the cache."""

    def __init__(self, inner: Maintainer, holds: Callable[[], bool]) -> None:
        self._inner = inner
        self._holds = holds

    async def run_maintenance(self, *, max_age_s: float, vacuum: bool, timeout_s: float) -> MaintenanceResult:
        if not self._holds():
            raise NotLeader()
        return await self._inner.run_maintenance(max_age_s=max_age_s, vacuum=vacuum, timeout_s=timeout_s)

    async def store_seeded(
        self, model: str, query: SeedQuery, result: SeedResult, tenants: Sequence[str], *, timeout_s: float
    ) -> int:
        if not self._holds():
            raise NotLeader()
        return await self._inner.store_seeded(model, query, result, tenants, timeout_s=timeout_s)


class GuardedPullClient(PullClient):
    """A PullClient that checks the leadership before each required-model pull."""

    def __init__(self, holds: Callable[[], bool]) -> None:
        super().__init__()
        self._holds = holds

    async def pull(
        self, address: str, model: str, progress: Callable[[int, int], None], *, read_timeout_s: float
    ) -> None:
        if not self._holds():
            raise NotLeader()
        await super().pull(address, model, progress, read_timeout_s=read_timeout_s)
