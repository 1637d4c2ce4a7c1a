"""The whole local stack as background processes: `python -m scripts.stack up|down|status`.

`up` starts Redis and PostgreSQL+pgvector (devstack), a fleet of simulated Ollama nodes and the four
services, each with its log in `<state>/logs/`, writes the generated configuration to
`<state>/corral.yaml` and the process table to `<state>/processes.json`. It returns once the stack is
ready: every gRPC service answers the standard health check with SERVING, every node and the HTTP
API answer, and the router lists the models the nodes serve. `CORRAL_<SECTION>__<KEY>` variables
from the caller's environment apply on top of the generated file, except those for the keys that
wire the stack together (ports, addresses, stores, nodes), which are refused. `down` stops
everything in reverse order (SIGTERM, so services drain) and stops Redis and PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack import config as devconfig
from devstack.__main__ import down as devstack_down
from devstack.__main__ import up as devstack_up
from devstack._process import PortInUseError, cmdline, is_our_process
from devstack.ports import allocate, allocate_block, allocate_many, mentions_port_in_use
from services.common.config import CONFIG_ENV, ENV_PREFIX, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("health", "cache", "router", "prewarm")
# The models every simulated node serves unless the caller's sim arguments name others: the defaults
# plus a thinking model (qwen3), so that tools, thinking and structured output can be tried at once.
STACK_MODELS = "llama3.2:1b,nomic-embed-text:v1.5,mistral:7b,qwen3:0.6b"
START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0
# NOTE: allocated ports are locked and outside the ephemeral range (devstack.ports), so a clash needs
# a program outside Corral to bind one first; a few attempts are plenty.
_PORT_ATTEMPTS = 4

# NOTE: the keys that wire the stack together: the ports it assigns, the stores it started and the
# nodes it runs. An override of one of them would point a service at something the stack did not
# start, or move it off the port that `up` prints.
WIRED_KEYS = (
    "redis.url",
    "postgres.dsn",
    "health.port",
    "health.nodes",
    "cache.port",
    "cache.embedder.node_urls",
    "cache.embedder.health_addr",
    "router.port",
    "router.http_port",
    "router.health_addr",
    "router.cache_addr",
    "prewarm.port",
    "prewarm.health_addr",
    "prewarm.router_addr",
    "prewarm.cache_addr",
)


class StackError(RuntimeError):
    """The stack cannot be started as asked, or did not become ready; the message says why."""


@dataclass(frozen=True)
class Ports:
    """Where each part of the stack listens.

    Attributes:
        nodes: The simulated nodes' API ports, consecutive (the simulator gives node i the first + i).
        admin: The nodes' admin ports, consecutive; empty lets the simulator choose (port + 1000).
        picked: True when the ports come from `devstack.ports`: any of them may then be replaced by
            another free one when a clash shows up at start-up.
    """

    redis: int
    postgres: int
    nodes: tuple[int, ...]
    health: int
    cache: int
    router: int
    router_http: int
    prewarm: int
    admin: tuple[int, ...] = ()
    picked: bool = False

    @staticmethod
    def free(node_count: int = 4) -> Ports:
        """Locked free loopback ports for everything (the demo and tests never assume a port is free)."""
        picked = allocate_many(7)
        return Ports(
            redis=picked[0],
            postgres=picked[1],
            health=picked[2],
            cache=picked[3],
            router=picked[4],
            router_http=picked[5],
            prewarm=picked[6],
            nodes=allocate_block(node_count),
            admin=allocate_block(node_count),
            picked=True,
        )

    @staticmethod
    def defaults() -> Ports:
        """The documented default ports (`make up`); the stores honour CORRAL_REDIS_PORT/CORRAL_PG_PORT."""
        return Ports(
            redis=devconfig.port_from_env(devconfig.REDIS_PORT_ENV, devconfig.DEFAULT_REDIS_PORT),
            postgres=devconfig.port_from_env(devconfig.PG_PORT_ENV, devconfig.DEFAULT_PG_PORT),
            nodes=(11434, 11435, 11436, 11437),
            health=50053,
            cache=50052,
            router=50051,
            router_http=11400,
            prewarm=50054,
        )

    @staticmethod
    def from_table(table: Mapping[str, Any]) -> Ports:
        """The ports recorded in a process table (returned by `up`, or read from processes.json)."""
        recorded = dict(table["ports"])
        recorded["nodes"] = tuple(recorded["nodes"])
        recorded["admin"] = tuple(recorded.get("admin", ()))
        return Ports(**recorded)

    def to_json(self) -> dict[str, Any]:
        """The ports as recorded in the process table."""
        recorded = dataclasses.asdict(self)
        del recorded["picked"]
        return recorded


def stack_config(
    ports: Ports, redis_url: str, pg_dsn: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The generated configuration of the local stack."""
    node_urls = [f"http://127.0.0.1:{port}" for port in ports.nodes]
    cfg: dict[str, Any] = {
        "redis": {"url": redis_url},
        "postgres": {"dsn": pg_dsn},
        "logging": {"level": "INFO", "json_format": True},
        "health": {
            "port": ports.health,
            "nodes": [{"id": f"node-{i + 1}", "address": url} for i, url in enumerate(node_urls)],
        },
        "cache": {
            "port": ports.cache,
            "embedder": {
                "node_urls": node_urls,
                "model": "nomic-embed-text:v1.5",
                "health_addr": f"127.0.0.1:{ports.health}",
            },
        },
        "router": {
            "port": ports.router,
            "http_port": ports.router_http,
            "health_addr": f"127.0.0.1:{ports.health}",
            "cache_addr": f"127.0.0.1:{ports.cache}",
        },
        "prewarm": {
            "port": ports.prewarm,
            "health_addr": f"127.0.0.1:{ports.health}",
            "router_addr": f"127.0.0.1:{ports.router}",
            "cache_addr": f"127.0.0.1:{ports.cache}",
        },
    }
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def env_overrides(environ: Mapping[str, str], ports: Ports) -> dict[str, str]:
    """The caller's `CORRAL_*` variables, passed on to the services (which apply them over the file).

    Raises:
        StackError: naming every variable that the stack cannot honour, and why.
    """
    passed: dict[str, str] = {}
    refused: list[str] = []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        reason = _refusal(name, ports)
        if reason is None:
            passed[name] = value
        else:
            refused.append(f"{name}: {reason}")
    if refused:
        raise StackError("cannot honour these environment variables:\n  " + "\n  ".join(refused))
    return passed


