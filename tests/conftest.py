"""Shared pytest fixtures: one Redis and one migrated PostgreSQL per test session."""

from __future__ import annotations

import secrets
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack import migrate
from devstack.config import make_temp_state_dir
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer
from services.cache.exact_store import EVENTS_ACL, EVENTS_USER

# NOTE: the simulator-node factory is shared by the sim and prewarm suites.
pytest_plugins = ["tests.helpers.simnodes"]


@pytest.fixture(scope="session")
def stack_state_dir() -> Iterator[Path]:
    """A state folder for the session's servers, removed at the end."""
    state = make_temp_state_dir("corral-test-")
    yield state
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(stack_state_dir: Path) -> Iterator[RedisServer]:
    """A Redis on a free port, shared by the session: do not stop it (start your own instead).

    It requires a password, as the deployments' Redis does: `url` carries it, `password` is it. As
    there, it also has the near caches' subscribe-only user (`RedisServer.user_url(EVENTS_USER)`).
    """
    users = {EVENTS_USER: (secrets.token_urlsafe(24), EVENTS_ACL)}
    with RedisServer(
        port=0, state_dir=stack_state_dir, password=secrets.token_urlsafe(24), users=users
    ) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(stack_state_dir: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL + pgvector on a free port, shared by the session: do not stop it."""
    with PostgresServer(port=0, state_dir=stack_state_dir) as server:
        yield server


@pytest.fixture(scope="session")
def migrated_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of the session's `corral` database with every migration applied."""
    migrate.apply(postgres_server.dsn)
    return postgres_server.dsn


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a new, empty database on the session's PostgreSQL, dropped afterwards."""
    database = f"corral_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    yield postgres_server.dsn_for(database)
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
