"""Launcher defaults and their environment overrides, read in one place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from devstack._process import check_port

REPO_ROOT = Path(__file__).resolve().parent.parent

STATE_DIR_ENV = "CORRAL_STATE_DIR"
REDIS_PORT_ENV = "CORRAL_REDIS_PORT"
PG_PORT_ENV = "CORRAL_PG_PORT"
REDIS_MAXMEMORY_ENV = "CORRAL_REDIS_MAXMEMORY"
PG_OS_USER_ENV = "CORRAL_PG_OS_USER"
PG_SHARED_BUFFERS_ENV = "CORRAL_PG_SHARED_BUFFERS"

DEFAULT_REDIS_PORT = 6390
DEFAULT_PG_PORT = 5439
DEFAULT_REDIS_MAXMEMORY = "256mb"
DEFAULT_PG_OS_USER = "corral-pg"
DEFAULT_PG_SHARED_BUFFERS = "512MB"
PG_DATABASE = "corral"
PG_ROLE = "corral"


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The state folder: `explicit`, else $CORRAL_STATE_DIR, else `.state/` at the repo root."""
    chosen = explicit if explicit is not None else os.environ.get(STATE_DIR_ENV) or REPO_ROOT / ".state"
    return Path(chosen).expanduser().resolve()


def port_from_env(name: str, default: int) -> int:
    """Read a port from the environment, with an error naming the variable on bad input."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a TCP port number, got {raw!r}") from None
    return check_port(value, name)


def pg_os_user() -> str:
    """The system user that runs PostgreSQL when the launcher runs as root."""
    return env_str(PG_OS_USER_ENV, DEFAULT_PG_OS_USER)


def pg_shared_buffers() -> str:
    """PostgreSQL's shared_buffers for the local server (a size such as `512MB`)."""
    return env_str(PG_SHARED_BUFFERS_ENV, DEFAULT_PG_SHARED_BUFFERS)


def env_str(name: str, default: str) -> str:
    """A string setting from the environment, or `default` when unset or empty."""
    return os.environ.get(name) or default


def make_temp_state_dir(prefix: str = "corral-state-") -> Path:
    """A new private state folder under the system temp dir (the caller removes it).

    Unlike pytest's `tmp_path` (under a 0700 per-user folder) it is reachable by the PostgreSQL
    system user when running as root.
    """
    return Path(tempfile.mkdtemp(prefix=prefix)).resolve()
