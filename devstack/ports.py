"""TCP ports for local servers, handed out so that two callers can never get the same one.

Why: the usual trick, binding port 0, closing the socket and passing the number to a child
process, leaves a window between the close and the child's bind. Any process can take the port in
that window. The kernel hands the ports of its ephemeral range to every outgoing connection, so the
suite's own client connections can take it too. Two test runs or two stacks on one machine can be
given the same number. The child then fails with "Address already in use". gRPC servers are worse:
they set SO_REUSEPORT, so a second one binds the same port without an error and takes half the
calls.

Guarantees of `allocate`, `allocate_many` and `allocate_block`:

- **Outside the ephemeral range.** Ports come from 20000 up to just below the kernel's ephemeral
  range (`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by default on Linux), or from above
  it when there is no room below. Outgoing connections therefore never take them. When /proc
  cannot be read, the Linux default is assumed. 20000-32767 is also outside the range that BSD,
  macOS and Windows use (49152-65535).
- **Locked across processes.** Each port handed out is locked with a POSIX record lock on byte
  `port` of one shared file, `/tmp/corral-ports.lock`. The lock is held until `release` or
  until the process exits, so no other process that uses this module gets the same port at the same
  time, whether it is another pytest run, another stack or another CI job on the machine. The kernel
  drops the locks of a process that dies, even after SIGKILL, so no stale lock survives it.
- **Free right now.** A port that another program has bound on 127.0.0.1, or on all addresses, is
  skipped. The check binds without SO_REUSEADDR, so a port with connections in TIME_WAIT is skipped
  too.
- **Never twice in one process.** A port is handed out at most once per process, even after
  `release`. POSIX locks do not conflict within one process, so this module keeps its own record.

What is left: a program that does not use this module and binds a fixed port in this range can
still take a port between the check and the child's bind. Callers that start a child on an allocated
port treat "address already in use" as a reason to retry on a new port (`mentions_port_in_use`).

NOTE: one lock file with byte-range locks rather than one lock file per port: a test session hands
out hundreds of ports, and one open descriptor per port would eat into the open-files limit.
Nothing else in the process may open and close the lock file, because closing any descriptor of a
file drops all of the process's POSIX locks on it. Only this module opens it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import re
import socket
import tempfile
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
FLOOR = 20_000
"""The lowest port handed out (well above the ports that development servers use by default)."""

_MIN_SPAN = 1_000
_LINUX_EPHEMERAL = (32_768, 60_999)
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_IN_USE = re.compile(r"already in use|errno 98\b|eaddrinuse|failed to bind to address", re.I)

_mutex = threading.Lock()
_handed_out: set[int] = set()
_locked: set[int] = set()
_lock_fd: int | None = None
_cursor: int | None = None


class PortsExhaustedError(RuntimeError):
    """No free port (or block of ports) was left in the range."""


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (first, last); the Linux default when /proc is unreadable."""
    try:
        first, last = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return _LINUX_EPHEMERAL
    return first, last


def port_range() -> range:
    """The ports this module hands out: below the ephemeral range, else above it."""
    first, last = ephemeral_range()
    below = range(FLOOR, first)
    above = range(max(last + 1, FLOOR), 65_536)
    if len(below) >= _MIN_SPAN:
        return below
    if len(above) >= _MIN_SPAN:
        return above
    # NOTE: an ephemeral range that covers nearly everything; the locks and the bind check still
    # hold, only outgoing connections may now collide, and the callers' retry covers that.
    logger.warning("ephemeral range %s-%s leaves no room; allocating from %s-65535", first, last, FLOOR)
    return range(FLOOR, 65_536)


def lock_file_path() -> Path:
    """The file whose bytes are locked, one byte per port: /tmp/corral-ports.lock."""
    # NOTE: ports are a machine-wide resource, so the lock file is too: /tmp rather than $TMPDIR,
    # which CI runners often set per job (two jobs would then never see each other's locks).
    shared = Path("/tmp")
    return (shared if shared.is_dir() else Path(tempfile.gettempdir())) / "corral-ports.lock"


