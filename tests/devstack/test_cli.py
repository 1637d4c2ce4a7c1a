"""The `python -m devstack` command line and the launcher's handling of bad input."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from devstack import config, migrate
from devstack._process import DevstackError, PortInUseError, pid_alive
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]


def _devstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_up_is_idempotent_and_down_stops_everything(state_dir: Path) -> None:
    ports = ["--state-dir", str(state_dir), "--redis-port", "0", "--pg-port", "0"]
    first = _devstack("up", *ports)
    assert first.returncode == 0, first.stderr
    stack = json.loads((state_dir / "stack.json").read_text())
    assert stack["migrations_applied"] == [m.path.name for m in migrate.discover()]
    try:
        second = _devstack("up", *ports)
        assert second.returncode == 0, second.stderr
        again = json.loads((state_dir / "stack.json").read_text())
        assert again["redis"] == stack["redis"] and again["postgres"] == stack["postgres"]
        assert again["migrations_applied"] == []

        assert redis.Redis.from_url(stack["redis"]["url"]).ping()
        with psycopg.connect(stack["postgres"]["dsn"]) as conn:
            applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
            assert applied == (len(migrate.discover()),)
        status = _devstack("status", "--state-dir", str(state_dir))
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        down = _devstack("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert not pid_alive(stack["redis"]["pid"]) and not pid_alive(stack["postgres"]["pid"])
    assert not (state_dir / "stack.json").exists()
    assert _devstack("status", "--state-dir", str(state_dir)).returncode == 3


def test_bad_port_is_named() -> None:
    result = _devstack("up", "--redis-port", "seventy")
    assert result.returncode == 2 and "--redis-port" in result.stderr


def test_bad_port_from_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.PG_PORT_ENV, "99999")
    with pytest.raises(ValueError, match=config.PG_PORT_ENV):
        config.port_from_env(config.PG_PORT_ENV, config.DEFAULT_PG_PORT)
    with pytest.raises(ValueError, match="port"):
        RedisServer(port=70000)
    with pytest.raises(ValueError, match="port"):
        PostgresServer(port=-1)


def test_a_taken_fixed_port_is_a_clear_error(state_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(taken)):
            RedisServer(port=taken, state_dir=state_dir).start()


def test_state_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(config.STATE_DIR_ENV, str(tmp_path))
    assert config.state_dir() == tmp_path.resolve()
    monkeypatch.delenv(config.STATE_DIR_ENV)
    assert config.state_dir() == REPO_ROOT / ".state"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_unreachable_state_folder_is_a_clear_error(state_dir: Path) -> None:
    # The fixture's folder is 0700 (mkdtemp); the launcher opens only the state folder itself.
    expected = rf"cannot traverse {re.escape(str(state_dir))} \(mode drwx------"
    with pytest.raises(DevstackError, match=expected):
        PostgresServer(state_dir=state_dir / "inner").start()
