"""The migration runner: once-only, race-free, and strict about edited or misnamed files."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from devstack import migrate
from devstack.postgres import PostgresServer


def _fresh_database(server: PostgresServer, name: str) -> str:
    with psycopg.connect(server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.dsn_for(name)


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def test_concurrent_apply_runs_each_migration_once(postgres_server: PostgresServer) -> None:
    dsn = _fresh_database(postgres_server, "migrate_race")
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        results.append(migrate.apply(dsn))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [], [], [m.path.name for m in migrate.discover()]]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert rows == [(m.version, m.name) for m in migrate.discover()]


def test_migrations_apply_in_order_and_a_failure_applies_nothing(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    dsn = _fresh_database(postgres_server, "migrate_order")
    directory = _write(
        tmp_path,
        {
            "0002_second.sql": "INSERT INTO t VALUES (2);",
            "0001_first.sql": "CREATE TABLE t (n int); INSERT INTO t VALUES (1);",
        },
    )
    assert migrate.apply(dsn, directory) == ["0001_first.sql", "0002_second.sql"]

    _write(directory, {"0003_ok.sql": "INSERT INTO t VALUES (3);", "0004_bad.sql": "SELEC nonsense;"})
    with pytest.raises(psycopg.errors.SyntaxError):
        migrate.apply(dsn, directory)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (2,)


def test_an_edited_migration_is_refused(postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = _fresh_database(postgres_server, "migrate_edit")
    directory = _write(tmp_path, {"0001_first.sql": "CREATE TABLE t (n int);"})
    migrate.apply(dsn, directory)
    _write(directory, {"0001_first.sql": "CREATE TABLE t (n bigint);"})
    with pytest.raises(migrate.MigrationError, match=r"0001_first\.sql: changed after it was applied"):
        migrate.apply(dsn, directory)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_short.sql": "SELECT 1;"}, r"1_short\.sql: migration file names must look like"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"}, "version 0001 already used"),
    ],
)
def test_malformed_migration_files_are_named(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(migrate.MigrationError, match=message):
        migrate.discover(_write(tmp_path, files))


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(migrate.MigrationError, match="migrations directory not found"):
        migrate.discover(tmp_path / "nope")


def test_shipped_migrations_are_well_formed() -> None:
    versions = [migration.version for migration in migrate.discover()]
    assert versions == sorted(versions) and versions[0] == 1