def _refusal(name: str, ports: Ports) -> str | None:
    """Why the stack cannot honour one variable, or None when it passes it on."""
    if name == CONFIG_ENV:
        return (
            "the stack writes its own configuration file (<state>/corral.yaml); "
            "override single keys with CORRAL_<SECTION>__<KEY>"
        )
    if ports.picked and name in (devconfig.REDIS_PORT_ENV, devconfig.PG_PORT_ENV):
        return "--free-ports picks the store ports"
    if "__" not in name:
        return None
    path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
    for key in WIRED_KEYS:
        wired = tuple(key.split("."))
        common = min(len(path), len(wired))
        if path[:common] == wired[:common]:
            return f"the stack sets {key} itself (its ports, stores and nodes are wired together)"
    return None


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{name}.log").open("ab")
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _log_text(log_path: Path, since: int) -> str:
    try:
        with log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _wait_started(
    proc: subprocess.Popen[bytes], log_path: Path, since: int, marker: str, count: int, timeout_s: float
) -> None:
    """Waits until the log (from byte `since`) shows `count` start lines, or fails naming the process.

    Raises:
        PortInUseError: the process exited because a port it needed was taken.
        StackError: it exited for another reason, or did not start in time.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _log_text(log_path, since)
        if text.count(marker) >= count:
            return
        if proc.poll() is not None:
            tail = "\n".join(text.splitlines()[-15:])
            if mentions_port_in_use(text):
                raise PortInUseError(f"{log_path.stem}: a port it needs is already in use:\n{tail}")
            raise StackError(f"{log_path.stem} exited with status {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    raise StackError(f"{log_path.stem} did not start within {timeout_s:.0f} s; see {log_path}")


class _Launch:
    """One `up`: the processes started so far, and the ports they ended up on."""

    def __init__(
        self, state: Path, ports: Ports, overrides: dict[str, Any] | None, env: dict[str, str]
    ) -> None:
        self.state = state
        self.ports = ports
        self.overrides = overrides
        self.log_dir = state / "logs"
        self.cfg_path = state / "corral.yaml"
        self.env = {**env, CONFIG_ENV: str(self.cfg_path)}
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.redis_url = f"redis://127.0.0.1:{ports.redis}/0"
        self.pg_dsn = f"postgresql://{devconfig.PG_ROLE}@127.0.0.1:{ports.postgres}/{devconfig.PG_DATABASE}"

    def write_config(self) -> None:
        """Writes <state>/corral.yaml for the current ports and checks it with the overrides applied."""
        cfg = stack_config(self.ports, self.redis_url, self.pg_dsn, self.overrides)
        self.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        try:
            load_config(self.cfg_path, self.env)
        except ConfigError as exc:
            raise StackError(f"configuration: {exc}") from None

    def on_free_ports(self, start: Callable[[], None], move: Callable[[PortInUseError], Ports]) -> None:
        """Runs `start`; when it finds a port taken and the ports were picked, moves and runs it again."""
        attempts = _PORT_ATTEMPTS if self.ports.picked else 1
        for attempt in range(attempts):
            try:
                start()
                return
            except PortInUseError as exc:
                if attempt == attempts - 1:
                    hint = "" if self.ports.picked else "\n(`--free-ports` runs the stack on free ports)"
                    raise StackError(f"{exc}{hint}") from None
                self.ports = move(exc)
                self.write_config()

    def stores(self) -> None:
        """Redis and PostgreSQL, migrated."""

        def start() -> None:
            infra = devstack_up(self.state, self.ports.redis, self.ports.postgres)
            self.redis_url, self.pg_dsn = infra["redis"]["url"], infra["postgres"]["dsn"]

        def move(exc: PortInUseError) -> Ports:
            if exc.port == self.ports.redis:
                return dataclasses.replace(self.ports, redis=allocate())
            return dataclasses.replace(self.ports, postgres=allocate())

        self.on_free_ports(start, move)
        self.write_config()

    def sim(self, sim_args: list[str]) -> None:
        """The simulated fleet: node i on the first port + i."""

        def start() -> None:
            argv = [sys.executable, "-m", "sim", "--port", str(self.ports.nodes[0])]
            argv += ["--nodes", str(len(self.ports.nodes))]
            if self.ports.admin:
                argv += ["--admin-port", str(self.ports.admin[0])]
            if "--models" not in sim_args:
                argv += ["--models", STACK_MODELS]
            self._start("sim", [*argv, *sim_args], "listening on", len(self.ports.nodes))

        def move(exc: PortInUseError) -> Ports:
            count = len(self.ports.nodes)
            return dataclasses.replace(self.ports, nodes=allocate_block(count), admin=allocate_block(count))

        self.on_free_ports(start, move)

    def service(self, name: str) -> None:
        """One Corral service, started once its readiness line shows in its log."""

        def start() -> None:
            argv = [sys.executable, "-m", f"services.{name}"]
            self._start(name, argv, f"corral-{name}: serving on", 1)

        def move(exc: PortInUseError) -> Ports:
            changes: dict[str, Any] = {name: allocate()}
            if name == "router":
                # NOTE: the router binds two ports and does not say which one was taken: move both.
                changes["router_http"] = allocate()
            return dataclasses.replace(self.ports, **changes)

        self.on_free_ports(start, move)

    def _start(self, name: str, argv: list[str], marker: str, count: int) -> None:
        log_path = self.log_dir / f"{name}.log"
        since = log_path.stat().st_size if log_path.exists() else 0
        proc = _spawn(name, argv, self.log_dir, self.env)
        try:
            _wait_started(proc, log_path, since, marker, count, START_TIMEOUT_S)
        except BaseException:
            _stop(proc.pid)
            raise
        self.procs.append((name, proc))

    def stop_all(self) -> None:
        """Stops what this launch started, services first."""
        for _, proc in reversed(self.procs):
            _stop(proc.pid)
        devstack_down(self.state)


def up(
    state: Path,
    ports: Ports,
    *,
    sim_args: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    services: tuple[str, ...] = SERVICES,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> dict[str, Any]:
    """Starts the stack, waits until it is ready and returns the process table.

    The table is also written to <state>/processes.json. Its "ports" are where everything ended up
    (with picked ports, a part whose port turned out taken was moved): `Ports.from_table` reads them.

    Raises:
        StackError: a variable cannot be honoured, a part failed to start, or the stack did not become
            ready in `ready_timeout_s`; what was started is stopped again.
    """
    passed = env_overrides(os.environ, ports)
    running = _running(state)
    if running:
        # NOTE: starting over it would fail on the taken ports and then stop its stores while cleaning up.
        raise StackError(
            f"a stack is already running from {state} ({', '.join(running)}); "
            "stop it first with `make down` (python -m scripts.stack down)"
        )
    state.mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(exist_ok=True)
    launch = _Launch(state, ports, overrides, {**_base_env(), **passed})
    try:
        # NOTE: checked before anything starts, so that a bad override fails in a second.
        launch.write_config()
        launch.stores()
        launch.sim(sim_args or [])
        for name in services:
            launch.service(name)
        wait_ready(launch.ports, services, launch.procs, state / "logs", ready_timeout_s)
    except BaseException:
        launch.stop_all()
        raise
    table: dict[str, Any] = {
        "config": str(launch.cfg_path),
        "ports": launch.ports.to_json(),
        "env_overrides": sorted(passed),
        "processes": {name: proc.pid for name, proc in launch.procs},
    }
    (state / "processes.json").write_text(json.dumps(table, indent=2))
    return table


def _http_json(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """GET `url` straight (no proxy); (status, decoded JSON body) or (0, None) when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=2.0) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def _model_names(body: Any) -> set[str]:
    models = body.get("models") if isinstance(body, dict) else None
    return {str(m.get("name")) for m in models or [] if isinstance(m, dict)}


