"""The small interfaces the run executor needs from its adapters (nodes, router, cache, health)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.prewarm.planner import NodeView
from services.prewarm.seeds import SeedQuery


class PeerError(Exception):
    """A call to a node or a peer service failed; the message says why in one line.

    Attributes:
        unreachable: True when the peer could not be reached at all (refused, reset, no route), so
            further calls to it are pointless for now.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What the router did with a seeded query.

    Attributes:
        already_cached: True when the router answered from the cache (nothing new was stored).
        node_id: The node that generated the answer (empty on a cache hit).
        cache_outcome: The router's cache outcome name, e.g. "MISS" or "EXACT_HIT".
        answer: The router's answer, serialised as the router stores it in the cache.
        answer_type: The answer's full message type name, e.g. "corral.v1.GenerateResponse".
    """

    already_cached: bool
    node_id: str = ""
    cache_outcome: str = ""
    answer: bytes = b""
    answer_type: str = ""


@dataclass(frozen=True, slots=True)
class MaintenanceResult:
    """What cache maintenance did."""

    expired_removed: int
    vacuumed: bool
    semantic_entries: int
    duration_s: float
    backfilled: int = 0
    backfill_pending: int = 0

    def report(self) -> str:
        """One line for operators."""
        vacuum = "vacuumed and analysed the vector table" if self.vacuumed else "no vacuum"
        backfill = ""
        if self.backfilled or self.backfill_pending:
            waiting = f"{self.backfill_pending}" if self.backfill_pending >= 0 else "unknown"
            backfill = f", backfilled {self.backfilled} semantic entries ({waiting} still waiting)"
        return (
            f"removed {self.expired_removed} old semantic entries{backfill}, {vacuum}, "
            f"{self.semantic_entries} entries left ({self.duration_s * 1000:.0f} ms)"
        )


class NodeClient(Protocol):
    """Loads models on Ollama nodes."""

    async def warm(
        self, address: str, model: str, *, embedding: bool, keep_alive_s: float, timeout_s: float
    ) -> None:
        """Loads (or refreshes) a model.

        Raises:
            PeerError: The node refused, failed or did not answer in time.
        """
        ...


class Seeder(Protocol):
    """Sends seeding queries through the router at background priority."""

    async def seed(self, model: str, query: SeedQuery, *, refresh: bool, timeout_s: float) -> SeedResult:
        """Sends one query; the router stores the answer in the cache by its normal path.

        Raises:
            PeerError: The router failed or did not answer in time.
        """
        ...


class Maintainer(Protocol):
    """Runs cache maintenance, and stores seeded answers for the tenants that receive them."""

    async def run_maintenance(self, *, max_age_s: float, vacuum: bool, timeout_s: float) -> MaintenanceResult:
        """Expires old semantic entries and vacuums the vector table.

        Raises:
            PeerError: The cache failed or did not answer in time.
        """
        ...

    async def store_seeded(
        self, model: str, query: SeedQuery, result: SeedResult, tenants: Sequence[str], *, timeout_s: float
    ) -> int:
        """Stores a seeded answer in each tenant's cache, under the key the router looks it up by.

        Returns:
            How many tenants it was stored for (in the exact tier).

        Raises:
            PeerError: The cache failed or did not answer in time.
        """
        ...


class ScoreSource(Protocol):
    """The nodes as health's score stream last described them."""

    @property
    def address(self) -> str:
        """The health service's address, for messages."""
        ...

    async def current(self, wait_s: float) -> Mapping[str, NodeView] | None:
        """The current view, waiting up to wait_s for the stream to be up; None when it is not."""
        ...
