"""Fleet-wide model management: pull, delete and copy on every node (or the selected ones) at once.

The router fans one request out to the nodes of its score copy, at most `model_admin_parallel` at a
time, and keeps one `NodeProgress` per node. Front ends render it: the HTTP API as one merged Ollama
progress stream (`services/router/http/manage_api.py`), the gRPC `PullModel` as per-node snapshots.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.router.scores import NodeView, ScoreBoard
from services.router.transport import NodeTransport

logger = logging.getLogger(__name__)

QUEUED, PULLING, DONE, FAILED, ABSENT = "queued", "pulling", "done", "failed", "absent"


@dataclass
class NodeProgress:
    """Where one node is with one fleet-wide operation.

    Attributes:
        node_id: The node.
        state: queued, pulling (or working), done, failed, or absent (delete/copy: the node lacked the model).
        status: The node's last progress status line (e.g. "pulling 6a0746a1ec1a").
        layers: Per layer digest: (total, completed) bytes as the node last reported them.
        error: Why the node failed.
        refused: The node itself answered that the model does not exist (pull: "pull model manifest:
            file does not exist"; delete and copy: a 4xx), rather than failing otherwise (unreachable,
            cut off, or an error of its own such as a registry, DNS or disk outage): the request,
            not the node, is at fault.
    """

    node_id: str
    state: str = QUEUED
    status: str = ""
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    error: str = ""
    refused: bool = False

    @property
    def total(self) -> int:
        """Bytes of every layer the node has announced."""
        return sum(t for t, _ in self.layers.values())

    @property
    def completed(self) -> int:
        """Bytes of those layers the node has."""
        return sum(c for _, c in self.layers.values())


@dataclass
class PullEvent:
    """One change of a fleet-wide pull: `node` changed (None for the final event, `done`)."""

    node: NodeProgress | None
    line: dict[str, Any]
    nodes: list[NodeProgress]
    done: bool = False


def select_nodes(board: ScoreBoard, selector: Iterable[str]) -> list[NodeView]:
    """The nodes a selector names: every node when it is empty.

    Each item is a node id, or `key=value` for the nodes carrying that label; a node matching any
    item is selected. Items may also be comma-separated within one string.

    Raises:
        InvalidArgument: An item names no node (the message lists them).
        Unavailable: The router knows no node yet.
    """
    items = [part.strip() for raw in selector for part in raw.split(",") if part.strip()]
    nodes = sorted(board.nodes.values(), key=lambda n: n.node_id)
    if not nodes:
        raise Unavailable("the router knows no node yet", reason="NO_NODES")
    if not items:
        return nodes
    chosen: dict[str, NodeView] = {}
    unmatched: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep:
            hits = [n for n in nodes if n.labels.get(key.strip()) == value.strip()]
        else:
            hits = [n for n in nodes if n.node_id == item]
        if not hits:
            unmatched.append(item)
        chosen.update((n.node_id, n) for n in hits)
    if unmatched:
        known = ", ".join(n.node_id for n in nodes)
        raise InvalidArgument(
            "nodes",
            f"node selector matches no node: {', '.join(unmatched)} (nodes: {known})",
            reason="NO_SUCH_NODE",
        )
    return sorted(chosen.values(), key=lambda n: n.node_id)


def failure_summary(verb: str, model: str, nodes: list[NodeProgress]) -> str:
    """One line naming the failed nodes and where the operation worked, e.g. for a stream's last error."""
    failed = [n for n in nodes if n.state == FAILED]
    good = [n.node_id for n in nodes if n.state == DONE]
    text = f"{verb} {model} failed on {len(failed)} of {len(nodes)} nodes: " + "; ".join(
        f"{n.node_id}: {n.error}" for n in failed
    )
    if good:
        text += f" (done on {', '.join(good)})"
    return text


def _error_text(raw: str, status: int) -> str:
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return raw.strip()[:200] or f"HTTP {status}"


