"""The configuration loader: defaults, file, environment overrides and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError, load_config


def test_defaults_work_without_a_file() -> None:
    cfg = load_config(env={})
    assert cfg.router.port == 50051
    assert cfg.cache.port == 50052
    assert cfg.health.port == 50053
    assert cfg.prewarm.port == 50054


def test_file_then_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("router:\n  port: 6000\n  grace_s: 3\n")
    cfg = load_config(path, env={"CORRAL_ROUTER__PORT": "7000"})
    assert cfg.router.port == 7000
    assert cfg.router.grace_s == 3


def test_env_for_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'cache\.nonsense'"):
        load_config(env={"CORRAL_CACHE__NONSENSE": "1"})


def test_out_of_range_port_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'router\.port'"):
        load_config(env={"CORRAL_ROUTER__PORT": "70000"})
