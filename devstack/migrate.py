"""Apply ordered SQL migrations (NNNN_name.sql) once each, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack.config import REPO_ROOT

logger = logging.getLogger(__name__)

DEFAULT_MIGRATIONS_DIR = REPO_ROOT / "services" / "cache" / "migrations"

# NOTE: one fixed key for every Corral database: replicas starting together queue on it.
ADVISORY_LOCK_KEY = 0x636F7272616C  # "corral"

_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration file is malformed, duplicated, or was edited after being applied."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version, name and text."""

    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded to detect edits to applied migrations."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = DEFAULT_MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in `directory`, ordered by version; malformed names are errors."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory not found: {directory}")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration file names must look like 0001_lower_snake.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"{path}: version {version:04d} already used by {found[version].path.name}")
        found[version] = Migration(version, match["name"], path, path.read_text())
    return [found[version] for version in sorted(found)]


def apply(dsn: str, directory: Path = DEFAULT_MIGRATIONS_DIR, connect_timeout_s: int = 10) -> list[str]:
    """Apply the pending migrations in one transaction; return the file names applied.

    Safe to call from several processes at once (a transaction-scoped advisory lock serialises
    them) and any number of times (applied versions are recorded in `schema_migrations`).

    Raises:
        MigrationError: a file is malformed, or an applied file has changed since.
        psycopg.Error: the database is unreachable or a migration fails (nothing is applied).
    """
    migrations = discover(directory)
    newly_applied: list[str] = []
    with psycopg.connect(dsn, connect_timeout=connect_timeout_s) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
        conn.execute(_CREATE_TABLE)
        applied = {
            int(version): str(checksum)
            for version, checksum in conn.execute("SELECT version, checksum FROM schema_migrations")
        }
        known = {migration.version for migration in migrations}
        for version in sorted(set(applied) - known):
            # NOTE: an older replica during a rolling upgrade sees newer versions; not an error.
            logger.warning("database has migration %04d that this code does not know", version)
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name}: changed after it was applied; add a new migration instead"
                    )
                continue
            # NOTE: bytes without parameters go through the simple query protocol, which runs
            # the several statements of a file in one call.
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            newly_applied.append(migration.path.name)
    for name in newly_applied:
        logger.info("applied migration %s", name)
    return newly_applied