class ModelAdmin:
    """Runs pull, delete and copy across the nodes of the score board.

    Args:
        board: The router's node table (node ids, addresses, labels).
        transport: The HTTP transport to the nodes.
        parallel: Nodes worked on at once.
        pull_read_timeout_s: Longest silence of a node's pull stream.
    """

    def __init__(
        self, board: ScoreBoard, transport: NodeTransport, *, parallel: int, pull_read_timeout_s: float
    ) -> None:
        self._board = board
        self._transport = transport
        self._parallel = parallel
        self._read_timeout_s = pull_read_timeout_s

    def select(self, selector: Iterable[str]) -> list[NodeView]:
        """See `select_nodes`."""
        return select_nodes(self._board, selector)

    async def pull(self, model: str, nodes: list[NodeView]) -> AsyncGenerator[PullEvent, None]:
        """Pulls `model` on `nodes`, yielding every progress change, then one event with `done` set.

        A node that fails does not stop the others; its NodeProgress says why. Closing the iterator
        cancels the pulls still running.
        """
        progress = [NodeProgress(n.node_id) for n in nodes]
        queue: asyncio.Queue[tuple[NodeProgress, dict[str, Any]] | None] = asyncio.Queue()
        gate = asyncio.Semaphore(self._parallel)

        async def one(node: NodeView, state: NodeProgress) -> None:
            async with gate:
                state.state = PULLING
                await queue.put((state, {"status": "pulling manifest"}))
                try:
                    async for line in self._pull_lines(node.address, model):
                        if "error" in line:
                            raise _NodeFailed(str(line["error"]))
                        status = str(line.get("status") or "")
                        state.status = status or state.status
                        digest = line.get("digest")
                        if isinstance(digest, str) and digest:
                            total, done = int(line.get("total") or 0), int(line.get("completed") or 0)
                            state.layers[digest] = (total, done)
                        if status == "success":
                            state.state = DONE
                        await queue.put((state, line))
                    if state.state != DONE:
                        raise _NodeFailed("the node ended its pull without success", refused=False)
                except _NodeFailed as exc:
                    state.state, state.error, state.refused = FAILED, str(exc), exc.refused
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    state.state, state.error = FAILED, _connection_text(exc)
                if state.state == FAILED:
                    logger.warning("pull of %s on %s failed: %s", model, node.node_id, state.error)
                    await queue.put((state, {"error": state.error}))

        async def run_all() -> None:
            try:
                await asyncio.gather(*(one(n, s) for n, s in zip(nodes, progress, strict=True)))
            finally:
                await queue.put(None)

        runner = asyncio.create_task(run_all())
        try:
            while (item := await queue.get()) is not None:
                state, line = item
                yield PullEvent(state, line, progress)
            await runner
            yield PullEvent(None, {}, progress, done=True)
        finally:
            if not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)

    async def _pull_lines(self, address: str, model: str) -> AsyncIterator[dict[str, Any]]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=self._read_timeout_s)
        body = {"model": model, "stream": True}
        async with self._transport.session.post(f"{address}/api/pull", json=body, timeout=timeout) as resp:
            if resp.status != 200:
                raise _NodeFailed(_error_text(await resp.text(), resp.status))
            async for raw in resp.content:
                text = raw.strip()
                if not text:
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    raise _NodeFailed("the node sent a malformed progress line", refused=False) from None
                if isinstance(line, dict):
                    yield line

    async def delete(self, model: str, nodes: list[NodeView]) -> list[NodeProgress]:
        """Deletes `model` on `nodes`: done, absent (the node lacked it) or failed per node.

        Raises:
            NotFound: No selected node had the model.
        """
        results = await self._each(nodes, "DELETE", "/api/delete", {"model": model})
        if results and all(r.state == ABSENT for r in results):
            raise NotFound(f"model '{model}' not found", reason="MODEL_NOT_FOUND")
        return results

    async def copy(self, source: str, destination: str, nodes: list[NodeView]) -> list[NodeProgress]:
        """Copies `source` to `destination` on every selected node that has `source`.

        Raises:
            NotFound: No selected node had the source model.
        """
        results = await self._each(nodes, "POST", "/api/copy", {"source": source, "destination": destination})
        if results and all(r.state == ABSENT for r in results):
            raise NotFound(f'model "{source}" not found', reason="MODEL_NOT_FOUND")
        return results

    async def _each(
        self, nodes: list[NodeView], method: str, path: str, body: dict[str, Any]
    ) -> list[NodeProgress]:
        gate = asyncio.Semaphore(self._parallel)
        timeout = aiohttp.ClientTimeout(total=60.0, sock_connect=5.0)

        async def one(node: NodeView) -> NodeProgress:
            state = NodeProgress(node.node_id)
            async with gate:
                try:
                    async with self._transport.session.request(
                        method, f"{node.address}{path}", json=body, timeout=timeout
                    ) as resp:
                        text = await resp.text()
                        if resp.status == 200:
                            state.state = DONE
                        elif resp.status == 404:
                            state.state, state.error = ABSENT, _error_text(text, 404)
                        else:
                            state.state, state.error = FAILED, _error_text(text, resp.status)
                            state.refused = resp.status < 500
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    state.state, state.error = FAILED, _connection_text(exc)
            return state

        return list(await asyncio.gather(*(one(n) for n in nodes)))


def says_model_missing(message: str) -> bool:
    """A node's pull error says the model does not exist (Ollama: "pull model manifest: file does not
    exist"; "model '...' not found"), as opposed to a failure of the node or of its registry (DNS,
    network, disk), which a retry may cure."""
    lowered = message.lower()
    if "file does not exist" in lowered:
        return True
    if "pull model manifest" in lowered and "not exist" in lowered:
        return True
    return "not found" in lowered and "page not found" not in lowered


class _NodeFailed(Exception):
    """A node answered a pull with an error; `refused` when it says the model does not exist."""

    def __init__(self, message: str, *, refused: bool | None = None) -> None:
        super().__init__(message)
        self.refused = says_model_missing(message) if refused is None else refused


def _connection_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"cannot reach the node ({type(exc).__name__}: {exc})"[:300]
