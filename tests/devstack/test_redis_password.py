"""RedisServer(password=...) starts a Redis that every client must authenticate to."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from devstack.redis import RedisServer


def test_password_protected_redis(state_dir: Path) -> None:
    password = 'p@ss/word:"with" odd chars'
    with RedisServer(port=0, state_dir=state_dir, password=password) as server:
        assert server.url == f"redis://:p%40ss%2Fword%3A%22with%22%20odd%20chars@127.0.0.1:{server.port}/0"
        with redis.Redis(host="127.0.0.1", port=server.port) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        with redis.Redis(host="127.0.0.1", port=server.port, password="wrong") as wrong:
            with pytest.raises(redis.AuthenticationError):
                wrong.ping()
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
        # A restart keeps the password.
        server.restart()
        with redis.Redis(host="127.0.0.1", port=server.port, password=password) as client:
            assert client.ping()
    assert RedisServer(port=0, state_dir=state_dir).url.startswith("redis://127.0.0.1:")
