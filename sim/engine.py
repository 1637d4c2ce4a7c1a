"""The node's scheduler and cost model: loads, eviction, keep-alive, parallel slots, queue, KV cache."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.config import ModelSpec, NodeConfig, normalize_model_name
from sim.faults import FaultState


class BusyError(Exception):
    """The node's queue is full: Ollama answers 503."""

    MESSAGE = "server busy, please try again.  maximum pending requests exceeded"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


@dataclass(slots=True)
class Slot:
    """One parallel sequence of a runner, with the tokens of its last conversation (its KV cache)."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    last_used: float = 0.0


@dataclass(eq=False)
class _LoadTicket:
    """A request waiting for its model's load; `runner` is set when the load hands it the runner."""

    runner: Runner | None = None


class Runner:
    """A loaded model (one llama-server in Ollama) with its slots."""

    def __init__(self, spec: ModelSpec, num_parallel: int, load_ns: int) -> None:
        self.spec = spec
        self.slots = [Slot(i) for i in range(num_parallel)]
        self.free: list[Slot] = list(self.slots)
        self.waiters: deque[asyncio.Future[Slot]] = deque()
        self.ref_count = 0
        self.load_ns = load_ns
        self.keep_alive_s = 300.0
        self.expires_at = math.inf  # wall-clock seconds
        self.expire_handle: asyncio.TimerHandle | None = None
        self.expiring = False
        self.idle = asyncio.Event()
        self.idle.set()

    def take_free_slot(self, prompt_ids: list[int]) -> Slot | None:
        """Take a free slot for the prompt, if any, with the longest cached prefix available.

        As Ollama's runner does, the least recently used free slot is taken, and the longest matching
        prefix among the free slots is copied into it.
        """
        free = self.free
        if not free:
            return None
        target = len(prompt_ids)
        best = free[0]
        best_prefix = -1
        for slot in free:
            prefix = common_prefix(slot.token_ids, prompt_ids)
            if prefix > best_prefix:
                best, best_prefix = slot, prefix
                if prefix == target:
                    break
        # NOTE: released slots are appended, so the free list is in least-recently-used order.
        chosen = free.pop(0)
        if chosen is not best:
            chosen.token_ids = best.token_ids[:best_prefix]
        return chosen

    def give_back(self, slot: Slot) -> None:
        """Hand a slot to the first waiter still waiting, or put it back in the free list."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self.free.append(slot)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists (slice comparisons run in C)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] and a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


@dataclass(slots=True)
class NodeStats:
    """Counters exposed by `/_sim/stats`."""

    requests_total: int = 0
    requests_by_route: dict[str, int] = field(default_factory=dict)
    busy_rejections: int = 0
    faults_injected: int = 0
    loads: int = 0
    unloads: int = 0
    evictions: int = 0
    cancelled: int = 0
    prompt_tokens_evaluated: dict[str, int] = field(default_factory=dict)
    prompt_tokens_cached: dict[str, int] = field(default_factory=dict)
    eval_tokens: dict[str, int] = field(default_factory=dict)


# NOTE: enough for a test to find its requests on a busy node, small enough to list in one answer.
TRANSCRIPTS_KEPT = 256


@dataclass(slots=True)
class Transcript:
    """One completion as the node saw it: the body it received, the tokens it sent, how it ended.

    Attributes:
        seq: Number of the completion on this node (1, 2, ...; restarts with the node).
        path: The route, e.g. `/api/chat`.
        body: The request body as received.
        pieces: The whole answer the node generated (one piece per token).
        sent: How many of `pieces` were written to the client: streamed ones as they are written, a
            non-streamed answer all at once when it is complete.
        outcome: `running`, `done`, `cut` (the cut fault), `cancelled` (the client went away or the
            node stopped), `busy` (503) or `failed`.
    """

    seq: int
    path: str
    body: dict[str, Any]
    pieces: list[str] = field(default_factory=list)
    sent: int = 0
    outcome: str = "running"

    def as_json(self) -> dict[str, Any]:
        """The entry of `GET /_sim/requests`: `sent` is the text the client was sent."""
        return {
            "seq": self.seq,
            "path": self.path,
            "request": self.body,
            "sent": "".join(self.pieces[: self.sent]),
            "sent_tokens": self.sent,
            "outcome": self.outcome,
        }


class Engine:
    """Scheduler state of one node; all methods run on the node's event loop."""

    def __init__(self, cfg: NodeConfig, faults: FaultState) -> None:
        self.cfg = cfg
        self.faults = faults
        self.installed: dict[str, ModelSpec] = {m.key: m for m in cfg.models}
        self.catalog: dict[str, ModelSpec] = {m.key: m for m in cfg.catalog}
        self.catalog.update(self.installed)
        self.runners: dict[str, Runner] = {}
        self._loading: dict[str, asyncio.Task[Runner]] = {}
        # Requests waiting for a model's load, by model: the load hands the runner to each of them
        # (see `_load`), as Ollama's scheduler gives a runner to the request it loaded it for.
        self._load_waiters: dict[str, list[_LoadTicket]] = {}
        self._load_lock = asyncio.Lock()
        self.queued = 0
        self.in_flight = 0
        self.stats = NodeStats()
        self.transcripts: deque[Transcript] = deque(maxlen=TRANSCRIPTS_KEPT)
        self._watchers: list[asyncio.Future[None]] = []

    # ----------------------------------------------------------------- lookups and costs
    def transcript(self, path: str, body: dict[str, Any]) -> Transcript:
        """Start recording a completion (the latest `TRANSCRIPTS_KEPT` are kept)."""
        last = self.transcripts[-1].seq if self.transcripts else 0
        record = Transcript(seq=last + 1, path=path, body=body)
        self.transcripts.append(record)
        return record

    def resolve(self, name: str) -> ModelSpec | None:
        """The installed model answering to `name`, if any."""
        return self.installed.get(normalize_model_name(name))

    def _rate(self, spec: ModelSpec, prompt: bool) -> float:
        if prompt:
            base = spec.prompt_eval_tok_s or self.cfg.prompt_eval_tok_s
        else:
            base = spec.eval_tok_s or self.cfg.eval_tok_s
        return base * self.cfg.speed_factor / self.faults.current.slow_factor

    def prompt_eval_s(self, spec: ModelSpec, tokens: int) -> float:
        """Nominal seconds to evaluate `tokens` prompt tokens."""
        return tokens / self._rate(spec, prompt=True)

    def eval_s_per_token(self, spec: ModelSpec) -> float:
        """Nominal seconds per generated token."""
        return 1.0 / self._rate(spec, prompt=False)

    def load_s(self, spec: ModelSpec) -> float:
        """Nominal seconds to load a model from disk."""
        seconds = self.cfg.load_base_s + self.cfg.load_s_per_gb * spec.size_bytes / 1e9
        return seconds * self.faults.current.slow_factor / self.cfg.speed_factor

    def warm_ns(self) -> int:
        """Nominal load_duration of a request that finds its model loaded."""
        return max(1, int(self.cfg.warm_load_ms * 1e6))

    async def sleep(self, nominal_s: float) -> None:
        """Sleep for a nominal duration, scaled by the time scale (no sleep at all in no-delay mode)."""
        real_s = nominal_s * self.cfg.time_scale
        if real_s > 0:
            await asyncio.sleep(real_s)

    def keep_alive_real_s(self, keep_alive_s: float) -> float:
        """Real seconds of a keep-alive duration."""
        if self.cfg.scale_keep_alive and self.cfg.time_scale > 0:
            return keep_alive_s * self.cfg.time_scale
        return keep_alive_s

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until `predicate()` holds, re-checking whenever the scheduler state changes.

        Raises:
            TimeoutError: when it does not hold within `timeout_s`.
        """
        async with asyncio.timeout(timeout_s):
            while not predicate():
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._watchers.append(waiter)
                await waiter

    def poke(self) -> None:
        # NOTE: cheap when nobody watches, which is the benchmark's hot path.
        if self._watchers:
            watchers, self._watchers = self._watchers, []
            for waiter in watchers:
                if not waiter.done():
                    waiter.set_result(None)

    # ----------------------------------------------------------------- runners
    async def acquire_runner(self, spec: ModelSpec, keep_alive_s: float) -> tuple[Runner, int]:
        """Get the model's runner, loading it if needed; returns it with the request's load_duration (ns).

        Raises:
            BusyError: when the model must be loaded and the queue is full.
        """
        runner = self.runners.get(spec.key)
        if runner is not None and not runner.expiring:
            self._hold(runner, keep_alive_s)
            return runner, self.warm_ns()
        if self.queued >= self.cfg.max_queue:
            self.stats.busy_rejections += 1
            raise BusyError()
        self.queued += 1
        self.poke()
        try:
            while True:
                task = self._loading.get(spec.key)
                if task is None:
                    task = asyncio.get_running_loop().create_task(self._load(spec))
                    self._loading[spec.key] = task
                ticket = _LoadTicket()
                self._load_waiters.setdefault(spec.key, []).append(ticket)
                try:
                    runner = await asyncio.shield(task)
                except BaseException:
                    if ticket.runner is not None:
                        self.release_runner(ticket.runner)  # handed over, but this request is gone
                    else:
                        self._drop_ticket(spec.key, ticket)
                    raise
                if ticket.runner is runner:
                    self._keep(runner, keep_alive_s)
                    return runner, runner.load_ns
                self._drop_ticket(spec.key, ticket)
                if self.runners.get(spec.key) is runner and not runner.expiring:
                    self._hold(runner, keep_alive_s)
                    return runner, runner.load_ns
        finally:
            self.queued -= 1
            self.poke()

    def _drop_ticket(self, key: str, ticket: _LoadTicket) -> None:
        waiting = self._load_waiters.get(key)
        if waiting is not None and ticket in waiting:
            waiting.remove(ticket)
            if not waiting:
                del self._load_waiters[key]

    def _hold(self, runner: Runner, keep_alive_s: float) -> None:
        runner.ref_count += 1
        runner.idle.clear()
        self._keep(runner, keep_alive_s)

    def _keep(self, runner: Runner, keep_alive_s: float) -> None:
        runner.keep_alive_s = keep_alive_s
        # NOTE: a pending expiry timer is left alone (it re-checks when it fires): cancelling and
        # re-arming a timer per request costs more than the rest of a no-delay request.
        runner.expires_at = time.time() + self.keep_alive_real_s(keep_alive_s)

    def release_runner(self, runner: Runner) -> None:
        """Drop one reference; an idle runner starts its keep-alive timer (or unloads at once)."""
        runner.ref_count -= 1
        if runner.ref_count > 0:
            return
        runner.idle.set()
        real_s = self.keep_alive_real_s(runner.keep_alive_s)
        if runner.expiring or real_s <= 0:
            self.unload(runner)
            return
        runner.expires_at = time.time() + real_s
        if not math.isfinite(real_s):
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + real_s
        handle = runner.expire_handle
        if handle is not None and handle.when() > due + 0.001:
            handle.cancel()
            handle = None
        if handle is None:
            runner.expire_handle = loop.call_at(due, self._expire, runner)

    def _expire(self, runner: Runner) -> None:
        runner.expire_handle = None
        if runner.ref_count > 0 or math.isinf(runner.expires_at):
            return  # in use (its release re-arms the timer) or kept forever since
        remaining_s = runner.expires_at - time.time()
        if remaining_s > 0.001:
            runner.expire_handle = asyncio.get_running_loop().call_later(remaining_s, self._expire, runner)
            return
        self.unload(runner)

    def unload(self, runner: Runner) -> None:
        """Remove an idle runner from memory."""
        if self.runners.get(runner.spec.key) is runner:
            del self.runners[runner.spec.key]
            self.stats.unloads += 1
        if runner.expire_handle is not None:
            runner.expire_handle.cancel()
            runner.expire_handle = None
        self.poke()

    def request_unload(self, spec: ModelSpec) -> None:
        """keep_alive 0 with an empty prompt: unload now when idle, else once idle; no-op if not loaded."""
        runner = self.runners.get(spec.key)
        if runner is None:
            return
        runner.keep_alive_s = 0.0
        if runner.ref_count == 0:
            self.unload(runner)
        else:
            runner.expiring = True

    async def _load(self, spec: ModelSpec) -> Runner:
        try:
            async with self._load_lock:
                waited_s = await self._make_room()
                load_s = self.load_s(spec)
                await self.sleep(load_s)
                parallel = 1 if spec.is_embedding else self.cfg.num_parallel
                runner = Runner(spec, parallel, load_ns=int((load_s + waited_s) * 1e9))
                self.runners[spec.key] = runner
                # NOTE: the requests that waited for this load hold the runner from now on: the next
                # load (another model's, next in line for the lock) must not evict it before they
                # resume, or two models evict each other forever and their requests never run.
                for ticket in self._load_waiters.pop(spec.key, []):
                    ticket.runner = runner
                    runner.ref_count += 1
                    runner.idle.clear()
                self.stats.loads += 1
                self.poke()
                return runner
        finally:
            self._loading.pop(spec.key, None)

    async def _make_room(self) -> float:
        """Evict runners until one more fits; returns the nominal seconds spent waiting."""
        waited_s = 0.0
        while len(self.runners) >= self.cfg.max_loaded_models:
            idle = [r for r in self.runners.values() if r.ref_count == 0]
            if idle:
                victim = min(idle, key=lambda r: (r.keep_alive_s, r.spec.key))
                self.unload(victim)
                self.stats.evictions += 1
                continue
            # NOTE: as Ollama's scheduler: the shortest-duration runner is set to expire and the load
            # waits for its requests to finish.
            victim = min(self.runners.values(), key=lambda r: (r.keep_alive_s, r.spec.key))
            victim.expiring = True
            started = time.perf_counter()
            await victim.idle.wait()
            if self.cfg.time_scale > 0:
                waited_s += (time.perf_counter() - started) / self.cfg.time_scale
            if self.runners.get(victim.spec.key) is victim:
                self.unload(victim)
                self.stats.evictions += 1
        return waited_s

    # ----------------------------------------------------------------- slots
    async def acquire_slot(self, runner: Runner, prompt_ids: list[int]) -> tuple[Slot, float]:
        """Wait for a free slot; returns it with the nominal seconds waited.

        Raises:
            BusyError: in queue_mode "all" when every slot is taken and the queue is full.
        """
        taken = runner.take_free_slot(prompt_ids)
        if taken is not None:
            self.in_flight += 1
            self.poke()
            return taken, 0.0
        counted = self.cfg.queue_mode == "all"
        if counted:
            if self.queued >= self.cfg.max_queue:
                self.stats.busy_rejections += 1
                raise BusyError()
            self.queued += 1
            self.poke()
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        runner.waiters.append(waiter)
        started = time.perf_counter()
        try:
            slot = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                runner.give_back(waiter.result())
            raise
        finally:
            if counted:
                self.queued -= 1
                self.poke()
        self.in_flight += 1
        waited = time.perf_counter() - started
        return slot, (waited / self.cfg.time_scale if self.cfg.time_scale > 0 else 0.0)

    def release_slot(self, runner: Runner, slot: Slot, token_ids: list[int] | None) -> None:
        """Free a slot, remembering the conversation it now holds (None keeps the old cache)."""
        if token_ids is not None:
            slot.token_ids = token_ids
        slot.last_used = time.monotonic()
        self.in_flight -= 1
        runner.give_back(slot)
        self.poke()

    def account_prompt(self, spec: ModelSpec, evaluated: int, cached: int, generated: int) -> None:
        """Record token counters for `/_sim/stats`."""
        stats = self.stats
        stats.prompt_tokens_evaluated[spec.name] = stats.prompt_tokens_evaluated.get(spec.name, 0) + evaluated
        stats.prompt_tokens_cached[spec.name] = stats.prompt_tokens_cached.get(spec.name, 0) + cached
        stats.eval_tokens[spec.name] = stats.eval_tokens.get(spec.name, 0) + generated

    def unload_all(self) -> None:
        """Forget every loaded model (a restarted node starts cold)."""
        for runner in list(self.runners.values()):
            self.unload(runner)

    def close(self) -> None:
        """Cancel loads in progress and forget every model (the node is stopping)."""
        for task in list(self._loading.values()):
            task.cancel()
        self._loading.clear()
        self.unload_all()
