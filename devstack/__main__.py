"""Command line: `python -m devstack up|down|status [--state-dir D]`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from devstack import config, migrate
from devstack._process import DevstackError, check_port, read_json, write_json
from devstack.postgres import PostgresServer
from devstack.redis import RedisServer


def _port(raw: str) -> int:
    try:
        return check_port(int(raw), "port")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a TCP port number, got {raw!r}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir", help=f"state folder (env {config.STATE_DIR_ENV}; default .state/ at the repo root)"
    )
    parser.add_argument(
        "--redis-port",
        type=_port,
        help=f"Redis port (env {config.REDIS_PORT_ENV}; default {config.DEFAULT_REDIS_PORT})",
    )
    parser.add_argument(
        "--pg-port",
        type=_port,
        help=f"PostgreSQL port (env {config.PG_PORT_ENV}; default {config.DEFAULT_PG_PORT})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the launcher does")
    return parser


def _stack_path(state: Path) -> Path:
    return state / "stack.json"


def up(state: Path, redis_port: int, pg_port: int) -> dict[str, Any]:
    """Start Redis and PostgreSQL (or adopt running ones), migrate, and write stack.json."""
    started = time.monotonic()
    redis_server = RedisServer(
        port=redis_port,
        state_dir=state,
        maxmemory=config.env_str(config.REDIS_MAXMEMORY_ENV, config.DEFAULT_REDIS_MAXMEMORY),
    ).start()
    postgres_server = PostgresServer(port=pg_port, state_dir=state).start()
    applied = migrate.apply(postgres_server.dsn)
    stack = {
        "state_dir": str(state),
        "redis": {"pid": redis_server.pid, "port": redis_server.port, "url": redis_server.url},
        "postgres": {"pid": postgres_server.pid, "port": postgres_server.port, "dsn": postgres_server.dsn},
        "migrations_applied": applied,
        "startup_s": round(time.monotonic() - started, 3),
    }
    write_json(_stack_path(state), stack)
    return stack


def down(state: Path) -> None:
    """Stop PostgreSQL and Redis started from this state folder."""
    PostgresServer(state_dir=state).stop()
    RedisServer(state_dir=state).stop()
    _stack_path(state).unlink(missing_ok=True)


def status(state: Path) -> tuple[bool, dict[str, Any]]:
    """Whether both servers recorded in stack.json are up, and what was recorded."""
    stack = read_json(_stack_path(state)) or {}
    redis_up = RedisServer(state_dir=state).attach()
    postgres_server = PostgresServer(state_dir=state)
    postgres_up = postgres_server.attach()
    if postgres_up:
        try:
            with psycopg.connect(postgres_server.dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            postgres_up = False
    stack["redis_running"], stack["postgres_running"] = redis_up, postgres_up
    return redis_up and postgres_up, stack


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        state = config.state_dir(args.state_dir)
        if args.command == "up":
            redis_port = args.redis_port
            if redis_port is None:
                redis_port = config.port_from_env(config.REDIS_PORT_ENV, config.DEFAULT_REDIS_PORT)
            pg_port = args.pg_port
            if pg_port is None:
                pg_port = config.port_from_env(config.PG_PORT_ENV, config.DEFAULT_PG_PORT)
            stack = up(state, redis_port, pg_port)
            print(f"redis      pid {stack['redis']['pid']:<8} {stack['redis']['url']}")
            print(f"postgres   pid {stack['postgres']['pid']:<8} {stack['postgres']['dsn']}")
            print(f"migrations applied now: {', '.join(stack['migrations_applied']) or 'none (up to date)'}")
            print(f"state      {_stack_path(state)}  ({stack['startup_s']}s)")
            return 0
        if args.command == "down":
            down(state)
            print(f"stopped the stack in {state}")
            return 0
        healthy, stack = status(state)
        for name in ("redis", "postgres"):
            where = (stack.get(name) or {}).get("url") or (stack.get(name) or {}).get("dsn") or "-"
            print(f"{name:<10} {'running' if stack[f'{name}_running'] else 'stopped':<8} {where}")
        return 0 if healthy else 3
    except (DevstackError, migrate.MigrationError, ValueError, psycopg.Error) as exc:
        print(f"devstack {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
