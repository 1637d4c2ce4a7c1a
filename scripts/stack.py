"""The whole local stack as background processes: `python -m scripts.stack up|down|status`.

`up` starts Redis and PostgreSQL+pgvector (devstack), a fleet of simulated Ollama nodes and the four
services, each with its log in `<state>/logs/`, writes the generated configuration to
`<state>/corral.yaml` and the process table to `<state>/processes.json`. `down` stops them in reverse
order (SIGTERM, so services drain) and stops Redis and PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devstack import config as devconfig
from devstack.__main__ import down as devstack_down
from devstack.__main__ import up as devstack_up

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("health", "cache", "router", "prewarm")


@dataclass(frozen=True)
class Ports:
    """Where each part of the stack listens."""

    redis: int
    postgres: int
    nodes: tuple[int, ...]
    health: int
    cache: int
    router: int
    router_http: int
    prewarm: int

    @staticmethod
    def free(node_count: int = 4) -> Ports:
        """Picks free loopback ports for everything (the demo and tests never assume a port is free)."""
        picked = _free_ports(7)
        return Ports(
            redis=picked[0],
            postgres=picked[1],
            health=picked[2],
            cache=picked[3],
            router=picked[4],
            router_http=picked[5],
            prewarm=picked[6],
            nodes=_free_block(node_count),
        )

    @staticmethod
    def defaults() -> Ports:
        """The documented default ports (`make up`)."""
        return Ports(
            redis=devconfig.DEFAULT_REDIS_PORT,
            postgres=devconfig.DEFAULT_PG_PORT,
            nodes=(11434, 11435, 11436, 11437),
            health=50053,
            cache=50052,
            router=50051,
            router_http=11400,
            prewarm=50054,
        )


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _free_block(count: int) -> tuple[int, ...]:
    """Consecutive free ports (the simulator gives node i the first port + i)."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000 - count)
        block = tuple(range(base, base + count))
        if all(_is_free(port) for port in block):
            return block
    raise RuntimeError(f"no block of {count} consecutive free ports found")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
            "embedder": {"node_urls": node_urls, "model": "nomic-embed-text:v1.5"},
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


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
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


def _wait_ready(
    proc: subprocess.Popen[bytes], log_path: Path, marker: str, count: int, timeout_s: float
) -> None:
    """Waits until the log shows `count` readiness lines, or fails naming the process."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if text.count(marker) >= count:
            return
        if proc.poll() is not None:
            tail = "\n".join(text.splitlines()[-15:])
            raise RuntimeError(f"{log_path.stem} exited with status {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    raise RuntimeError(f"{log_path.stem} not ready after {timeout_s:.0f} s; see {log_path}")


def up(
    state: Path,
    ports: Ports,
    *,
    sim_args: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    services: tuple[str, ...] = SERVICES,
) -> dict[str, Any]:
    """Starts the stack and returns the process table (also written to <state>/processes.json)."""
    state.mkdir(parents=True, exist_ok=True)
    log_dir = state / "logs"
    log_dir.mkdir(exist_ok=True)
    infra = devstack_up(state, ports.redis, ports.postgres)
    cfg = stack_config(ports, infra["redis"]["url"], infra["postgres"]["dsn"], overrides)
    cfg_path = state / "corral.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = _env()
    env["CORRAL_CONFIG"] = str(cfg_path)
    table: dict[str, Any] = {"config": str(cfg_path), "ports": ports.__dict__, "processes": {}}
    nodes_argv = [
        sys.executable,
        "-m",
        "sim",
        "--port",
        str(ports.nodes[0]),
        "--nodes",
        str(len(ports.nodes)),
    ]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        sim = _spawn("sim", [*nodes_argv, *(sim_args or [])], log_dir, env)
        procs.append(("sim", sim))
        _wait_ready(sim, log_dir / "sim.log", "listening on", len(ports.nodes), 60)
        for name in services:
            proc = _spawn(name, [sys.executable, "-m", f"services.{name}"], log_dir, env)
            procs.append((name, proc))
            _wait_ready(proc, log_dir / f"{name}.log", f"corral-{name}: serving on", 1, 60)
    except Exception:
        for _, proc in reversed(procs):
            _stop(proc.pid)
        devstack_down(state)
        raise
    for name, proc in procs:
        table["processes"][name] = proc.pid
    (state / "processes.json").write_text(json.dumps(table, indent=2))
    return table


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
    return True


def down(state: Path) -> None:
    """Stops what `up` started from this state folder (services first, then nodes, then stores)."""
    table_path = state / "processes.json"
    if table_path.exists():
        table = json.loads(table_path.read_text())
        for _name, pid in reversed(list(table["processes"].items())):
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
        ports = Ports.free() if args.free_ports else Ports.defaults()
        try:
            table = up(state, ports)
        except Exception as exc:  # NOTE: one clear line for the operator; the logs hold the rest.
            print(f"stack up: {exc}", file=sys.stderr)
            return 1
        print(f"Corral is up (config {table['config']}, logs {state / 'logs'}):")
        print(f"  gRPC router   127.0.0.1:{ports.router}")
        print(f"  Ollama API    http://127.0.0.1:{ports.router_http}")
        print(f"  nodes         {', '.join(str(p) for p in ports.nodes)}")
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
        print(f"{name:<10} pid {pid:<8} {'running' if _alive(int(pid)) else 'stopped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
