"""Required models as desired state: every serving node gets the models configuration says it must have.

NOTE: prewarm owns this rather than health. Health only observes (it probes /api/tags and publishes
what each node has, which is all this needs); a pull is long-running background work on a node, like
a warm-up, and prewarm already throttles background work, follows nodes joining and coming back, and
warms them, so "pull what is missing, then warm" is ordered in one place. The router needs nothing
new: it routes a model only to nodes whose /api/tags lists it, and Ollama lists a model only once its
pull has finished, so a node is not routed a model before it has it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from services.prewarm.config import PrewarmConfig, RequiredModel
from services.prewarm.planner import NodeView, normalize_model_name

logger = logging.getLogger(__name__)

MISSING, PULLING, PRESENT, FAILED = "missing", "pulling", "present", "failed"


def required_for(node: NodeView, required: Sequence[RequiredModel]) -> list[RequiredModel]:
    """The required models that apply to a node: those without labels, and those whose labels it carries."""
    return [r for r in required if all(node.labels.get(k) == v for k, v in r.labels.items())]


def missing_required(node: NodeView, required: Sequence[RequiredModel]) -> list[str]:
    """The names of the node's required models that its last /api/tags did not list."""
    return [r.name for r in required_for(node, required) if normalize_model_name(r.name) not in node.models]


@dataclass
class RequiredState:
    """One required model on one node.

    Attributes:
        node_id: The node.
        model: The model as configured.
        state: missing, pulling, present or failed.
        completed: Bytes pulled so far (while pulling).
        total: Bytes to pull, as the node announced them.
        error: Why the last pull failed.
        retry_at_s: Monotonic second before which a failed pull is not tried again, or (after a
            pull that succeeded) before which health's /api/tags probe is awaited instead of pulling again.
    """

    node_id: str
    model: str
    state: str = MISSING
    completed: int = 0
    total: int = 0
    error: str = ""
    retry_at_s: float = 0.0


class PullClient:
    """Pulls a model on a node (POST /api/pull, streamed), reporting its byte progress."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Closes the session."""
        if self._session is not None:
            await self._session.close()

    async def pull(
        self, address: str, model: str, progress: Callable[[int, int], None], *, read_timeout_s: float
    ) -> None:
        """Pulls until the node says `success`.

        Raises:
            RuntimeError: The node answered an error, or ended without success.
            aiohttp.ClientError, TimeoutError: The node could not be reached or went silent.
        """
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        layers: dict[str, tuple[int, int]] = {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=read_timeout_s)
        url = address.rstrip("/") + "/api/pull"
        async with self._session.post(url, json={"model": model, "stream": True}, timeout=timeout) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{address} answered {resp.status}: {(await resp.text())[:200]}")
            async for raw in resp.content:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                if not isinstance(line, dict):
                    continue
                if "error" in line:
                    raise RuntimeError(str(line["error"]))
                digest = line.get("digest")
                if isinstance(digest, str) and digest:
                    layers[digest] = (int(line.get("total") or 0), int(line.get("completed") or 0))
                    progress(sum(c for _, c in layers.values()), sum(t for t, _ in layers.values()))
                if line.get("status") == "success":
                    return
        raise RuntimeError("the node ended its pull without success")


class RequiredModels:
    """Keeps every serving node's required models installed, a few pulls at a time.

    A health listener: on every view it marks what each node has, and pulls what a serving node lacks
    (at most `pull_concurrency` pulls across the fleet; a failed pull is retried after
    `pull_retry_s`). Health's next /api/tags probe shows the model installed; the warm-up of a node
    that was waiting for it follows from that view (`Triggers.on_scores`).
    """

    def __init__(
        self,
        cfg: PrewarmConfig,
        client: PullClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._client = client
        self._clock = clock
        self._gate = asyncio.Semaphore(cfg.pull_concurrency)
        self._states: dict[tuple[str, str], RequiredState] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._view: Mapping[str, NodeView] = {}

    def states(self) -> list[RequiredState]:
        """Every (node, required model), sorted by node then model."""
        return sorted(self._states.values(), key=lambda s: (s.node_id, s.model))

    def on_scores(self, before: Mapping[str, NodeView] | None, after: Mapping[str, NodeView]) -> None:
        """Health listener: updates the states and starts the pulls that are due."""
        self._view = after
        self.reconcile()

    def reconcile(self) -> None:
        """Marks what each node has and starts the pulls that are due (also called on a timer)."""
        required = self._cfg.required_models
        if not required:
            return
        seen: set[tuple[str, str]] = set()
        now_s = self._clock()
        for node in self._view.values():
            for item in required_for(node, required):
                key = (node.node_id, normalize_model_name(item.name))
                seen.add(key)
                state = self._states.setdefault(key, RequiredState(node.node_id, item.name))
                if key[1] in node.models:
                    if key not in self._tasks:
                        state.state, state.error = PRESENT, ""
                    continue
                if key in self._tasks or (state.state == PULLING and now_s < state.retry_at_s):
                    continue
                if state.state == PRESENT:
                    state.state = MISSING
                # NOTE: a node that does not take traffic (down, ejected, drained) is pulled for when
                # it serves again; pulling on a failing node would only add failures.
                if node.serving and (state.state != FAILED or now_s >= state.retry_at_s):
                    self._start(key, state, node.address)
        for key in [k for k in self._states if k not in seen]:
            task = self._tasks.pop(key, None)
            if task is not None:
                task.cancel()
            del self._states[key]

    def _start(self, key: tuple[str, str], state: RequiredState, address: str) -> None:
        state.state, state.completed, state.total = MISSING, 0, 0
        task = asyncio.get_running_loop().create_task(self._pull(key, state, address))
        self._tasks[key] = task

    async def _pull(self, key: tuple[str, str], state: RequiredState, address: str) -> None:
        try:
            async with self._gate:
                state.state = PULLING
                logger.info("pulling required model %s on %s", state.model, state.node_id)

                def progress(completed: int, total: int) -> None:
                    state.completed, state.total = completed, total

                await self._client.pull(
                    address, state.model, progress, read_timeout_s=self._cfg.pull_read_timeout_s
                )
            # NOTE: present only once health's /api/tags probe lists it (reconcile); until then the
            # router does not route the model here either.
            state.state, state.error = PULLING, ""
            state.completed = state.total
            state.retry_at_s = self._clock() + self._cfg.pull_retry_s
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.state, state.error = FAILED, str(exc)[:300] or type(exc).__name__
            state.retry_at_s = self._clock() + self._cfg.pull_retry_s
            logger.warning(
                "pull of required model %s on %s failed: %s", state.model, state.node_id, state.error
            )
        finally:
            # NOTE: only this task's own entry: a task cancelled because its node left the view ends
            # after a new one may have been started for the same key when the node came back, and
            # removing that one would let the next reconcile pull twice and leave it out of close().
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def run(self) -> None:
        """Re-checks every `pull_retry_s` (failed pulls come due) until cancelled."""
        while True:
            await asyncio.sleep(max(1.0, self._cfg.pull_retry_s / 2))
            self.reconcile()

    async def close(self) -> None:
        """Cancels the pulls in progress and closes the client."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await self._client.close()
