"""Starts and stops the chaos system's Redis or PostgreSQL from a child process.

NOTE: starting PostgreSQL as its own OS user means fork() without exec fast paths; forked from a
process with live gRPC threads (the test runner), the child has been seen to die with SIGSEGV
before exec. A short-lived child without gRPC does the fork instead.

Usage: python -m tests.chaos.stores {redis|postgres} {start|stop} STATE_DIR PORT
"""

from __future__ import annotations

import sys

from devstack.postgres import PostgresServer
from devstack.redis import RedisServer

# The chaos system's Redis requires a password, as the deployments' does (harness.Store.url carries it).
REDIS_PASSWORD = "chaos-redis-password"


def main(argv: list[str]) -> int:
    """Runs one action; exit 0 on success, 1 with the error on stderr."""
    kind, action, state, port = argv
    server: RedisServer | PostgresServer
    if kind == "redis":
        server = RedisServer(int(port), state, password=REDIS_PASSWORD)
    else:
        server = PostgresServer(int(port), state)
    try:
        if action == "start":
            server.start()
        else:
            server.stop()
    except Exception as exc:
        print(f"{kind} {action}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
