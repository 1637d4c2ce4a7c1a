"""The fleet registry's writes on a real PostgreSQL: adds never overwrite, drains never re-insert."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from devstack import migrate
from services.health.config import HealthConfig
from services.health.engine import HealthEngine
from services.health.prober import Prober
from services.health.registry import DuplicateNode, UnknownNode
from services.health.store import MIGRATIONS_DIR, RegistryStore, StoredNode


@pytest.fixture
def fleet_dsn(fresh_database: str) -> str:
    """A fresh, migrated database of its own (the registry is one table per database)."""
    migrate.apply(fresh_database, MIGRATIONS_DIR)
    return fresh_database


async def _rows(dsn: str) -> dict[str, tuple[str, bool]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT node_id, address, draining FROM fleet_nodes")
        return {str(r[0]): (str(r[1]), bool(r[2])) for r in await cur.fetchall()}


def _store(dsn: str) -> RegistryStore:
    return RegistryStore(dsn, lambda nodes: None)


async def test_a_second_add_of_the_same_id_is_refused_and_does_not_overwrite(fleet_dsn: str) -> None:
    a, b = _store(fleet_dsn), _store(fleet_dsn)
    await a.add(StoredNode("n1", "http://127.0.0.1:9", {"zone": "a"}, False))
    with pytest.raises(DuplicateNode):
        await b.add(StoredNode("n1", "http://127.0.0.1:10", {"zone": "b"}, False))
    assert await _rows(fleet_dsn) == {"n1": ("http://127.0.0.1:9", False)}


async def test_an_add_of_a_taken_address_is_refused(fleet_dsn: str) -> None:
    store = _store(fleet_dsn)
    await store.add(StoredNode("n1", "http://127.0.0.1:9", {}, False))
    with pytest.raises(DuplicateNode):
        await store.add(StoredNode("n2", "http://127.0.0.1:9", {}, False))
    assert set(await _rows(fleet_dsn)) == {"n1"}


async def test_drain_and_undrain_update_the_row(fleet_dsn: str) -> None:
    store = _store(fleet_dsn)
    await store.add(StoredNode("n1", "http://127.0.0.1:9", {}, False))
    await store.set_draining("n1", True)
    assert await _rows(fleet_dsn) == {"n1": ("http://127.0.0.1:9", True)}
    await store.set_draining("n1", False)
    assert await _rows(fleet_dsn) == {"n1": ("http://127.0.0.1:9", False)}


async def test_a_drain_after_a_removal_elsewhere_does_not_re_insert_the_node(fleet_dsn: str) -> None:
    a, b = _store(fleet_dsn), _store(fleet_dsn)
    await a.add(StoredNode("n1", "http://127.0.0.1:9", {}, False))
    await a.delete("n1")
    with pytest.raises(UnknownNode):
        await b.set_draining("n1", True)
    assert await _rows(fleet_dsn) == {}


async def test_a_registry_read_that_hangs_is_taken_for_a_lost_connection(
    fleet_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[list[StoredNode]] = []
    store = RegistryStore(fleet_dsn, loads.append, retry_s=0.05, resync_s=0.1, load_timeout_s=0.3)
    real_load = store._load
    reads = 0
    connected_on_reread: list[bool] = []
    reread = asyncio.Event()

    async def load(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> list[StoredNode]:
        nonlocal reads
        reads += 1
        if reads == 2:
            # NOTE: a half-open connection: the read never answers.
            await asyncio.Event().wait()
        if reads == 3:
            connected_on_reread.append(store.connected.is_set())
            reread.set()
        return await real_load(conn)

    monkeypatch.setattr(store, "_load", load)
    assert await store.start([], first_load_timeout_s=5.0)
    try:
        async with asyncio.timeout(5.0):
            await reread.wait()
            await store.connected.wait()
    finally:
        await store.stop()
    # NOTE: the hung read was given up, the connection taken for lost, and the table read again.
    assert connected_on_reread == [False]
    assert len(loads) >= 2


async def test_registry_connections_use_tcp_keepalives(
    fleet_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, object]] = []
    real_connect = psycopg.AsyncConnection.connect

    async def connect(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return await real_connect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    await _store(fleet_dsn).add(StoredNode("n1", "http://127.0.0.1:9", {}, False))
    assert seen
    assert seen[0]["keepalives"] == 1
    for name in ("keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"):
        assert int(seen[0][name]) > 0  # type: ignore[call-overload]


async def test_a_replica_whose_change_is_refused_shows_the_registry_at_once(fleet_dsn: str) -> None:
    cfg = HealthConfig(port=0, min_update_interval_s=0, probe_timeout_s=0.1)
    a, b = HealthEngine(cfg, Prober(0.1)), HealthEngine(cfg, Prober(0.1))
    # NOTE: not started: no follower, so B hears of A's changes only through its own refused writes.
    a.use_store(fleet_dsn)
    b.use_store(fleet_dsn)
    try:
        await a.admin_add("n1", "http://127.0.0.1:9", {"zone": "a"})
        with pytest.raises(DuplicateNode):
            await b.admin_add("n1", "http://127.0.0.1:10", {"zone": "b"})
        # NOTE: B's own add is undone and A's node shows in its place.
        assert b.fleet.registry.get("n1").address == "http://127.0.0.1:9"
        await a.admin_remove("n1")
        with pytest.raises(UnknownNode):
            await b.admin_drain("n1", True)
        assert "n1" not in b.fleet.registry
        assert await _rows(fleet_dsn) == {}
    finally:
        await a.stop()
        await b.stop()
