"""Command line: `corral-sim --port P` (one node) or `corral-sim --profile FILE` (a fleet)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from typing import Any

import uvloop
from pydantic import ValidationError

from sim.config import NodeConfig
from sim.duration import parse_keep_alive
from sim.embedder import EmbedderUnavailableError
from sim.faults import parse_fault_spec
from sim.fleet import Fleet
from sim.node import SimNode
from sim.profile import ProfileError, load_profile

DEFAULT_PORT = 11434
# NOTE: with no profile the node runs 100x faster than real time: quick tests, same shape.
DEFAULT_TIME_SCALE = 0.01
ADMIN_OFFSET = 1000


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    p = argparse.ArgumentParser(prog="corral-sim", description="Simulated Ollama node(s) for Corral.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="API port of the first node (0 = free port)")
    p.add_argument(
        "--admin-port",
        type=int,
        default=None,
        help="admin port of the first node (default port+1000, or a free one; 0 = free port)",
    )
    p.add_argument("--no-admin", action="store_true", help="do not serve the /_sim admin API")
    p.add_argument("--profile", help="profile YAML file, or a bundled name: original-cluster, test, no-delay")
    p.add_argument("--nodes", type=int, default=None, help="number of nodes on consecutive ports")
    p.add_argument("--time-scale", type=float, default=None, help="real seconds per simulated second")
    p.add_argument("--seed", type=int, default=None, help="seed of the generated text")
    p.add_argument("--models", help="comma-separated installed models (default: the three defaults)")
    p.add_argument("--num-parallel", type=int, default=None, help="parallel slots per loaded model")
    p.add_argument("--max-queue", type=int, default=None, help="queued requests before 503")
    p.add_argument("--max-loaded-models", type=int, default=None, help="loaded models before eviction")
    p.add_argument("--keep-alive", default=None, help="default keep_alive (Go duration or seconds)")
    p.add_argument("--speed-factor", type=float, default=None, help="multiplies every rate")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        help="fault at start-up: refuse, hang, malformed, slow=3, error_rate=0.2, busy=5, cut=10, "
        "latency_ms=200",
    )
    p.add_argument("--log-level", default="WARNING", help="Python logging level")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for arg, field in (
        ("time_scale", "time_scale"),
        ("seed", "seed"),
        ("num_parallel", "num_parallel"),
        ("max_queue", "max_queue"),
        ("max_loaded_models", "max_loaded_models"),
        ("speed_factor", "speed_factor"),
    ):
        value = getattr(args, arg)
        if value is not None:
            overrides[field] = value
    if args.keep_alive is not None:
        overrides["keep_alive_s"] = parse_keep_alive(args.keep_alive)
    if args.models:
        overrides["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    faults: dict[str, Any] = {}
    for spec in args.fault:
        faults.update(parse_fault_spec(spec))
    if faults:
        overrides["faults"] = faults
    return overrides


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def build_fleet(args: argparse.Namespace) -> Fleet:
    """Nodes described by the arguments.

    Raises:
        ProfileError, ValidationError, ValueError: bad arguments or profile, with the field named.
    """
    overrides = _overrides(args)
    if args.profile:
        profile = load_profile(args.profile)
        fleet = Fleet.from_profile(profile, base_port=args.port, count=args.nodes, overrides=overrides)
    else:
        count = args.nodes or 1
        overrides.setdefault("time_scale", DEFAULT_TIME_SCALE)
        base = DEFAULT_PORT if args.port is None else args.port
        nodes = []
        for index in range(count):
            config = NodeConfig.model_validate({"name": f"node-{index}", **overrides})
            nodes.append(SimNode(config, host=args.host, port=base + index if base else 0))
        fleet = Fleet(nodes)
    for index, node in enumerate(fleet.nodes):
        if args.no_admin:
            node.admin_port = None
        elif args.admin_port is not None:
            node.admin_port = args.admin_port + index if args.admin_port else 0
        elif (
            node.port
            and node.port + ADMIN_OFFSET <= 65535
            and _port_free(node.host, node.port + ADMIN_OFFSET)
        ):
            node.admin_port = node.port + ADMIN_OFFSET
        elif node.admin_port is None or node.admin_port == 0:
            node.admin_port = 0
    return fleet


async def run(args: argparse.Namespace) -> int:
    """Start the fleet, print one readiness line per node, serve until SIGTERM/SIGINT."""
    fleet = build_fleet(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    try:
        for node in fleet:
            admin = node.admin_port if node.admin_port is not None else "-"
            print(
                f"corral-sim: node {node.name} listening on {node.host}:{node.port} admin {admin}", flush=True
            )
        await stop.wait()
    finally:
        await fleet.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `corral-sim` and `python -m sim`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        return uvloop.run(run(args))
    except (ProfileError, ValueError, EmbedderUnavailableError) as exc:
        message = str(exc)
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            message = ".".join(str(p) for p in first["loc"]) + ": " + first["msg"]
        print(f"corral-sim: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"corral-sim: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