def _open_shared(path: Path) -> int:
    """Opens the shared lock file, creating it writable for every user when it is missing."""
    flags = os.O_RDWR | os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        pass
    # NOTE: O_CREAT only when the file is missing: with fs.protected_regular, opening another
    # user's file in the sticky /tmp with O_CREAT fails even when it exists and is writable.
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return os.open(path, flags)
    # NOTE: the umask usually removes the write bits of others; every user must be able to lock.
    os.fchmod(fd, 0o666)
    return fd


def _open_lock_file() -> int:
    global _lock_fd
    if _lock_fd is None:
        path = lock_file_path()
        try:
            _lock_fd = _open_shared(path)
        except PermissionError:
            # NOTE: another user's file that we may not write: keep a file of our own (the bind
            # check still keeps us off the ports that user's servers hold).
            own = path.with_name(f"corral-ports-{os.getuid()}.lock")
            _lock_fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    return _lock_fd


def _try_lock(port: int) -> bool:
    try:
        fcntl.lockf(_open_lock_file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port, os.SEEK_SET)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    _locked.add(port)
    return True


def _unlock(port: int) -> None:
    if port in _locked:
        fcntl.lockf(_open_lock_file(), fcntl.LOCK_UN, 1, port, os.SEEK_SET)
        _locked.discard(port)


def is_bindable(port: int) -> bool:
    """True when a listening socket could bind 127.0.0.1:`port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def _take(port: int) -> bool:
    """Locks `port` when nobody has it; the caller holds `_mutex`."""
    if port in _handed_out or not _try_lock(port):
        return False
    if not is_bindable(port):
        _unlock(port)
        return False
    return True


def _candidates(span: range, count: int) -> list[int]:
    """Every start of a block of `count` in `span`, from where the last search stopped."""
    global _cursor
    starts = range(span.start, span.stop - count + 1)
    if not starts:
        return []
    if _cursor is None or _cursor not in starts:
        # NOTE: a random start spreads concurrent processes over the range instead of having them
        # all contend for its first ports.
        _cursor = random.choice(starts)
    offset = starts.index(_cursor)
    return [*starts[offset:], *starts[:offset]]


def allocate_block(count: int) -> tuple[int, ...]:
    """`count` consecutive ports, each locked for this process and free right now.

    Raises:
        PortsExhaustedError: no such block is left in the range.
    """
    global _cursor
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    span = port_range()
    with _mutex:
        for start in _candidates(span, count):
            taken: list[int] = []
            for port in range(start, start + count):
                if not _take(port):
                    break
                taken.append(port)
            if len(taken) == count:
                _handed_out.update(taken)
                _cursor = start + count if start + count < span.stop else span.start
                return tuple(taken)
            for port in taken:
                _unlock(port)
    where = f"{span.start}-{span.stop - 1}"
    raise PortsExhaustedError(f"no {count} consecutive free ports in {where} (locks: {lock_file_path()})")


def allocate() -> int:
    """One port, locked for this process and free right now (see the module's guarantees)."""
    return allocate_block(1)[0]


def allocate_many(count: int) -> list[int]:
    """`count` ports, not necessarily consecutive."""
    return [allocate() for _ in range(count)]


def try_reserve(port: int) -> bool:
    """Locks one given port for this process when it is free and nobody else holds it."""
    with _mutex:
        if not _take(port):
            return False
        _handed_out.add(port)
        return True


def release(*ports: int) -> None:
    """Drops the locks on `ports`, so other processes may use them (this one will not again)."""
    with _mutex:
        for port in ports:
            _unlock(port)


def mentions_port_in_use(text: str) -> bool:
    """True when a server's output says that it could not bind its port (EADDRINUSE).

    Covers Python's "[Errno 98] Address already in use", asyncio/uvloop's "address already in
    use", Redis and PostgreSQL ("Address already in use"), devstack's `PortInUseError` ("port N is
    already in use") and gRPC, which only says "Failed to bind to address" (for a loopback port
    that means another process bound it first).
    """
    return _IN_USE.search(text) is not None
