"""Process helpers for the launcher: free ports, liveness, process-group shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack import ports

LOCALHOST = "127.0.0.1"


class DevstackError(RuntimeError):
    """A local server could not be started, found or stopped."""


class PortInUseError(DevstackError):
    """The server could not bind its port because another process holds it.

    Attributes:
        port: The port that was taken, when known.
    """

    def __init__(self, message: str, port: int | None = None) -> None:
        super().__init__(message)
        self.port = port


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that no other user of `devstack.ports` can get (see there)."""
    return ports.allocate()


def check_port(port: int, field: str) -> int:
    """Validate a port number, naming the offending field in the error."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{field}: expected a TCP port between 0 and 65535, got {port!r}")
    return port


def _stat_fields(pid: int) -> tuple[str, int] | None:
    """Return (state, process group) of a process from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # NOTE: the command name (field 2) may contain spaces and parentheses; split after the last ")".
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    stat = _stat_fields(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The command line of a process, or an empty list when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_our_process(pid: int, executable_name: str) -> bool:
    """True when `pid` is alive and runs `executable_name` (guards against PID reuse)."""
    args = cmdline(pid)
    if not args or not pid_alive(pid):
        return False
    # NOTE: redis-server rewrites its argv[0] to "<path> <host>:<port>".
    name = Path(args[0]).name
    return name == executable_name or name.startswith(executable_name + " ")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, found by scanning /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat_fields(int(entry))
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Poll `predicate` until it is true or the deadline passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def stop_group(
    pid: int,
    term_signal: int,
    grace_s: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Stop a server that leads its own process group, even when it is SIGSTOPped.

    Sends SIGCONT then `term_signal` to the group, waits `grace_s` for every member to exit and
    then SIGKILLs whatever is left. `proc` (when this process started the server) is reaped.
    """
    # NOTE: servers are started with start_new_session=True, so the server's PID is its group ID
    # and its workers (PostgreSQL backends) share it; a stale PID from a state file is only used
    # when it still leads its own group.
    pgid = pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) != pid:
            pgid = -1
    if pgid > 0 and group_members(pgid):
        _signal_group(pgid, signal.SIGCONT)
        _signal_group(pgid, term_signal)

    def gone() -> bool:
        if proc is not None:
            proc.poll()
        return pgid <= 0 or not group_members(pgid)

    if not wait_until(gone, grace_s, poll_s=0.02):
        _signal_group(pgid, signal.SIGKILL)
        if not wait_until(gone, 10.0):
            raise DevstackError(f"process group {pgid} did not exit after SIGKILL")
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)


def log_size(path: Path) -> int:
    """The current size of a log file (0 when it does not exist yet), for `tail(since=...)`."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail(path: Path, lines: int = 20, since: int = 0) -> str:
    """The last lines of a log file written after byte `since`, for error messages."""
    try:
        with path.open("rb") as file:
            file.seek(since)
            text = file.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a JSON object from a state file, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write a JSON state file atomically."""
    tmp_path = path.with_suffix(path.suffix + ".tmp")
    tmp_path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_path, path)
