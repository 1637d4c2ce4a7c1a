"""End to end: Redis and PostgreSQL through the launcher, migrations, a nearest-neighbour query."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import psycopg
import pytest
import redis
from pgvector.psycopg import register_vector

from devstack import migrate
from devstack._process import pid_alive
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer

DIMS = 768


def _unit(vector: np.ndarray) -> np.ndarray:
    unit: np.ndarray = (vector / np.linalg.norm(vector)).astype(np.float32)
    return unit


def _insert(conn: psycopg.Connection, exact_key: str, embedding: np.ndarray) -> None:
    conn.execute(
        "INSERT INTO semantic_cache (tenant, model, exact_key, prompt_text, embed_model, embedding, payload)"
        " VALUES ('acme', 'llama3', %s, %s, 'nomic-embed-text', %s, %s)",
        (exact_key, f"prompt {exact_key}", embedding, exact_key.encode()),
    )


def _nearest(conn: psycopg.Connection, query: np.ndarray, k: int) -> list[str]:
    rows = conn.execute(
        "SELECT exact_key FROM semantic_cache"
        " WHERE dims = 768 AND tenant = 'acme' AND model = 'llama3'"
        " ORDER BY embedding::vector(768) <=> %s::vector(768) LIMIT %s",
        (query, k),
    ).fetchall()
    return [row[0] for row in rows]


def test_redis_and_postgres_through_the_launcher(state_dir: Path) -> None:
    rng = np.random.default_rng(7)
    with (
        RedisServer(port=0, state_dir=state_dir) as redis_server,
        PostgresServer(port=0, state_dir=state_dir) as pg_server,
    ):
        assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
        assert pg_server.dsn == f"postgresql://corral@127.0.0.1:{pg_server.port}/corral"

        client = redis.Redis.from_url(redis_server.url)
        client.set("greeting", b"hello")
        assert client.get("greeting") == b"hello"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert client.config_get("save")["save"] == ""
        client.close()

        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        assert migrate.apply(pg_server.dsn) == [m.path.name for m in migrate.discover()]
        assert migrate.apply(pg_server.dsn) == []

        base = [_unit(rng.normal(size=DIMS)) for _ in range(5)]
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            register_vector(conn)
            for index, vector in enumerate(base):
                _insert(conn, f"key-{index}", vector)
            query = _unit(base[3] + 0.05 * rng.normal(size=DIMS))
            assert _nearest(conn, query, k=2)[0] == "key-3"

            # The query shape above is the one the partial HNSW index serves.
            conn.execute("SET enable_seqscan = off")
            plan = "\n".join(
                row[0]
                for row in conn.execute(
                    "EXPLAIN SELECT exact_key FROM semantic_cache WHERE dims = 768"
                    " ORDER BY embedding::vector(768) <=> %s::vector(768) LIMIT 3",
                    (query,),
                )
            )
            assert "semantic_cache_hnsw_768" in plan

            with pytest.raises(psycopg.errors.CheckViolation):
                _insert(conn, "odd-size", _unit(rng.normal(size=100)))
            with pytest.raises(psycopg.errors.UniqueViolation):
                _insert(conn, "key-0", base[0])

        redis_pid, pg_pid = redis_server.pid, pg_server.pid
        assert redis_pid is not None and pg_pid is not None

    assert not pid_alive(redis_pid)
    assert not pid_alive(pg_pid)


def test_restart_keeps_port_and_data_after_sigkill_and_sigstop(state_dir: Path) -> None:
    pg_server = PostgresServer(port=0, state_dir=state_dir).start()
    redis_server = RedisServer(port=0, state_dir=state_dir).start()
    try:
        migrate.apply(pg_server.dsn)
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            register_vector(conn)
            _insert(conn, "kept", _unit(np.ones(DIMS)))
        pg_port, redis_port = pg_server.port, redis_server.port

        assert pg_server.pid is not None and redis_server.pid is not None
        os.kill(pg_server.pid, signal.SIGKILL)
        os.kill(redis_server.pid, signal.SIGSTOP)
        pg_server.restart()
        redis_server.restart()

        assert (pg_server.port, redis_server.port) == (pg_port, redis_port)
        assert redis.Redis.from_url(redis_server.url).ping()
        assert migrate.apply(pg_server.dsn) == []
        with psycopg.connect(pg_server.dsn) as conn:
            assert conn.execute("SELECT exact_key FROM semantic_cache").fetchall() == [("kept",)]

        # A stopped (SIGSTOP) PostgreSQL is stopped too, backends included.
        old_pid = pg_server.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGSTOP)
        pg_server.stop()
        assert not pid_alive(old_pid)
    finally:
        pg_server.stop()
        redis_server.stop()


def test_attach_to_a_running_server_from_another_object(state_dir: Path) -> None:
    first = RedisServer(port=0, state_dir=state_dir).start()
    try:
        second = RedisServer(port=0, state_dir=state_dir)
        assert second.attach()
        assert (second.pid, second.port) == (first.pid, first.port)
        second.stop()
        assert first.pid is not None and not pid_alive(first.pid)
    finally:
        first.stop()


def test_several_stacks_run_side_by_side(state_dir: Path) -> None:
    with RedisServer(state_dir=state_dir / "a") as one, RedisServer(state_dir=state_dir / "b") as two:
        assert one.port != two.port
        assert redis.Redis.from_url(one.url).ping() and redis.Redis.from_url(two.url).ping()
