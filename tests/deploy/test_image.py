"""The image environment, built as the Dockerfile builds it, runs every service of the compose file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis
import yaml
from corral.v1 import router_service_pb2, router_service_pb2_grpc

from devstack.redis import RedisServer
from scripts.make_compose_keys import make_compose_keys, write_passwords
from services.cache.exact_store import EVENTS_CHANNEL, EVENTS_USER
from tests.deploy.conftest import IMAGE_VENV, ImageEnv
from tests.helpers.polling import wait_for
from tests.helpers.procs import ROOT, free_port

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
_READY = re.compile(r"serving on [^:\s]+:(\d+)|listening on [^:\s]+:(\d+)")
# The ports the Corral services listen on inside the compose network.
_COMPOSE_PORTS = {"router": 50051, "cache": 50052, "health": 50053, "prewarm": 50054}
# Where compose mounts deploy/compose/secrets/ (the files `make compose-keys` writes).
_COMPOSE_SECRETS = "/etc/corral/secrets"


def _instructions(stage_args: list[str]) -> list[Any]:
    return [json.loads(args) if args.startswith("[") else shlex.split(args) for args in stage_args]


def test_dockerfile_stages_are_what_the_replay_assumes(image_env: ImageEnv) -> None:
    builder, final = image_env.builder, image_env.final
    assert builder.image == final.image, "both stages must share the base (the venv links to its python)"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", final.image)
    assert f"--from=builder {IMAGE_VENV} {IMAGE_VENV}" in final.all("COPY")
    env = " ".join(final.all("ENV"))
    assert f"PATH={IMAGE_VENV}/bin:$PATH" in env and "PYTHONUNBUFFERED=1" in env
    assert final.all("USER") and final.all("USER")[-1].split(":")[0] not in ("0", "root")
    assert _instructions(final.all("ENTRYPOINT")) == [["python", "-m"]]
    assert _instructions(final.all("CMD")) == [["services.router"]]
    # NOTE: no compilers or package installs in the final stage: it only adds a user and copies the venv.
    for run in final.all("RUN"):
        assert not re.search(r"\b(apt-get|apk|pip|gcc|make)\b", run), run


def test_installed_package_ships_its_data_files(image_env: ImageEnv) -> None:
    site = next((image_env.venv / "lib").glob("python3.*/site-packages"))
    assert sorted(p.name for p in (site / "services" / "cache" / "migrations").glob("*.sql"))
    assert (site / "sim" / "profiles" / "original-cluster.yaml").is_file()
    assert (site / "corral" / "v1" / "router_service_pb2.py").is_file()
    # Nothing is imported from the checkout: the image has no source tree.
    code = "import services, sim, corral; print(services.__file__, sim.__file__, corral.__file__)"
    out = subprocess.run(
        [str(image_env.python), "-c", code],
        cwd=image_env.workdir,
        env=_base_env({}),
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(ROOT) not in out.stdout and str(site) in out.stdout


def test_installed_migrations_apply_to_an_empty_database(image_env: ImageEnv, fresh_database: str) -> None:
    # NOTE: the cache applies them at start (cache.migrate_on_start); this runs the same runner directly.
    code = "import sys; from devstack import migrate; print(migrate.apply(sys.argv[1]))"
    done = subprocess.run(
        [str(image_env.python), "-c", code, fresh_database],
        cwd=image_env.workdir,
        env=_base_env({}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = len(list((ROOT / "services" / "cache" / "migrations").glob("*.sql")))
    assert _applied_migrations(fresh_database) == expected


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    """What a container gets: the image's ENV (no PYTHONPATH, no checkout) plus the service's env."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env |= {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    env |= {"CORRAL_LOGGING__LEVEL": "WARNING"}
    return env | dict(extra)


