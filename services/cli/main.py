"""`corral`: argument parsing, dispatch, and one-line errors with exit codes (1 failure, 2 usage)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import grpc
from rich.console import Console

from services.cli import fleet, inference, manage, ops
from services.cli.client import CliError, Peers, UsageError, describe_rpc_error, env_addr

Command = Callable[[argparse.Namespace, Peers, Console], Coroutine[Any, Any, int]]
# The service each command talks to (named in error messages).
_SERVICE_OF = {"status": "health", "nodes": "health", "models": "router", "chat": "router", "embed": "router"}
_SERVICE_OF.update({"prewarm": "prewarm", "cache": "cache"})


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    for service in ("router", "cache", "health", "prewarm"):
        group.add_argument(
            f"--{service}",
            metavar="HOST:PORT",
            default=env_addr(service),
            help=f"the {service} service (env CORRAL_{service.upper()}_ADDR; default %(default)s)",
        )
    group.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="deadline of unary calls, seconds"
    )
    group.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The `corral` argument parser."""
    common = _common()
    parser = argparse.ArgumentParser(prog="corral", description="See and steer a Corral fleet.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("status", parents=[common], help="node table: health, score, loaded models, load")
    p.add_argument("--watch", action="store_true", help="refresh live from the score stream (Ctrl-C to stop)")
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(run=fleet.status)

    p = sub.add_parser("models", parents=[common], help="models across the fleet; pull or remove them")
    p.add_argument("--loaded", action="store_true", help="only models loaded somewhere")
    p.set_defaults(run=inference.models)
    models_sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    for action, text, run in (
        ("pull", "pull a model on every node (or --nodes), with progress per node", manage.pull),
        ("rm", "delete a model on every node (or --nodes)", manage.remove),
    ):
        m = models_sub.add_parser(action, parents=[common], help=text)
        m.add_argument("name", help="the model, e.g. llama3.2:1b")
        m.add_argument(
            "--nodes",
            action="append",
            metavar="SELECTOR",
            help="node ids or LABEL=VALUE, comma-separated or repeated (default: every node)",
        )
        m.set_defaults(run=run)

    p = sub.add_parser("chat", parents=[common], help="chat with a model (one-shot or interactive)")
    p.add_argument("model")
    p.add_argument("prompt", nargs="*", help="one-shot prompt (omit for an interactive session)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--no-stream", action="store_true", help="print the answer when complete")
    p.add_argument("--temperature", type=float)
    p.add_argument("--num-predict", type=int, help="most tokens to generate")
    p.add_argument("--session", default="", help="session id (keeps the conversation on one node)")
    p.add_argument("--cache-mode", choices=inference.CACHE_MODE_NAMES, default="default")
    p.add_argument("--request-timeout", type=_positive_float, default=600.0, help="deadline of one answer")
    p.set_defaults(run=inference.chat)

    p = sub.add_parser("embed", parents=[common], help="embed texts")
    p.add_argument("model")
    p.add_argument("texts", nargs="+")
    p.add_argument("--dimensions", type=int, help="cut vectors to this size")
    p.add_argument("--request-timeout", type=_positive_float, default=120.0)
    p.set_defaults(run=inference.embed)

    p = sub.add_parser("prewarm", parents=[common], help="run prewarm now, with progress bars")
    p.add_argument("--step", action="append", choices=sorted(ops.STEPS), help="a step to run (repeatable)")
    p.add_argument("--node", action="append", help="limit to this node (repeatable)")
    p.add_argument("--model", action="append", help="limit to this model (repeatable)")
    p.add_argument("--join", action="store_true", help="follow the run in progress instead of failing")
    p.set_defaults(run=ops.prewarm)

    p = sub.add_parser("cache", help="cache statistics and invalidation")
    cache_sub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    c = cache_sub.add_parser("stats", parents=[common], help="hits, misses, sizes and latency by tier")
    c.add_argument("--tenant", help="count only this tenant's entries")
    c = cache_sub.add_parser("invalidate", parents=[common], help="remove cached answers")
    c.add_argument("--tenant", help="remove this tenant's entries")
    c.add_argument("--model", help="only this model's")
    c.add_argument("--key", help="only this exact key")
    c.add_argument("--all-tenants", action="store_true", help="every tenant's entries")
    p.set_defaults(run=ops.cache)

    p = sub.add_parser("nodes", help="add, drain, undrain or remove nodes")
    nodes_sub = p.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    n = nodes_sub.add_parser("add", parents=[common], help="register a node")
    n.add_argument("node_id")
    n.add_argument("address", help="base URL, e.g. http://10.0.0.5:11434")
    n.add_argument("--label", action="append", help="KEY=VALUE (repeatable)")
    for action, text in (
        ("drain", "stop new traffic"),
        ("undrain", "return to service"),
        ("remove", "unregister"),
    ):
        n = nodes_sub.add_parser(action, parents=[common], help=text)
        n.add_argument("node_id")
    p.set_defaults(run=fleet.nodes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit code."""
    args = build_parser().parse_args(argv)
    peers = Peers(
        router=args.router, cache=args.cache, health=args.health, prewarm=args.prewarm, timeout_s=args.timeout
    )
    run: Command = args.run
    service = _SERVICE_OF[args.command]
    console = Console(highlight=False)
    try:
        return asyncio.run(run(args, peers, console))
    except UsageError as exc:
        _fail(str(exc))
        return 2
    except CliError as exc:
        _fail(str(exc))
    except grpc.aio.AioRpcError as exc:
        _fail(describe_rpc_error(exc, service, peers.addr(service)))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return 1


def _fail(message: str) -> None:
    print(f"corral: error: {message}", file=sys.stderr)
