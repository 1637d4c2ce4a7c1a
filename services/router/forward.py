"""Forwarding to the nodes: pick, attempt, fail over, and continue a broken stream on another node."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from corral.v1 import common_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.router.admission import AdmissionQueue, Waiter
from services.router.balancer import Balancer, Candidate, Learning, PickContext
from services.router.config import StallConfig
from services.router.learning import StallLearner, outcome_of, request_size
from services.router.observe import AttemptRecord, Observer
from services.router.resilience import BackgroundGate, RetryBudget, StallWatch, TtftTimeout
from services.router.scores import Attempt, ScoreBoard
from services.router.telemetry import AttemptTrail
from services.router.translate import chat_body, generate_body, message_json, stats_from
from services.router.transport import NodeError, NodeTransport

logger = logging.getLogger(__name__)
# NOTE: a load_duration above this says the request loaded the model (a loaded one reports ~ms).
_LOAD_SEEN_S = 0.1
# NOTE: cool-downs after failures the router saw itself; health's ejection takes over when it runs.
_COOLDOWN_KINDS = {Attempt.CONNECTION, Attempt.TTFT_TIMEOUT, Attempt.STREAM_CUT, Attempt.MALFORMED}
# The attempts a learning balancer hears about: answers, and failures that are the node's fault.
_LEARNED = {
    Attempt.NONE,
    Attempt.CONNECTION,
    Attempt.TTFT_TIMEOUT,
    Attempt.SERVER,
    Attempt.STREAM_CUT,
    Attempt.MALFORMED,
}


@dataclass(slots=True)
class Job:
    """One generate or chat request on its way to the nodes.

    Attributes:
        spec: The GenerateSpec or ChatSpec.
        model: The normalised model name.
        affinity_key: Session or conversation-prefix key, if any.
        background: A background-priority request.
        deadline: time.monotonic() by which the answer must be complete, or None.
        received_at: time.perf_counter() when the router received the request.
        tenant: The tenant it acts for (its turn in the admission queue).
    """

    spec: common_pb2.GenerateSpec | common_pb2.ChatSpec
    model: str
    affinity_key: str | None = None
    background: bool = False
    deadline: float | None = None
    received_at: float = field(default_factory=time.perf_counter)
    tenant: str = ""

    @property
    def is_chat(self) -> bool:
        """True for a chat request."""
        return isinstance(self.spec, common_pb2.ChatSpec)

    @property
    def follow_up(self) -> bool:
        """True unless this is a chat's first turn (no earlier answer in it): a node may hold the
        conversation's prompt in its KV cache only from an earlier turn."""
        if not isinstance(self.spec, common_pb2.ChatSpec):
            return True
        return any(m.role.lower() in ("assistant", "tool") for m in self.spec.messages)

    @property
    def kind(self) -> str:
        """ "chat" or "generate"."""
        return "chat" if self.is_chat else "generate"


