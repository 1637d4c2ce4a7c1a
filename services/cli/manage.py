"""`corral models pull|rm NAME [--nodes …]`: fleet-wide model management through the router's ModelService."""

from __future__ import annotations

import argparse
import json

from corral.v1 import model_service_pb2 as mpb
from corral.v1 import model_service_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

from services.cli.client import CliError, Peers, to_json
from services.cli.render import fmt_bytes

STATE_NAMES = {
    mpb.NODE_MODEL_STATE_UNSPECIFIED: "unknown",
    mpb.NODE_MODEL_STATE_QUEUED: "queued",
    mpb.NODE_MODEL_STATE_PULLING: "pulling",
    mpb.NODE_MODEL_STATE_DONE: "done",
    mpb.NODE_MODEL_STATE_FAILED: "failed",
    mpb.NODE_MODEL_STATE_ABSENT: "absent",
}
_STYLES = {"done": "green", "failed": "red", "absent": "dim"}


def node_line(node: mpb.NodeModelProgress) -> str:
    """One plain line for a node in a state, e.g. `node-1    done     397.8 MB`."""
    state = STATE_NAMES.get(node.state, "unknown")
    if state == "failed":
        detail = node.error
    elif node.total:
        detail = f"{fmt_bytes(node.completed)} / {fmt_bytes(node.total)}"
    else:
        detail = node.status
    return f"{node.node_id:<12} {state:<8} {detail}".rstrip()


class PullView:
    """Shows a fleet pull: live bars per node on a terminal, else one line per node and state.

    NOTE: without a terminal (a log, a pipe, CI) redrawn bars are noise; a line each time a node
    changes state keeps the record readable and complete.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live = console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description:<12}"),
            TextColumn("{task.fields[state]:<8}"),
            BarColumn(bar_width=30),
            DownloadColumn(),
            console=console,
            disable=not self._live,
        )
        self._tasks: dict[str, TaskID] = {}
        self._states: dict[str, int] = {}

    def __enter__(self) -> PullView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, snapshot: mpb.PullModelResponse) -> None:
        """Takes one snapshot of every node's progress."""
        for node in snapshot.nodes:
            state = STATE_NAMES.get(node.state, "unknown")
            if self._live:
                task = self._tasks.get(node.node_id)
                if task is None:
                    task = self._tasks[node.node_id] = self._progress.add_task(
                        node.node_id, total=None, state=state
                    )
                total = node.total or None
                self._progress.update(task, completed=node.completed, total=total, state=state)
            elif self._states.get(node.node_id) != node.state:
                self._console.print(node_line(node), style=_STYLES.get(state), highlight=False)
            self._states[node.node_id] = node.state


async def pull(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Pulls a model on the selected nodes, showing each node's progress."""
    request = mpb.PullModelRequest(model=args.name, nodes=args.nodes or [])
    last = mpb.PullModelResponse()
    async with peers.channel("router") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with PullView(console) if not args.json else _Quiet() as view:
            async for snapshot in stub.PullModel(request):
                last = snapshot
                if args.json:
                    print(json.dumps(to_json(snapshot)), flush=True)
                else:
                    view.update(snapshot)
    if last.error:
        raise CliError(last.error)
    if not args.json:
        done = sum(n.state == mpb.NODE_MODEL_STATE_DONE for n in last.nodes)
        console.print(f"pulled {args.name} on {done} of {len(last.nodes)} nodes", highlight=False)
    return 0


async def remove(args: argparse.Namespace, peers: Peers, console: Console) -> int:
    """Deletes a model on the selected nodes; one line per node."""
    request = mpb.DeleteModelRequest(model=args.name, nodes=args.nodes or [])
    async with peers.channel("router") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        reply = await stub.DeleteModel(request, timeout=peers.timeout_s)
    if args.json:
        print(json.dumps(to_json(reply)))
    else:
        for node in reply.nodes:
            state = STATE_NAMES.get(node.state, "unknown")
            console.print(node_line(node), style=_STYLES.get(state), highlight=False)
    failed = [n.node_id for n in reply.nodes if n.state == mpb.NODE_MODEL_STATE_FAILED]
    if failed:
        raise CliError(f"deleting {args.name} failed on {', '.join(failed)}")
    return 0


class _Quiet:
    """A view that shows nothing (`--json` prints the snapshots itself)."""

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, snapshot: mpb.PullModelResponse) -> None:
        """Ignores the snapshot."""
