"""A registry password health cannot use stops it at start-up: exit status 2, one line naming it."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.procs import configuration_error_of, free_port


def test_an_unreadable_registry_password_file_is_a_configuration_error(tmp_path: Path) -> None:
    env = {
        "CORRAL_HEALTH__PORT": str(free_port()),
        "CORRAL_HEALTH__SHARED_REGISTRY": "true",
        "CORRAL_POSTGRES__PASSWORD_FILE": str(tmp_path / "no-such-password"),
    }
    line = configuration_error_of("health", env)
    assert "postgres.password_file" in line and "No such file or directory" in line
