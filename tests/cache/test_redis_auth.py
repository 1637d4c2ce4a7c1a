"""The cache authenticates to a password-protected Redis, and refuses to start when it cannot.

A wrong, missing or placeholder password is a configuration error: the service exits with status 2 and
one line naming the setting, instead of serving with its exact tier silently degraded. (A Redis that
refuses the password mid-run fails open instead: tests/cache/test_fail_open.py.)
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from corral.v1 import cache_service_pb2 as pb
from corral.v1 import cache_service_pb2_grpc
from corral.v1 import common_pb2 as c

from devstack.redis import RedisServer
from services.cache.embedders import HashingEmbedder
from services.cache.engine import StoreAuthError
from services.cache.server import start_in_process
from services.common.settings import PostgresConfig, RedisConfig, SecretError, read_secret
from tests.cache.helpers import gen, lookup, make_config, store
from tests.helpers.procs import ServiceProcess, configuration_error_of, free_port

TENANT = "redis-auth"
PLACEHOLDER = "REPLACE-ME-run-python-m-scripts.make_compose_keys--kubernetes\n"


def _cache_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    """The cache pointed at the session's Redis by a URL without the password, and at no PostgreSQL."""
    return {
        "CORRAL_CACHE__PORT": "0",
        "CORRAL_REDIS__URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "CORRAL_POSTGRES__DSN": f"postgresql://corral@127.0.0.1:{free_port()}/corral",
        "CORRAL_CACHE__EMBEDDER__KIND": "hashing",
        "CORRAL_CACHE__EMBEDDER__DIMS": "384",
        **extra,
    }


def test_the_session_redis_requires_a_password(redis_server: RedisServer) -> None:
    assert redis_server.password and f":{redis_server.password}@" in redis_server.url


async def test_cache_process_uses_the_password_file(
    redis_server: RedisServer, migrated_dsn: str, tmp_path: Path
) -> None:
    assert redis_server.password is not None
    password_file = tmp_path / "redis-password"
    password_file.write_text(redis_server.password, encoding="utf-8")
    env = _cache_env(redis_server, CORRAL_REDIS__PASSWORD_FILE=str(password_file))
    env["CORRAL_POSTGRES__DSN"] = migrated_dsn
    proc = await ServiceProcess("services.cache", env=env).start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{proc.port}") as channel:
            stub = cache_service_pb2_grpc.CacheServiceStub(channel)
            assert not (await stub.Stats(pb.StatsRequest())).exact_degraded
            question = gen("Which port does Redis use?")
            assert (await stub.Store(store(TENANT, question, b"6379"))).stored_exact
            exact_only = c.CachePolicy(mode=c.CACHE_MODE_EXACT)
            reply = await stub.Lookup(lookup(TENANT, question, policy=exact_only))
            assert reply.outcome == c.CACHE_OUTCOME_EXACT_HIT
    finally:
        await proc.terminate()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("wrong", ["redis refused the password (WRONGPASS)", "redis.password_file"]),
        ("none", ["redis requires a password (NOAUTH) and none is configured", "redis.password_file"]),
        ("placeholder", ["redis.password_file", "still the example's placeholder", "make_compose_keys"]),
        ("missing", ["redis.password_file", "No such file or directory"]),
        ("both", ["redis.password and redis.password_file are both set"]),
    ],
)
def test_a_password_redis_refuses_is_a_clear_start_up_error(
    redis_server: RedisServer, tmp_path: Path, setting: str, expected: list[str]
) -> None:
    file = tmp_path / "redis-password"
    extra = {
        "wrong": {"CORRAL_REDIS__PASSWORD": "not-the-password"},
        "none": {},
        "placeholder": {"CORRAL_REDIS__PASSWORD_FILE": str(file)},
        "missing": {"CORRAL_REDIS__PASSWORD_FILE": str(tmp_path / "absent")},
        "both": {"CORRAL_REDIS__PASSWORD": "a", "CORRAL_REDIS__PASSWORD_FILE": str(file)},
    }[setting]
    file.write_text(PLACEHOLDER, encoding="utf-8")
    line = configuration_error_of("cache", _cache_env(redis_server, **extra))
    for fragment in expected:
        assert fragment in line, line
    assert not redis_server.password or redis_server.password not in line


async def test_start_in_process_raises_on_a_refused_password(redis_server: RedisServer) -> None:
    with pytest.raises(StoreAuthError, match="WRONGPASS"):
        await start_in_process(
            make_config(),
            f"redis://127.0.0.1:{redis_server.port}/0",
            f"postgresql://corral@127.0.0.1:{free_port()}/corral",
            embedder=HashingEmbedder(384),
            redis_password="not-the-password",
        )


def test_read_secret(tmp_path: Path) -> None:
    file = tmp_path / "secret"
    file.write_text("s3cret\n\n", encoding="utf-8")
    assert read_secret("redis.password", "", str(file)) == "s3cret"
    assert read_secret("redis.password", "inline", "") == "inline"
    assert read_secret("redis.password", "", "") is None
    file.write_text("\n", encoding="utf-8")
    with pytest.raises(SecretError, match=r"redis.password_file .* is empty"):
        read_secret("redis.password", "", str(file))
    for placeholder in (PLACEHOLDER, "change-me"):
        with pytest.raises(SecretError, match="placeholder"):
            read_secret("postgres.password", placeholder, "")
    # The configuration sections resolve their own settings.
    file.write_text("pw", encoding="utf-8")
    assert RedisConfig(password_file=str(file)).resolved_password() == "pw"
    assert PostgresConfig(password="pg").resolved_password() == "pg"
    assert PostgresConfig().resolved_password() is None