@dataclass(slots=True)
class Piece:
    """One streamed delta of the answer."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[Any] | None = None
    created_at: Any = None


@dataclass(slots=True)
class Final:
    """The end of the answer: stats and how it was routed."""

    done_reason: str
    stats: common_pb2.GenerationStats
    routing: common_pb2.RoutingInfo
    created_at: Any = None
    context: list[int] | None = None
    pieces: list[Piece] = field(default_factory=list)


class PrefixSkipper:
    """Drops a continuation's repeat of text the client already has.

    A node that honours the partial assistant message continues after it; one that starts over
    repeats it first. Text is held back while it could still be such a repeat, then either dropped
    (it was) or released (it was not).
    """

    def __init__(self, already_sent: str) -> None:
        self._sent = already_sent
        self._held = ""
        self._passing = not already_sent

    def feed(self, text: str) -> str:
        """Returns what may be emitted now."""
        if self._passing:
            return text
        self._held += text
        if len(self._held) >= len(self._sent):
            self._passing = True
            out = self._held[len(self._sent) :] if self._held.startswith(self._sent) else self._held
            self._held = ""
            return out
        if not self._sent.startswith(self._held):
            self._passing = True
            out, self._held = self._held, ""
            return out
        return ""


def continuation_request(job: Job, partial: str, thinking: str, pieces: int) -> tuple[str, dict[str, Any]]:
    """The request that continues a broken answer on another node: (path, body).

    Chat: the conversation plus the partial answer as the last (assistant) message, which Ollama
    continues. Generate: re-issued as a chat of system + user prompt + partial assistant message,
    or, for raw prompts, as a raw generate of prompt + partial. Custom templates and suffixes have
    no faithful continuation.

    Raises:
        Unavailable: when the request cannot be continued.
    """
    spec = job.spec
    partial_msg: dict[str, Any] = {"role": "assistant", "content": partial}
    if thinking:
        partial_msg["thinking"] = thinking
    if isinstance(spec, common_pb2.ChatSpec):
        path, body = "/api/chat", chat_body(spec)
        body["messages"].append(partial_msg)
    elif spec.raw and not spec.template and not spec.suffix:
        path, body = "/api/generate", generate_body(spec)
        body["prompt"] = spec.prompt + partial
    elif not spec.template and not spec.suffix and not spec.context:
        messages: list[dict[str, Any]] = []
        if spec.system:
            messages.append({"role": "system", "content": spec.system})
        user = message_json(common_pb2.ChatMessage(role="user", content=spec.prompt, images=spec.images))
        messages += [user, partial_msg]
        body = generate_body(spec)
        for key in ("prompt", "system", "raw", "suffix", "template"):
            body.pop(key, None)
        path, body = "/api/chat", {**body, "messages": messages}
    else:
        # NOTE: a chat cannot carry `context` token ids, so such a generate has no faithful continuation.
        raise Unavailable(
            "an answer with a custom template, suffix or context cannot be continued on another node"
        )
    options = body.get("options")
    if options and isinstance(options.get("num_predict"), int) and options["num_predict"] > 0:
        options["num_predict"] = max(1, options["num_predict"] - pieces)
    return path, body


def _piece(chunk: dict[str, Any], chat: bool) -> Piece:
    if chat:
        message = chunk.get("message") or {}
        return Piece(
            text=message.get("content") or "",
            thinking=message.get("thinking") or "",
            tool_calls=message.get("tool_calls"),
            created_at=chunk.get("created_at"),
        )
    return Piece(
        text=chunk.get("response") or "",
        thinking=chunk.get("thinking") or "",
        created_at=chunk.get("created_at"),
    )


class Forwarder:
    """Runs a job against the nodes with failover, retry budget, TTFT timeout and continuation."""

    def __init__(
        self,
        *,
        board: ScoreBoard,
        balancer: Balancer,
        transport: NodeTransport,
        budget: RetryBudget,
        ttft: TtftTimeout,
        gate: BackgroundGate,
        observer: Observer,
        node_cooldown_s: float,
        busy_cooldown_s: float,
        background_node_threshold: int,
        buffered_read_timeout_s: float = 120.0,
        admission: AdmissionQueue | None = None,
        stall: StallConfig | None = None,
    ) -> None:
        self.board = board
        self.balancer = balancer
        self.transport = transport
        self.budget = budget
        self.ttft = ttft
        self.gate = gate
        self.observer = observer
        self._cooldown_s = node_cooldown_s
        self._busy_cooldown_s = busy_cooldown_s
        self._bg_threshold = background_node_threshold
        self._buffered_read_s = buffered_read_timeout_s
        self._learner = balancer if isinstance(balancer, Learning) else None
        self.admission = admission or AdmissionQueue(0, 1.0, 1.0)
        stall = stall or StallConfig()
        self.stall = StallLearner(stall) if stall.enabled else None

    async def choose(
        self,
        model: str,
        exclude: list[str],
        affinity: str | None,
        background: bool,
        deadline: float | None,
        size: tuple[int, int | None] = (0, None),
        tenant: str = "",
        follow_up: bool = True,
    ) -> Candidate:
        """Picks a node, waiting in the admission queue while every node that could serve is full.

        `size` is the request's (prompt characters, num_predict) for a balancer that scores them;
        `follow_up` False marks a conversation's first turn (see `Job.follow_up`).

        Raises:
            Unavailable: No node can serve the model (none installed it, all failed or ejected).
            Saturated: Every node that could serve is full and the request could not wait.
            DeadlineExceeded: The deadline passed while the request waited.
        """
        ctx = PickContext(
            model=model,
            affinity_key=affinity,
            background=background,
            prompt_chars=size[0],
            num_predict=size[1],
            follow_up=follow_up,
        )
        waiter: Waiter | None = None
        # NOTE: a balancer that weighs full nodes (`ect`) sees them too; when it picks one, waiting
        # for that node's slot beats the free nodes, so the request waits in the admission queue
        # and is placed again when a slot frees. Background requests take what is free.
        weigh_full = getattr(self.balancer, "weighs_full", False) and not background
        try:
            while True:
                candidates = self.board.candidates(
                    model,
                    exclude=exclude,
                    background=background,
                    background_threshold=self._bg_threshold,
                    include_full=weigh_full,
                )
                # NOTE: a newcomer queues behind earlier waiters for the model instead of taking the
                # slot just handed to one of them. With a balancer that weighs full nodes it is
                # placed first, behind the whole queue: a free node the waiters passed over (a
                # slower one) may still serve it sooner than the queue drains, and then it takes it.
                held = waiter is None and self.admission.holds(model, background)
                if held and (not weigh_full or self.admission.granting(model)):
                    picked = None
                else:
                    if weigh_full:
                        ahead = waiter.ahead if waiter is not None else self.admission.waiting(model)
                        ctx = replace(ctx, waiting_ahead=ahead)
                    picked = self.balancer.pick(ctx, candidates)
                better_full = picked is not None and picked.full
                if better_full:
                    picked = None
                if picked is not None:
                    if waiter is not None:
                        self.admission.taken(waiter)
                        waiter = None
                    if not picked.loaded:
                        self.board.loading(picked.node_id, model)
                    return picked
                if not held and background and self.board.candidates(model, exclude=exclude):
                    if waiter is not None:
                        self.admission.leave(waiter)
                        waiter = None
                    remaining = 30.0 if deadline is None else deadline - time.monotonic()
                    if await self.gate.wait_for_room(remaining):
                        continue
                    raise Unavailable(
                        "background request yielded: every node is busy with interactive traffic"
                    )
                if held or better_full or self.board.candidates(model, exclude=exclude, include_full=True):
                    if waiter is None:
                        waiter = await self.admission.wait(tenant, model, background, deadline)
                    else:
                        waiter = await self.admission.rewait(waiter, deadline, passing_over=better_full)
                    continue
                tried = f" (failed: {', '.join(exclude)})" if exclude else ""
                raise Unavailable(f"no node can serve model {model!r} now{tried}", reason="NO_NODE_AVAILABLE")
        finally:
            if waiter is not None:
                self.admission.leave(waiter)

    def _release_slot(self, node_id: str) -> None:
        """A request on the node ended: the slot goes to the next waiter whose model the node serves."""
        self.admission.release(self._serves(node_id))

    def _serves(self, node_id: str) -> Callable[[str], bool]:
        def serves(model: str) -> bool:
            node = self.board.nodes.get(node_id)
            if node is None or model in self.board.local(node_id).missing_models:
                return False
            if node.models is None:
                return True
            view = node.models.get(model)
            return view is not None and view.installed

        return serves

    def nodes_changed(self) -> None:
        """Health's view changed (a node added, recovered, undrained): hands the free slots of the
        routable nodes to waiters, since no request's end will announce them."""
        if not self.admission.depth:
            return
        for node in list(self.board.nodes.values()):
            if not node.routable:
                continue
            free = self.board.inflight_limit(node) - self.board.local(node.node_id).inflight
            serves = self._serves(node.node_id)
            for _ in range(max(0, free)):
                if not self.admission.release(serves):
                    break

    def allow_retry(self) -> bool:
        allowed = self.budget.try_withdraw()
        self.observer.retry(allowed)
        return allowed

    def finish_attempt(
        self, job_kind: str, model: str, node: Candidate, interactive: bool, outcome: Attempt, **extra: Any
    ) -> None:
        inflight = self.board.end(node.node_id, interactive)
        self._release_slot(node.node_id)
        if interactive:
            self.gate.notify_room()
        latency_ms = extra.pop("latency_ms")
        cooldown = self._cooldown_s if outcome in _COOLDOWN_KINDS else 0.0
        if outcome is Attempt.BUSY:
            cooldown = self._busy_cooldown_s
        self.board.record(node.node_id, model, outcome, latency_ms, cooldown)
        self.observer.attempt(
            AttemptRecord(
                node.node_id, model, job_kind, outcome, latency_ms, inflight_after=inflight, **extra
            )
        )

    def check_client_error(self, err: NodeError, field: str) -> None:
        """Raises the client-facing error for a node's 4xx (the request's fault, not the node's)."""
        if err.kind is Attempt.CLIENT and not err.model_missing:
            lowered = err.message.lower()
            for word in ("think", "tools", "format", "raw", "images"):
                if word in lowered:
                    raise InvalidArgument(f"{field}.{word}", err.message, reason="REJECTED_BY_NODE")
            raise InvalidArgument(field, err.message, reason="REJECTED_BY_NODE")

    async def run(
        self, job: Job, *, emit: bool = True, buffered: bool = False
    ) -> AsyncGenerator[Piece | Final, None]:
        """Yields the answer's pieces and then one Final; raises CorralError subclasses.

        With `emit` False the pieces are not yielded one by one but handed over in `Final.pieces`
        (a unary caller saves a generator hop per token); failover and continuation are the same.
        With `buffered` (unary callers only) the node is asked for one JSON reply instead of a stream:
        cheaper for node and router, but the first byte is the whole answer, so the wait for it is
        bounded by `buffered_read_timeout_s` instead of the TTFT timeout, and a failed attempt is
        retried from scratch on another node (there is no partial answer to continue).
        """
        collected: list[Piece] = []
        interactive = not job.background
        failed: list[str] = []
        attempts = 0
        sent_text = ""
        sent_thinking = ""
        pieces_sent = 0
        ttft_ms = 0.0
        last_error = ""
        resumed = False
        trail = AttemptTrail(job.model, job.kind, job.spec)
        size = request_size(job.spec) if self._learner is not None else (0, None)
        self.budget.deposit()
        while True:
            if job.deadline is not None and time.monotonic() >= job.deadline:
                raise DeadlineExceeded("the deadline passed before a node could answer")
            if attempts > 0 and not self.allow_retry():
                raise self._give_up(
                    job, failed, sent_text, f"retry budget exhausted; last error: {last_error}"
                )
            try:
                node = await self.choose(
                    job.model,
                    failed,
                    job.affinity_key,
                    job.background,
                    job.deadline,
                    size,
                    job.tenant,
                    job.follow_up,
                )
            except Unavailable as exc:
                if attempts == 0 and not failed:
                    raise
                raise self._give_up(
                    job, failed, sent_text, f"{exc.message}; last error: {last_error}"
                ) from None
            if sent_text or sent_thinking:
                try:
                    path, body = continuation_request(job, sent_text, sent_thinking, pieces_sent)
                except Unavailable as exc:
                    raise self._give_up(job, failed, sent_text, exc.message) from None
                resumed = True
            elif job.is_chat:
                path, body = "/api/chat", chat_body(job.spec)  # type: ignore[arg-type]
            else:
                path, body = "/api/generate", generate_body(job.spec)  # type: ignore[arg-type]
            chat_reply = path == "/api/chat"
            skipper = PrefixSkipper(sent_text)
            attempts += 1
            remaining = None if job.deadline is None else job.deadline - time.monotonic()
            read_base_s: float | None = None
            if buffered:
                body["stream"] = False
                read_base_s = self._buffered_read_s
            read_timeout_s = self.ttft.budget_s(node.loaded, remaining, read_base_s)
            watch = None
            if not buffered and self.stall is not None:
                chars = request_size(job.spec)[0] + len(sent_text) + len(sent_thinking)
                watch = self._stall_watch(self.stall, node, job.model, read_timeout_s, chars)
            self.board.begin(node.node_id, interactive)
            started = time.perf_counter()
            trail.begin(node.node_id, attempts, resumed)
            first_at = 0.0
            outcome = Attempt.CANCELLED
            final_chunk: dict[str, Any] | None = None
            try:
                stream = self.transport.stream(
                    node.address,
                    path,
                    body,
                    read_timeout_s=read_timeout_s,
                    deadline=job.deadline,
                    watch=watch,
                )
                async with aclosing(stream) as chunks:
                    async for chunk in chunks:
                        if not first_at:
                            first_at = time.perf_counter()
                        done = bool(chunk.get("done"))
                        if done:
                            final_chunk = chunk
                        # NOTE: a streamed answer's last chunk is empty; a buffered reply is all in it.
                        piece = _piece(chunk, chat_reply)
                        piece.text = skipper.feed(piece.text)
                        if piece.text or piece.thinking or piece.tool_calls:
                            if not ttft_ms:
                                ttft_ms = (time.perf_counter() - job.received_at) * 1000
                            sent_text += piece.text
                            sent_thinking += piece.thinking
                            pieces_sent += 1
                            if emit:
                                yield piece
                            else:
                                collected.append(piece)
                        if done:
                            break
                outcome = Attempt.NONE
            except NodeError as err:
                outcome = err.kind
                last_error = f"{node.node_id}: {err.message}"
                if err.model_missing:
                    self.board.mark_missing(node.node_id, job.model)
                if err.kind is Attempt.TIMEOUT:
                    raise DeadlineExceeded(f"the deadline passed while {node.node_id} answered") from None
                if watch is not None and watch.stalled:
                    self._stalled(node.node_id, job.model, watch, len(sent_text))
                self.check_client_error(err, "spec")
                failed.append(node.node_id)
                continue
            finally:
                stats = stats_from(final_chunk) if final_chunk is not None else None
                latency_ms = (time.perf_counter() - started) * 1000
                if self.stall is not None and watch is not None and stats is not None and watch.first_wait_s:
                    # NOTE: the wait the router measured, not Ollama's load_duration: it holds the
                    # queue and prompt too, and a simulator at a time scale reports nominal durations.
                    load_s = stats.load_duration.seconds + stats.load_duration.nanos / 1e9
                    if load_s > _LOAD_SEEN_S:
                        self.stall.loaded(node.node_id, job.model, watch.first_wait_s)
                # NOTE: a buffered reply's first byte is the whole answer: no TTFT sample for health.
                attempt_ttft_ms = (first_at - started) * 1000 if first_at and not buffered else 0.0
                self.finish_attempt(
                    job.kind,
                    job.model,
                    node,
                    interactive,
                    outcome,
                    latency_ms=latency_ms,
                    ttft_ms=attempt_ttft_ms,
                    prompt_tokens=stats.prompt_eval_count if stats else 0,
                    eval_tokens=stats.eval_count if stats else 0,
                    tokens_per_s=_tokens_per_s(stats),
                )
                if self._learner is not None and outcome in _LEARNED:
                    self._learner.observe(
                        outcome_of(
                            node.node_id,
                            job.model,
                            outcome is Attempt.NONE,
                            stats,
                            concurrency=node.local_inflight + 1,
                            fleet_concurrency=node.reported_inflight + 1,
                            latency_ms=latency_ms,
                            ttft_ms=attempt_ttft_ms,
                            prompt_chars=size[0],
                            num_predict=size[1],
                        )
                    )
                trail.end(outcome)
            assert final_chunk is not None and stats is not None
            routing = common_pb2.RoutingInfo(
                node_id=node.node_id,
                attempts=attempts,
                resumed=resumed,
                failed_node_ids=failed,
                ttft_ms=ttft_ms or (time.perf_counter() - job.received_at) * 1000,
            )
            context = final_chunk.get("context")
            yield Final(
                done_reason=str(final_chunk.get("done_reason") or "stop"),
                stats=stats,
                routing=routing,
                created_at=final_chunk.get("created_at"),
                context=context if isinstance(context, list) and not chat_reply else None,
                pieces=collected,
            )
            return

    def _stall_watch(
        self, stall: StallLearner, node: Candidate, model: str, cap_s: float, prompt_chars: int
    ) -> StallWatch:
        """The stall watch of a streamed attempt."""
        first, gap = stall.bounds(
            node.node_id, model, loaded=node.loaded, cap_s=cap_s, prompt_chars=prompt_chars
        )
        stats = stall.stats_of(node.node_id, model)
        return StallWatch(
            stall, node.node_id, stats, first, gap, learn_first=node.loaded, prompt_chars=prompt_chars
        )

    def _stalled(self, node_id: str, model: str, watch: StallWatch, sent_chars: int) -> None:
        """Counts a declared stall and says why it was declared."""
        assert self.stall is not None
        self.stall.stalled(node_id, watch.phase)
        logger.debug(
            "stall on %s (%s, %s): no chunk for %.3g s, bound %s; node silent as long; "
            "continuing elsewhere after %d characters",
            node_id,
            model,
            watch.phase,
            watch.waited_s,
            watch.bound.why,
            sent_chars,
        )

    def _give_up(self, job: Job, failed: list[str], sent_text: str, why: str) -> Unavailable:
        if sent_text:
            return Unavailable(
                f"node {failed[-1]} failed mid-stream after {len(sent_text)} characters and the answer "
                f"could not be continued on another node: {why}",
                reason="STREAM_NOT_CONTINUED",
            )
        return Unavailable(
            f"no node could answer (tried {', '.join(failed)}): {why}", reason="NODES_UNAVAILABLE"
        )


def _tokens_per_s(stats: common_pb2.GenerationStats | None) -> float:
    if stats is None:
        return 0.0
    eval_s = stats.eval_duration.seconds + stats.eval_duration.nanos / 1e9
    return stats.eval_count / eval_s if eval_s > 0 else 0.0
