"""The stack's process table after a reboot: recorded PIDs reused by other processes are not ours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack._process import cmdline
from scripts import stack


def _table(state: Path, processes: dict[str, int]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "processes.json").write_text(json.dumps({"processes": processes}))


@pytest.fixture
def lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line reads as the stack's router (`python ... -m services.router`)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "services.router"])
    # NOTE: the command line shows in /proc only once the child has exec'd.
    deadline = time.monotonic() + 10
    while not cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_reused_pid_of_another_program_is_not_a_running_stack(tmp_path: Path) -> None:
    # NOTE: this test's own PID stands for an unrelated process that took a recorded PID.
    _table(tmp_path, {"router": os.getpid()})
    assert stack._running(tmp_path) == []


def test_a_pid_of_another_user_is_not_a_running_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def kill(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    _table(tmp_path, {"router": os.getpid()})
    assert stack._running(tmp_path) == []
    assert not stack._alive(os.getpid())


def test_a_recorded_process_of_ours_is_running(tmp_path: Path, lookalike: subprocess.Popen[bytes]) -> None:
    _table(tmp_path, {"router": lookalike.pid, "cache": lookalike.pid})
    assert stack._running(tmp_path) == ["router"]


def test_down_leaves_a_process_that_is_not_ours_alone(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _table(tmp_path, {"router": sleeper.pid})
        stack.down(tmp_path)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
