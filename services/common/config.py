"""Loads Corral's one YAML configuration file with CORRAL_* environment overrides."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from services.cache.config import CacheConfig
from services.common.auth import AuthConfig
from services.common.settings import (
    ClientTlsConfig,
    LoggingConfig,
    PostgresConfig,
    RedisConfig,
    Section,
    TracingConfig,
)
from services.health.config import HealthConfig
from services.prewarm.config import PrewarmConfig
from services.router.config import RouterConfig

ENV_PREFIX = "CORRAL_"
CONFIG_ENV = "CORRAL_CONFIG"


class CorralConfig(Section):
    """The whole configuration: one section per service plus the shared ones."""

    router: RouterConfig = RouterConfig()
    cache: CacheConfig = CacheConfig()
    health: HealthConfig = HealthConfig()
    prewarm: PrewarmConfig = PrewarmConfig()
    redis: RedisConfig = RedisConfig()
    postgres: PostgresConfig = PostgresConfig()
    logging: LoggingConfig = LoggingConfig()
    tracing: TracingConfig = TracingConfig()
    auth: AuthConfig = AuthConfig()
    peer_tls: ClientTlsConfig = ClientTlsConfig()


class ConfigError(Exception):
    """The configuration cannot be used; the message names the problem in one line."""


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Applies `CORRAL_<SECTION>__<KEY>[__<SUBKEY>]=value` overrides; values are parsed as YAML."""
    for name, text in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {name}: not a valid YAML value") from exc
        node = raw
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: '{key}' is not a section")
            node = child
        node[path[-1]] = value


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{where}'"
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{source}: '{where}': {err['msg']}{extra}"


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> CorralConfig:
    """Reads the configuration.

    Args:
        path: The YAML file; None uses $CORRAL_CONFIG, and with neither the defaults apply.
        env: Environment for overrides (defaults to os.environ).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing or malformed, a key is unknown or a value has the wrong type.
    """
    env = os.environ if env is None else env
    chosen = path if path is not None else env.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    source = "defaults"
    if chosen is not None:
        file = Path(chosen)
        source = str(file)
        if not file.is_file():
            raise ConfigError(f"config file {file} not found")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{file}: not valid YAML{line}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the top level must be a mapping of sections")
        raw = loaded
    _apply_env(raw, env)
    try:
        return CorralConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config_or_exit(service: str, path: str | None = None) -> CorralConfig:
    """Loads the configuration, or prints one line naming the problem and exits with status 2."""
    try:
        return load_config(path)
    except ConfigError as exc:
        configuration_error(service, str(exc))


def configuration_error(service: str, message: str) -> NoReturn:
    """One line naming the problem on stderr, then exit status 2 (any configuration a service cannot use)."""
    print(f"corral-{service}: configuration error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