def wait_ready(
    ports: Ports,
    services: tuple[str, ...],
    procs: list[tuple[str, subprocess.Popen[bytes]]],
    log_dir: Path,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Returns once every endpoint `up` prints accepts a request and the router knows the fleet's models.

    That is: each node answers GET /api/tags; each service's gRPC port answers the standard health
    check with SERVING; the router's HTTP API answers GET /api/tags with every model the nodes list.

    Raises:
        StackError: a process exited, or the deadline passed; the message names what is not ready.
    """
    fleet_models: set[str] = set()
    node_models: dict[int, set[str]] = {}
    channels = {name: grpc.insecure_channel(f"127.0.0.1:{getattr(ports, name)}") for name in services}
    key = os.environ.get("CORRAL_API_KEY")
    api_headers = {"Authorization": f"Bearer {key}"} if key else {}

    def node_answers(port: int) -> bool:
        status, body = _http_json(f"http://127.0.0.1:{port}/api/tags")
        if status == 200:
            node_models[port] = _model_names(body)
            fleet_models.update(node_models[port])
        return status == 200

    def serving(name: str) -> bool:
        stub = health_pb2_grpc.HealthStub(channels[name])
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def router_lists_models() -> bool:
        if len(node_models) < len(ports.nodes):
            return False
        status, body = _http_json(f"http://127.0.0.1:{ports.router_http}/api/tags", api_headers)
        if status in (401, 403):
            raise StackError(
                "the router's HTTP API wants an API key for /api/tags (auth is on): set CORRAL_API_KEY"
                " to a tenant key so that `up` can check the model list"
            )
        return status == 200 and fleet_models <= _model_names(body)

    pending: dict[str, Callable[[], bool]] = {}
    for port in ports.nodes:
        pending[f"node 127.0.0.1:{port} (GET /api/tags)"] = functools.partial(node_answers, port)
    for name in services:
        what = f"{name} 127.0.0.1:{getattr(ports, name)} (gRPC health check SERVING)"
        pending[what] = functools.partial(serving, name)
    if "router" in services and ports.router_http:
        what = f"HTTP API http://127.0.0.1:{ports.router_http} (GET /api/tags lists the fleet's models)"
        pending[what] = router_lists_models
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            for what, check in list(pending.items()):
                if check():
                    del pending[what]
            if not pending:
                return
            for name, proc in procs:
                if proc.poll() is not None:
                    raise StackError(
                        f"{name} exited with status {proc.returncode} while the stack was getting ready;"
                        f" see {log_dir / (name + '.log')}"
                    )
            if time.monotonic() > deadline:
                missing = "\n  ".join(pending)
                if fleet_models and "router" in services:
                    missing += f"\n  (the nodes serve: {', '.join(sorted(fleet_models))})"
                raise StackError(f"not ready after {timeout_s:.0f} s:\n  {missing}\nlogs: {log_dir}")
            time.sleep(0.1)
    finally:
        for channel in channels.values():
            channel.close()


def _stop(pid: int, timeout_s: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            finished = pid if not _alive(pid) else 0
        if finished:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # NOTE: another user's process: the PID was reused, ours is gone.
        return False
    return True


def _ours(name: str, pid: int) -> bool:
    """True when `pid` is alive and is the process `up` recorded as `name` (`python -m sim` or
    `python -m services.<name>`), by its command line: after a reboot the PIDs of processes.json
    may belong to unrelated processes, which must neither block `up` nor be stopped by `down`."""
    args = cmdline(pid)
    # NOTE: any Python interpreter name (`up` and `down` may be run as python and python3).
    launcher = Path(args[0]).name if args else ""
    if not launcher.startswith("python") or not is_our_process(pid, launcher):
        return False
    module = "sim" if name == "sim" else f"services.{name}"
    return any(flag == "-m" and value == module for flag, value in itertools.pairwise(args))


def _running(state: Path) -> list[str]:
    """The processes recorded in <state>/processes.json that are still running (and still ours)."""
    table_path = state / "processes.json"
    if not table_path.exists():
        return []
    table = json.loads(table_path.read_text())
    return [name for name, pid in table["processes"].items() if _ours(name, int(pid))]


def down(state: Path) -> None:
    """Stops what `up` started from this state folder (services first, then nodes, then stores)."""
    table_path = state / "processes.json"
    if table_path.exists():
        table = json.loads(table_path.read_text())
        for name, pid in reversed(list(table["processes"].items())):
            if _ours(name, int(pid)):
                _stop(int(pid))
        table_path.unlink()
    devstack_down(state)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `make up` / `make down`."""
    parser = argparse.ArgumentParser(prog="python -m scripts.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", help="state folder (default .state/)")
    parser.add_argument("--free-ports", action="store_true", help="use free ports instead of the defaults")
    args = parser.parse_args(argv)
    state = devconfig.state_dir(args.state_dir)
    if args.command == "up":
        try:
            ports = Ports.free() if args.free_ports else Ports.defaults()
            table = up(state, ports)
        except Exception as exc:  # NOTE: one clear message for the operator; the logs hold the rest.
            print(f"stack up: {exc}", file=sys.stderr)
            return 1
        ports = Ports.from_table(table)
        print(f"Corral is up (config {table['config']}, logs {state / 'logs'}):")
        print(f"  gRPC router   127.0.0.1:{ports.router}")
        print(f"  Ollama API    http://127.0.0.1:{ports.router_http}")
        print(f"  nodes         {', '.join(str(p) for p in ports.nodes)}")
        if table["env_overrides"]:
            print(f"  overrides     {', '.join(table['env_overrides'])}")
        return 0
    if args.command == "down":
        down(state)
        print(f"stopped the stack in {state}")
        return 0
    table_path = state / "processes.json"
    if not table_path.exists():
        print("stack: not running")
        return 3
    table = json.loads(table_path.read_text())
    for name, pid in table["processes"].items():
        print(f"{name:<10} pid {pid:<8} {'running' if _ours(name, int(pid)) else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