class Container:
    """One compose service run as a process from the image environment."""

    def __init__(self, image_env: ImageEnv, name: str, args: list[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.args = [str(image_env.python), "-m", *args]
        self.cwd = image_env.workdir
        self.env = _base_env(env)
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self, timeout_s: float = 60.0) -> int:
        """Starts it and returns the port from its readiness line."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while line := await self.proc.stdout.readline():
                self.output.append(line.decode(errors="replace"))
                if match := _READY.search(self.output[-1]):
                    asyncio.get_running_loop().create_task(self._drain())
                    return int(match.group(1) or match.group(2))
        raise AssertionError(f"{self.name} exited before it was ready:\n{''.join(self.output[-30:])}")

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.output.append(line.decode(errors="replace"))

    async def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, as `docker stop` sends, and the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def _healthcheck(image_env: ImageEnv, service: str, port: int) -> tuple[int, str]:
    """Runs the compose service's own healthcheck command against the given port."""
    test = list(COMPOSE[service]["healthcheck"]["test"])
    assert test[:2] == ["CMD", "python"], test
    args = [re.sub(r"^127\.0\.0\.1:\d+$", f"127.0.0.1:{port}", arg) for arg in test[2:]]
    proc = await asyncio.create_subprocess_exec(
        str(image_env.python),
        *args,
        cwd=image_env.workdir,
        env=_base_env({}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _command(service: str, replace: Mapping[str, str]) -> list[str]:
    return [replace.get(arg, arg) for arg in COMPOSE[service]["command"]]


def _applied_migrations(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        present = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not present or not present[0]:
            return 0
        row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0


@pytest.fixture
async def containers() -> AsyncIterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in reversed(started):
        await container.kill()


async def test_compose_services_start_serve_and_stop_from_the_image_env(
    image_env: ImageEnv,
    redis_server: RedisServer,
    fresh_database: str,
    containers: list[Container],
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in ("sim-1", "health", "cache", "router", "router_http", "prewarm")}
    node = f"http://127.0.0.1:{ports['sim-1']}"
    # The compose environment, with compose's host names pointed at this machine's processes.
    peers = {f"{name}:{port}": f"127.0.0.1:{ports[name]}" for name, port in _COMPOSE_PORTS.items()}
    # NOTE: compose substitutes ${VAR:-default} before the container sees it; this runs with the defaults.
    envs = {
        name: {
            k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", peers.get(str(v), str(v)))
            for k, v in COMPOSE[name]["environment"].items()
        }
        for name in _COMPOSE_PORTS
    }
    # Authentication is on by default in compose: the keys from the same script, at their mounted paths;
    # the cache gets the stores and their password files (Redis's is the session Redis's), health PostgreSQL's
    # (the fleet registry).
    assert all(env["CORRAL_AUTH__ENABLED"] == "true" for env in envs.values())
    secrets = tmp_path / "secrets"
    keys = make_compose_keys(secrets)
    write_passwords(secrets)
    assert redis_server.password is not None
    (secrets / "redis-password").write_text(redis_server.password, encoding="utf-8")
    # NOTE: the router's near cache signs in as the session Redis's subscribe-only user, as in compose.
    (secrets / "redis-events-password").write_text(redis_server.users[EVENTS_USER][0], encoding="utf-8")
    mounted = {
        "CORRAL_AUTH__KEYS_FILE": keys.keys_file,
        "CORRAL_AUTH__SERVICE_KEY_FILE": keys.service_key_file,
        "CORRAL_REDIS__PASSWORD_FILE": secrets / "redis-password",
        "CORRAL_POSTGRES__PASSWORD_FILE": secrets / "postgres-password",
        "CORRAL_ROUTER__NEAR_CACHE__REDIS_PASSWORD_FILE": secrets / "redis-events-password",
    }
    for env in envs.values():
        for name, path in mounted.items():
            if name in env:
                assert env[name] == f"{_COMPOSE_SECRETS}/{path.name}", name
                env[name] = str(path)
    assert {k for k in mounted if not k.startswith("CORRAL_ROUTER__")} <= set(envs["cache"])
    assert "CORRAL_ROUTER__NEAR_CACHE__REDIS_PASSWORD_FILE" in envs["router"]
    # NOTE: the session's PostgreSQL trusts loopback connections, so the password file is sent and ignored.
    envs["cache"] |= {"CORRAL_REDIS__URL": f"redis://127.0.0.1:{redis_server.port}/0"}
    near_url = f"redis://{EVENTS_USER}@127.0.0.1:{redis_server.port}/0"
    assert envs["router"]["CORRAL_ROUTER__NEAR_CACHE__REDIS_URL"] == f"redis://{EVENTS_USER}@redis:6379/0"
    envs["router"] |= {"CORRAL_ROUTER__NEAR_CACHE__REDIS_URL": near_url}
    envs["cache"] |= {"CORRAL_POSTGRES__DSN": fresh_database}
    assert envs["health"]["CORRAL_POSTGRES__PASSWORD_FILE"] == str(secrets / "postgres-password")
    envs["health"] |= {"CORRAL_POSTGRES__DSN": fresh_database}
    env = {
        "CORRAL_CONFIG": str(ROOT / "deploy" / "compose" / "corral.yaml"),
        "CORRAL_TRACING__EXPORTER": "none",
        "CORRAL_ROUTER__HTTP_PORT": str(ports["router_http"]),
        "CORRAL_ROUTER__NODES": f"[{{node_id: ollama-1, address: '{node}'}}]",
        "CORRAL_HEALTH__NODES": f"[{{id: ollama-1, address: '{node}'}}]",
        "CORRAL_CACHE__EMBEDDER__NODE_URLS": f"['{node}']",
        "CORRAL_PREWARM__SEED_FILE": str(ROOT / "deploy" / "compose" / "seed-queries.yaml"),
    }
    for name in ("router", "cache", "health", "prewarm"):
        env |= {f"CORRAL_{name.upper()}__HOST": "127.0.0.1", f"CORRAL_{name.upper()}__PORT": str(ports[name])}
        env[f"CORRAL_{name.upper()}__METRICS_PORT"] = "0"
    for name in envs:
        envs[name] |= env

    subscribers_before = _event_subscribers(redis_server)
    sim_args = _command("sim-1", {"0.0.0.0": "127.0.0.1", "11434": str(ports["sim-1"])})
    sim = Container(image_env, "sim-1", sim_args, {})
    containers.append(sim)
    assert await sim.start() == ports["sim-1"]
    # Compose's start order: each service once the ones it depends on are healthy.
    for name in ("health", "cache", "router", "prewarm"):
        container = Container(image_env, name, _command(name, {}), envs[name])
        containers.append(container)
        assert await container.start() == ports[name], "".join(container.output[-30:])
        # NOTE: the healthcheck sends no key: grpc.health.v1 is open with authentication on.
        code, out = await _healthcheck(image_env, name, ports[name])
        assert code == 0 and "SERVING" in out, out
    await _check_router_requires_a_key(ports["router"], keys.tenant_key)
    await wait_for(
        lambda: _event_subscribers(redis_server) > subscribers_before,
        timeout_s=30,
        what="the router's near cache subscribed as the compose Redis user",
    )
    for container in reversed(containers):
        name = container.name
        assert await container.stop() == 0, f"{name}:\n{''.join(container.output[-30:])}"
        if name in _COMPOSE_PORTS:
            code, out = await _healthcheck(image_env, name, ports[name])
            assert code == 1 and "UNAVAILABLE" in out, out


def _event_subscribers(server: RedisServer) -> int:
    """How many clients listen on the cache's event channel (the routers' near caches)."""
    client = redis.Redis(host="127.0.0.1", port=server.port, password=server.password)
    try:
        counts = client.pubsub_numsub(EVENTS_CHANNEL)
    finally:
        client.close()
    return int(counts[0][1])


async def _check_router_requires_a_key(port: int, tenant_key: str) -> None:
    """A router call without a key is refused UNAUTHENTICATED; the tenant key passes authentication."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = router_service_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListModels(router_service_pb2.ListModelsRequest(), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
        try:
            await stub.ListModels(
                router_service_pb2.ListModelsRequest(),
                metadata=(("authorization", f"Bearer {tenant_key}"),),
                timeout=30,
            )
        except grpc.aio.AioRpcError as exc:
            auth_codes = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            assert exc.code() not in auth_codes, exc.details()
