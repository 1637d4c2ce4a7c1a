"""Secrets fail closed: none is tracked by git, placeholders stop start-up naming what to set, and every
client of a store gets its password from the same place as the store."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_exceptions
import yaml

from devstack.redis import find_redis_server
from scripts.make_compose_keys import COMPOSE_PASSWORDS, KUBERNETES_PASSWORDS, main
from services.cache.exact_store import EVENTS_ACL, EVENTS_CHANNEL, EVENTS_USER
from services.common.auth import AuthConfig, AuthSetupError, build_authenticator, service_key
from services.common.settings import PostgresConfig, RedisConfig, SecretError
from tests.deploy.render import (
    EXAMPLE_OVERLAY,
    RenderError,
    by_kind,
    compose_config,
    compose_shell,
    copy_kubernetes,
    kustomize,
    pod_templates,
)
from tests.helpers.polling import wait_for
from tests.helpers.procs import ROOT, free_port

OVERLAY_SECRETS = ROOT / "deploy" / "kubernetes" / EXAMPLE_OVERLAY / "secrets"
COMPOSE_SECRETS = ROOT / "deploy" / "compose" / "secrets"
# secret file in the overlay -> (Secret, key)
OVERLAY_FILES = {
    "api-keys.yaml": ("corral-api-keys", "api-keys.yaml"),
    "service-key": ("corral-service-key", "service-key"),
    "redis-password": ("corral-redis", "password"),
    "redis-events-password": ("corral-redis-events", "password"),
    "postgres-password": ("corral-postgres", "password"),
}
# Store -> the pods that may hold its password: the store and its clients. The router holds only the
# password of Redis's subscribe-only user (its near cache), never one that reads or writes answers.
STORE_SECRETS = {
    "corral-redis": {"redis", "cache"},
    "corral-redis-events": {"redis", "router"},
    "corral-postgres": {"postgres", "cache", "health", "prewarm"},
}


def _shell_rules() -> str:
    """EVENTS_ACL as the deployments' shell commands write it: a channel pattern quoted (`&` is a shell
    operator)."""
    return " ".join(f'"{rule}"' if rule.startswith("&") else rule for rule in EVENTS_ACL.split())


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def _secret_value(rendered: list[dict[str, Any]], name: str, key: str) -> str:
    (secret,) = [s for n, s in by_kind(rendered, "Secret").items() if n.rsplit("-", 1)[0] == name]
    return base64.b64decode(secret["data"][key]).decode()


def _check_secret(template: dict[str, Any]) -> dict[str, Any]:
    (init,) = [c for c in template["spec"].get("initContainers", []) if c["name"] == "check-secret"]
    return init


def _run_check(init: dict[str, Any], secret_file: Path) -> subprocess.CompletedProcess[str]:
    """Runs a check-secret init container's script with its environment, reading `secret_file`."""
    env = {e["name"]: e["value"] for e in init["env"]} | {"SECRET_FILE": str(secret_file)}
    return subprocess.run(
        [*init["command"], *init["args"]],
        env=env | {"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_no_real_secret_is_tracked_and_the_real_files_are_ignored() -> None:
    tracked = _git("ls-files", "--", str(OVERLAY_SECRETS), str(COMPOSE_SECRETS)).stdout.split()
    names = sorted(Path(p).relative_to("deploy").as_posix() for p in tracked)
    assert names == sorted(
        [
            "compose/secrets/.gitignore",
            "compose/secrets/README.md",
            "kubernetes/overlays/example/secrets/.gitignore",
            "kubernetes/overlays/example/secrets/README.md",
            *(f"kubernetes/overlays/example/secrets/{name}.example" for name in OVERLAY_FILES),
        ]
    )
    real = [OVERLAY_SECRETS / name for name in OVERLAY_FILES]
    real += [COMPOSE_SECRETS / name for name in ("api-keys.yaml", "service-key", *COMPOSE_PASSWORDS)]
    for path in real:
        assert _git("check-ignore", "-q", str(path)).returncode == 0, f"{path} is not git-ignored"
    assert _git("check-ignore", "-q", str(OVERLAY_SECRETS / "service-key.example")).returncode == 1
    # No secret in the committed environment file either.
    settings = [line.split("=")[0] for line in (ROOT / ".env").read_text(encoding="utf-8").splitlines()]
    assert not [name for name in settings if "PASSWORD" in name or "KEY" in name]


def test_example_overlay_does_not_build_without_its_secret_files(tmp_path: Path) -> None:
    copy = copy_kubernetes(tmp_path, placeholders=False)
    with pytest.raises(RenderError) as refused:
        kustomize(copy / EXAMPLE_OVERLAY)
    message = str(refused.value)
    assert "no such file or directory" in message
    assert any(f"secrets/{name}" in message for name in OVERLAY_FILES), message


def test_placeholders_stop_the_stores_naming_what_to_set(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    templates = {
        t["metadata"]["labels"]["app.kubernetes.io/name"]: t for t in pod_templates(rendered).values()
    }
    scripts = {name: _check_secret(templates[name])["args"] for name in ("redis", "postgres")}
    assert scripts["redis"] == scripts["postgres"], "one check-secret script for both stores"
    for store, secret in (("redis", "corral-redis"), ("postgres", "corral-postgres")):
        init = _check_secret(templates[store])
        env = {e["name"]: e["value"] for e in init["env"]}
        # The file it checks is the store's own Secret, the one the store reads its password from.
        mount = next(m for m in init["volumeMounts"] if env["SECRET_FILE"].startswith(m["mountPath"] + "/"))
        volume = next(v for v in templates[store]["spec"]["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"].startswith(f"{secret}-")
        assert env["SECRET_SOURCE"] == f"secrets/{store}-password"
        assert init["securityContext"]["runAsNonRoot"] is True
        value = tmp_path / f"{store}-password"
        for text in (_secret_value(rendered, secret, "password"), "", "change-me\n"):
            value.write_text(text, encoding="utf-8")
            done = _run_check(init, value)
            assert done.returncode == 1, (store, text, done.stderr)
            assert f"Secret {secret}, key password" in done.stderr and env["SECRET_SOURCE"] in done.stderr
            assert "make_compose_keys --kubernetes" in done.stderr
        assert _run_check(init, tmp_path / "missing").returncode == 1
        value.write_text("a-real-password-xyz", encoding="utf-8")
        assert _run_check(init, value).returncode == 0
    # The Corral services refuse the same placeholders at start-up (exit status 2, the setting named):
    # the keys placeholder lists no keys, the others are placeholders.
    keys = tmp_path / "api-keys.yaml"
    keys.write_text(_secret_value(rendered, "corral-api-keys", "api-keys.yaml"), encoding="utf-8")
    with pytest.raises(AuthSetupError, match="no keys are configured"):
        build_authenticator(AuthConfig(enabled=True, keys_file=str(keys)))
    key = tmp_path / "service-key"
    key.write_text(_secret_value(rendered, "corral-service-key", "service-key"), encoding="utf-8")
    with pytest.raises(AuthSetupError, match=r"auth.service_key_file .* placeholder"):
        service_key(AuthConfig(service_key_file=str(key)))
    for section, secret in ((RedisConfig, "corral-redis"), (PostgresConfig, "corral-postgres")):
        file = tmp_path / secret
        file.write_text(_secret_value(rendered, secret, "password"), encoding="utf-8")
        with pytest.raises(SecretError, match=r"password_file .* placeholder.*--kubernetes"):
            section(password_file=str(file)).resolved_password()


def test_make_compose_keys_fills_the_overlay_and_keeps_the_passwords(tmp_path: Path) -> None:
    copy = copy_kubernetes(tmp_path, placeholders=False)
    secrets = copy / EXAMPLE_OVERLAY / "secrets"
    assert main(["--kubernetes", "--out", str(secrets)]) == 0
    assert {p.name for p in secrets.iterdir() if p.suffix != ".example"} >= set(OVERLAY_FILES)
    assert not (secrets / "grafana-admin-password").exists()
    rendered = kustomize(copy / EXAMPLE_OVERLAY)
    for file, (secret, key) in OVERLAY_FILES.items():
        assert _secret_value(rendered, secret, key) == (secrets / file).read_text(encoding="utf-8")
    passwords = {name: (secrets / name).read_text(encoding="utf-8") for name in KUBERNETES_PASSWORDS}
    assert all(len(p) >= 40 and "\n" not in p for p in passwords.values())
    keys = AuthConfig(enabled=True, keys_file=str(secrets / "api-keys.yaml"))
    authenticator = build_authenticator(keys)
    assert authenticator is not None and len(authenticator) == 3
    # --force replaces the API keys, never a store password (PostgreSQL keeps the one it started with).
    assert main(["--kubernetes", "--out", str(secrets), "--force"]) == 0
    assert {name: (secrets / name).read_text(encoding="utf-8") for name in KUBERNETES_PASSWORDS} == passwords


def test_only_the_stores_the_cache_health_and_prewarm_get_the_store_passwords(
    rendered: list[dict[str, Any]],
) -> None:
    seen: dict[str, set[str]] = {name: set() for name in STORE_SECRETS}
    for template in pod_templates(rendered).values():
        pod = template["metadata"]["labels"]["app.kubernetes.io/name"]
        text = yaml.safe_dump(template["spec"])
        for secret in STORE_SECRETS:
            # NOTE: a generated Secret's name is the name and a hash suffix; corral-redis-events is
            # not corral-redis.
            if re.search(rf"\b{secret}-[a-z0-9]{{10}}\b", text):
                seen[secret].add(pod)
    assert seen == STORE_SECRETS
    # The cache reads both as files, never from an environment variable or the DSN.
    deployments = by_kind(rendered, "Deployment")
    cache = deployments["cache"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in cache["env"]}
    assert env["CORRAL_REDIS__PASSWORD_FILE"] == "/etc/corral-secrets/redis-password"
    assert env["CORRAL_POSTGRES__PASSWORD_FILE"] == "/etc/corral-secrets/postgres-password"
    assert "CORRAL_POSTGRES__DSN" not in env
    router = deployments["router"]["spec"]["template"]["spec"]["containers"][0]
    router_env = {e["name"]: e.get("value") for e in router["env"]}
    assert not [n for n in router_env if n.startswith(("CORRAL_REDIS__", "CORRAL_POSTGRES__"))]
    assert router_env["CORRAL_ROUTER__NEAR_CACHE__REDIS_URL"] == f"redis://{EVENTS_USER}@redis:6379/0"
    assert (
        router_env["CORRAL_ROUTER__NEAR_CACHE__REDIS_PASSWORD_FILE"]
        == "/etc/corral-secrets/redis-events-password"
    )
    # Redis cannot start without a password: requirepass from the mounted Secret, probes with it.
    redis = deployments["redis"]["spec"]["template"]["spec"]["containers"][0]
    assert '--requirepass "$password"' in redis["args"][0]
    assert 'password="$(cat /etc/redis-secret/password)"' in redis["args"][0]
    assert f'--user {EVENTS_USER} on ">$events" {_shell_rules()}' in redis["args"][0]
    assert "REDISCLI_AUTH" in " ".join(redis["readinessProbe"]["exec"]["command"])
    postgres = by_kind(rendered, "StatefulSet")["postgres"]["spec"]["template"]["spec"]["containers"][0]
    pg_env = {e["name"]: e for e in postgres["env"]}
    assert pg_env["POSTGRES_PASSWORD_FILE"]["value"] == "/etc/postgres-secret/password"
    assert "POSTGRES_PASSWORD" not in pg_env


def test_compose_stores_take_their_passwords_from_the_secrets_folder() -> None:
    config = compose_config(["metrics"])
    services = config["services"]
    for name in COMPOSE_PASSWORDS:
        assert Path(config["secrets"][name]["file"]) == COMPOSE_SECRETS / name
    assert [s["source"] for s in services["redis"]["secrets"]] == ["redis-password", "redis-events-password"]
    assert [s["source"] for s in services["postgres"]["secrets"]] == ["postgres-password"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    assert "POSTGRES_PASSWORD" not in services["postgres"]["environment"]
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])
    cache = services["cache"]["environment"]
    assert cache["CORRAL_REDIS__PASSWORD_FILE"] == "/etc/corral/secrets/redis-password"
    assert cache["CORRAL_POSTGRES__PASSWORD_FILE"] == "/etc/corral/secrets/postgres-password"
    assert cache["CORRAL_POSTGRES__DSN"] == "postgresql://corral@postgres:5432/corral"
    # health keeps the fleet registry in PostgreSQL: its DSN and password file, never Redis's.
    health = services["health"]["environment"]
    assert health["CORRAL_POSTGRES__PASSWORD_FILE"] == "/etc/corral/secrets/postgres-password"
    assert health["CORRAL_POSTGRES__DSN"] == "postgresql://corral@postgres:5432/corral"
    assert not [k for k in health if k.startswith("CORRAL_REDIS__")]
    # prewarm's replicas elect their leader in PostgreSQL: the same, and never Redis's either.
    prewarm = services["prewarm"]["environment"]
    assert prewarm["CORRAL_POSTGRES__PASSWORD_FILE"] == "/etc/corral/secrets/postgres-password"
    assert prewarm["CORRAL_POSTGRES__DSN"] == "postgresql://corral@postgres:5432/corral"
    assert not [k for k in prewarm if k.startswith("CORRAL_REDIS__")]
    router = services["router"]["environment"]
    assert not [k for k in router if k.startswith(("CORRAL_REDIS__", "CORRAL_POSTGRES__"))]
    assert router["CORRAL_ROUTER__NEAR_CACHE__REDIS_URL"] == f"redis://{EVENTS_USER}@redis:6379/0"
    assert (
        router["CORRAL_ROUTER__NEAR_CACHE__REDIS_PASSWORD_FILE"]
        == "/etc/corral/secrets/redis-events-password"
    )


def _compose_redis_script(tmp_path: Path) -> tuple[str, Path, Path]:
    """Compose's Redis command as a shell script reading its two secrets from `tmp_path`."""
    command = compose_config()["services"]["redis"]["command"]
    assert command[:2] == ["/bin/sh", "-c"]
    secret, events = tmp_path / "redis-password", tmp_path / "redis-events-password"
    script = compose_shell(command[2]).replace("/run/secrets/redis-password", str(secret))
    return script.replace("/run/secrets/redis-events-password", str(events)), secret, events


def _entrypoint(tmp_path: Path, body: str) -> dict[str, str]:
    """A stand-in for the image's entrypoint, first on PATH; `body` runs with the command's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    entrypoint = bin_dir / "docker-entrypoint.sh"
    entrypoint.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    entrypoint.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_compose_redis_refuses_to_start_without_its_passwords(tmp_path: Path) -> None:
    script, secret, events = _compose_redis_script(tmp_path)
    env = _entrypoint(tmp_path, 'printf "%s\\n" "$@"')
    events.write_text("ev3nts-pw\n", encoding="utf-8")
    for content in (None, ""):
        if content is not None:
            secret.write_text(content, encoding="utf-8")
        done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 1 and "redis-password is missing" in done.stderr, done
        assert "make compose-keys" in done.stderr
    secret.write_text("s3cret-pw\n", encoding="utf-8")
    for content in (None, ""):
        events.unlink(missing_ok=True)
        if content is not None:
            events.write_text(content, encoding="utf-8")
        done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 1 and "redis-events-password is missing" in done.stderr, done
    events.write_text("ev3nts-pw\n", encoding="utf-8")
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    args = done.stdout.splitlines()
    assert args[:3] == ["redis-server", "--requirepass", "s3cret-pw"]
    user = args.index("--user")
    assert args[user + 1 : user + 4] == [EVENTS_USER, "on", ">ev3nts-pw"]
    assert args[user + 4 : user + 4 + len(EVENTS_ACL.split())] == EVENTS_ACL.split()


async def test_compose_redis_command_gives_the_near_cache_user_only_the_event_channel(tmp_path: Path) -> None:
    """Compose's Redis command line run by a real redis-server (the wheel's 6.2 here, 7.4 in compose)."""
    script, secret, events = _compose_redis_script(tmp_path)
    secret.write_text("s3cret-pw", encoding="utf-8")
    events.write_text("ev3nts-pw", encoding="utf-8")
    port = free_port()
    server = find_redis_server()
    env = _entrypoint(
        tmp_path, f'shift; exec "{server}" "$@" --port {port} --bind 127.0.0.1 --dir "{tmp_path}"'
    )
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", script, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    admin = aioredis.Redis(host="127.0.0.1", port=port, password="s3cret-pw")
    near = aioredis.Redis(host="127.0.0.1", port=port, username=EVENTS_USER, password="ev3nts-pw")
    pubsub = near.pubsub()
    try:
        await wait_for(_answers(admin), timeout_s=20, what="the compose Redis command serving")
        await pubsub.subscribe(EVENTS_CHANNEL)
        assert (await pubsub.get_message(timeout=5) or {}).get("type") == "subscribe"
        assert await admin.publish(EVENTS_CHANNEL, "event") == 1
        with pytest.raises(redis_exceptions.NoPermissionError):
            await near.get("cx:any")
        with pytest.raises(redis_exceptions.NoPermissionError):
            await near.publish(EVENTS_CHANNEL, "forged")
    finally:
        await pubsub.aclose()
        await near.aclose()
        await admin.aclose()
        proc.terminate()
        await proc.wait()


def _answers(client: aioredis.Redis) -> Callable[[], Awaitable[bool]]:
    async def ping() -> bool:
        try:
            return bool(await client.ping())
        except redis_exceptions.ConnectionError:
            return False

    return ping
