"""A registry password health cannot use stops it at start-up: exit status 2, one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.procs import ROOT, base_env, free_port


def test_an_unreadable_registry_password_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-password"
    env = {
        "CORRAL_HEALTH__PORT": str(free_port()),
        "CORRAL_HEALTH__SHARED_REGISTRY": "true",
        "CORRAL_POSTGRES__PASSWORD_FILE": str(missing),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.health"],
        env=base_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    prefix = "corral-health: configuration error:"
    lines = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, done.stderr
    assert "postgres.password_file" in lines[0] and "No such file or directory" in lines[0]
