"""Unit tests of the admission queue (services/router/admission.py) and of the forwarder's wait in it:
pure asyncio, no processes."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest

from services.common.errors import DeadlineExceeded, Unavailable
from services.router.admission import AdmissionQueue, Saturated, Waiter
from services.router.balancer import Ect, make_balancer
from services.router.config import BalancerConfig, EctConfig
from services.router.forward import Forwarder
from services.router.learning import Outcome
from services.router.observe import Observer
from services.router.resilience import BackgroundGate, RetryBudget, TtftTimeout
from services.router.scores import Attempt, ModelView, NodeView, ScoreBoard
from services.router.transport import NodeTransport

MODEL = "llama3.2:1b"


class Line:
    """Waiters started as tasks; a granted waiter records its name and (unless told not to) takes its slot."""

    def __init__(self, queue: AdmissionQueue) -> None:
        self.queue = queue
        self.granted: list[str] = []
        self.waiters: dict[str, Waiter] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._news = asyncio.Event()

    async def join(
        self,
        name: str,
        tenant: str,
        *,
        background: bool = False,
        model: str = MODEL,
        deadline: float | None = None,
        take: bool = True,
    ) -> asyncio.Task[None]:
        """Starts a waiter; returns once it is in the queue (or refused)."""
        started = asyncio.Event()

        async def wait() -> None:
            started.set()  # NOTE: no yield here: the task goes on into the queue before the joiner runs
            waiter = await self.queue.wait(tenant, model, background, deadline)
            self.waiters[name] = waiter
            self.granted.append(name)
            if take:
                self.queue.taken(waiter)
            self._news.set()

        task = asyncio.create_task(wait())
        self.tasks[name] = task
        await started.wait()
        return task

    async def next_grant(self) -> str:
        """Waits for the next waiter to be granted; returns its name."""
        self._news.clear()
        await self._news.wait()
        return self.granted[-1]

    async def release_one(self) -> str:
        """Frees one slot and returns who got it."""
        self._news.clear()
        assert self.queue.release()
        await self._news.wait()
        return self.granted[-1]


async def test_tenants_take_turns() -> None:
    line = Line(AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2))
    for i in range(4):
        await line.join(f"a{i}", "tenant-a")
    for i in range(2):
        await line.join(f"b{i}", "tenant-b")
    order = [await line.release_one() for _ in range(6)]
    assert order == ["a0", "b0", "a1", "b1", "a2", "a3"]
    assert line.queue.depth == 0 and line.queue.admitted == 6


async def test_user_requests_go_before_background_ones() -> None:
    line = Line(AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2))
    await line.join("prewarm", "seed", background=True)
    await line.join("user-a", "tenant-a")
    await line.join("user-b", "tenant-b")
    assert [await line.release_one() for _ in range(3)] == ["user-a", "user-b", "prewarm"]


async def test_waiters_sleep_until_a_slot_frees() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    line = Line(queue)
    task = await line.join("a0", "tenant-a", model="mistral:7b")
    # A slot on a node without the waiter's model wakes nobody.
    assert not queue.release(lambda model: model == MODEL)
    await asyncio.sleep(0)
    assert not task.done() and queue.depth == 1
    assert await line.release_one() == "a0"
    await task


async def test_the_bound_refuses_at_once_and_makes_room_fairly() -> None:
    queue = AdmissionQueue(max_waiting=3, max_wait_s=60, retry_after_s=2.5)
    line = Line(queue)
    a0 = await line.join("a0", "tenant-a")
    a1 = await line.join("a1", "tenant-a")
    bg = await line.join("bg", "seed", background=True)
    # Full: a user request displaces the background waiter.
    await line.join("a2", "tenant-a")
    with pytest.raises(Saturated):
        await bg
    # Full of tenant A: A's next request is refused at once, with a retry hint.
    with pytest.raises(Saturated) as refused:
        await queue.wait("tenant-a", MODEL, False, None)
    assert refused.value.reason == "QUEUE_FULL" and refused.value.retry_after_s == 2.5
    # Tenant B, with fewer waiters, makes room by refusing A's newest waiter.
    await line.join("b0", "tenant-b")
    with pytest.raises(Saturated):
        await line.tasks["a2"]
    assert queue.depth == 3
    assert queue.refusals == {"displaced": 2, "queue_full": 1}
    assert [await line.release_one() for _ in range(3)] == ["a0", "b0", "a1"]
    await asyncio.gather(a0, a1)


async def test_no_queue_refuses_at_once() -> None:
    queue = AdmissionQueue(max_waiting=0, max_wait_s=60, retry_after_s=1)
    with pytest.raises(Saturated):
        await queue.wait("tenant-a", MODEL, False, None)
    assert queue.depth == 0


async def test_a_waiter_leaves_at_its_deadline_and_its_turn_passes_on() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    line = Line(queue)
    late = await line.join("late", "tenant-a", deadline=time.monotonic())
    with pytest.raises(DeadlineExceeded):
        await late
    await line.join("b0", "tenant-b")
    assert queue.depth == 1
    assert await line.release_one() == "b0"
    assert queue.refusals == {"deadline": 1}


async def test_the_longest_wait_is_bounded() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=0.01, retry_after_s=2)
    with pytest.raises(Saturated) as refused:
        await queue.wait("tenant-a", MODEL, False, None)
    assert refused.value.reason == "QUEUE_TIMEOUT"
    assert queue.depth == 0


async def test_a_granted_waiter_that_goes_away_hands_its_slot_on() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    line = Line(queue)
    await line.join("gone", "tenant-a", take=False)
    await line.join("b0", "tenant-b")
    assert await line.release_one() == "gone"
    assert queue.holds(MODEL, background=False)  # the granted slot is reserved for it
    grant = asyncio.create_task(line.next_grant())
    queue.leave(line.waiters["gone"])  # e.g. its client went away before it used the slot
    assert await grant == "b0"
    assert not queue.holds(MODEL, background=False)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    line = Line(queue)
    task = await line.join("a0", "tenant-a")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.depth == 0 and not queue.release()


async def test_a_waiter_that_lost_its_slot_waits_again_at_the_front() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    line = Line(queue)
    await line.join("a0", "tenant-a", take=False)
    await line.join("a1", "tenant-a")
    assert await line.release_one() == "a0"
    # Its slot was taken by another request before it could use it: it waits again, first in line.
    waiter = line.waiters["a0"]
    started = asyncio.Event()

    async def rewait() -> None:
        started.set()
        await queue.rewait(waiter, None)

    again = asyncio.create_task(rewait())
    await started.wait()
    assert queue.depth == 2
    assert queue.release()
    await again
    queue.taken(waiter)
    assert line.granted == ["a0"] and queue.depth == 1


async def test_newcomers_queue_behind_waiters_of_their_model() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    line = Line(queue)
    assert not queue.holds(MODEL, background=False)
    await line.join("bg", "seed", background=True)
    assert not queue.holds(MODEL, background=False)  # a user request is not held by background ones
    assert queue.holds(MODEL, background=True)
    await line.join("a0", "tenant-a")
    assert queue.holds(MODEL, background=False)
    assert not queue.holds("mistral:7b", background=False)


# --- wired into the forwarder: the node choice waits in the queue ------------------------------


def _forwarder(queue: AdmissionQueue, *nodes: NodeView) -> Forwarder:
    board = ScoreBoard(BalancerConfig(inflight_per_slot=1))
    board.apply_snapshot(list(nodes), version=1, stale_after_s=60.0)
    return Forwarder(
        board=board,
        balancer=make_balancer("least_inflight", BalancerConfig()),
        transport=cast(NodeTransport, None),  # choose() never reaches a node
        budget=RetryBudget(),
        ttft=TtftTimeout(10.0, 0.0),
        gate=BackgroundGate(2, 1.0),
        observer=Observer(),
        node_cooldown_s=0.0,
        busy_cooldown_s=0.0,
        background_node_threshold=2,
        admission=queue,
    )


def _one_slot_node(node_id: str, model: str = MODEL) -> NodeView:
    models = {model: ModelView(model, loaded=True)}
    return NodeView(node_id, f"http://{node_id}", models=models, labels={"num_parallel": "1"})


async def test_a_request_for_a_full_node_waits_for_the_slot_it_frees() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    fwd = _forwarder(queue, _one_slot_node("n1"))
    first = await fwd.choose(MODEL, [], None, False, None, tenant="tenant-a")
    fwd.board.begin(first.node_id, True)
    started = asyncio.Event()

    async def second() -> str:
        started.set()
        return (await fwd.choose(MODEL, [], None, False, None, tenant="tenant-b")).node_id

    waiting = asyncio.create_task(second())
    await started.wait()
    assert queue.depth == 1 and not waiting.done()
    fwd.finish_attempt("chat", MODEL, first, True, Attempt.NONE, latency_ms=5.0)
    assert await waiting == "n1"
    assert queue.depth == 0 and queue.admitted == 1


async def test_no_node_with_the_model_is_unavailable_not_queued() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    fwd = _forwarder(queue, _one_slot_node("n1", model="other:latest"))
    with pytest.raises(Unavailable) as caught:
        await fwd.choose(MODEL, [], None, False, None, tenant="tenant-a")
    assert caught.value.reason == "NO_NODE_AVAILABLE" and queue.waits == 0


async def test_a_full_fleet_without_a_queue_refuses_with_resource_exhausted() -> None:
    queue = AdmissionQueue(max_waiting=0, max_wait_s=60, retry_after_s=2)
    fwd = _forwarder(queue, _one_slot_node("n1"))
    fwd.board.begin("n1", True)
    with pytest.raises(Saturated) as caught:
        await fwd.choose(MODEL, [], None, False, None, tenant="tenant-a")
    assert caught.value.code.name == "RESOURCE_EXHAUSTED" and caught.value.reason == "QUEUE_FULL"


async def test_a_slot_passed_over_is_offered_once_to_the_newest_waiter() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    line = Line(queue)
    for name, tenant in (("a0", "tenant-a"), ("a1", "tenant-a"), ("b0", "tenant-b"), ("a2", "tenant-a")):
        await line.join(name, tenant, take=False)
    assert await line.release_one() == "a0"
    head = line.waiters["a0"]
    assert head.ahead == 0 and not head.passed_over
    # The next in turn prefers to wait for a full node: the newest waiter, with the other three
    # ahead of it, is offered the slot.
    passing = asyncio.create_task(queue.rewait(head, None, passing_over=True))
    assert await line.next_grant() == "a2"
    newest = line.waiters["a2"]
    assert newest.ahead == 3 and newest.passed_over
    # It passes it over too: it goes back to the tail and nobody else is offered the slot.
    started = asyncio.Event()

    async def pass_again() -> None:
        started.set()
        await queue.rewait(newest, None, passing_over=True)

    again = asyncio.create_task(pass_again())
    await started.wait()
    assert queue.depth == 4 and not queue.granting(MODEL) and queue.waiting(MODEL) == 4
    for task in (passing, again, *line.tasks.values()):
        task.cancel()
    await asyncio.gather(passing, again, *line.tasks.values(), return_exceptions=True)


def _learned(node_id: str, eval_ms_per_token: float) -> Outcome:
    """One answer of 40 tokens after 20 prompt tokens at 2 ms each, as the node reported it."""
    eval_ms = 40 * eval_ms_per_token
    return Outcome(
        node_id=node_id,
        model=MODEL,
        concurrency=1,
        latency_ms=40.0 + eval_ms + 2.0,
        ttft_ms=42.0,
        prompt_chars=80,
        prompt_tokens=20,
        prompt_ms=40.0,
        output_tokens=40,
        eval_ms=eval_ms,
        load_ms=0.0,
        total_ms=40.0 + eval_ms,
    )


async def test_with_ect_a_newcomer_behind_a_waiter_takes_the_idle_slower_node() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    fwd = _forwarder(queue, _one_slot_node("fast"), _one_slot_node("slow"))
    balancer = make_balancer("ect", BalancerConfig(ect=EctConfig(default_slots=1)))
    assert isinstance(balancer, Ect)
    for _ in range(10):
        balancer.observe(_learned("fast", 10.0))  # 440 ms a request
        balancer.observe(_learned("slow", 40.0))  # 1,640 ms
    fwd.balancer = balancer
    busy = await fwd.choose(MODEL, [], None, False, None, size=(80, None))
    assert busy.node_id == "fast"
    fwd.board.begin("fast", True)
    # The fast node is full, yet its slot frees sooner (about 1.5 x 440 ms) than the slow node
    # answers: the first request waits for it.
    started = asyncio.Event()

    async def first() -> str:
        started.set()
        return (await fwd.choose(MODEL, [], None, False, None, size=(80, None), tenant="t")).node_id

    waiting = asyncio.create_task(first())
    await started.wait()
    assert queue.depth == 1 and not waiting.done()
    # The next one has that request ahead of it for the fast node: the idle slow node is sooner.
    second = await fwd.choose(MODEL, [], None, False, None, size=(80, None), tenant="t")
    assert second.node_id == "slow" and second.estimate is not None
    fwd.board.begin("slow", True)
    fwd.finish_attempt("chat", MODEL, busy, True, Attempt.NONE, latency_ms=440.0)
    assert await waiting == "fast"
    assert queue.depth == 0 and queue.admitted == 1


async def test_a_node_that_joins_takes_the_waiting_requests_at_once() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    fwd = _forwarder(queue, _one_slot_node("n1"))
    fwd.board.begin("n1", True)
    started = asyncio.Event()

    async def waiting() -> str:
        started.set()
        return (await fwd.choose(MODEL, [], None, False, None, tenant="t")).node_id

    task = asyncio.create_task(waiting())
    await started.wait()
    assert queue.depth == 1
    fwd.nodes_changed()  # nothing new: n1 is still full, the request keeps waiting
    assert queue.depth == 1 and not task.done()
    # Health reports a second node: its free slot goes to the waiter without any request ending.
    fwd.board.apply_update([_one_slot_node("n2")], [], version=2)
    fwd.nodes_changed()
    assert await task == "n2"


async def test_a_request_sent_to_a_node_without_its_model_marks_the_other_models_evicted() -> None:
    queue = AdmissionQueue(max_waiting=10, max_wait_s=60, retry_after_s=2)
    # NOTE: a view from health's probe (a probe time); a static node's view decides by itself.
    other = "other:latest"
    models = {MODEL: ModelView(MODEL, loaded=False), other: ModelView(other, loaded=True)}
    probed = time.monotonic() - 1
    node = NodeView("n1", "http://n1", models=models, labels={"num_parallel": "2"}, probed_at=probed)
    fwd = _forwarder(queue, node)
    assert fwd.board.candidates(other)[0].loaded
    picked = await fwd.choose(MODEL, [], None, False, None)
    assert picked.node_id == "n1" and not picked.loaded
    # The load may evict the other model: until a probe or an answer says otherwise, it is not held.
    assert not fwd.board.candidates(other)[0].loaded
