"""The routing yardstick: an offline discrete-event model of a scenario's fleet and arrival trace.

    PYTHONPATH=.:gen/python .venv/bin/python -m bench.oracle --scenario heterogeneous --load 0.7

The model is the simulator's cost model (sim/engine.py, sim/completion.py) with nothing else in the
way: a request on a node of speed f takes prompt_tokens / (600 f) + output_tokens / (60 f) nominal
seconds, times the time scale; each node runs `num_parallel` requests at once and queues the rest
first come, first served (the runner's waiter queue). The trace is the load generator's own
(bench/harness/workload.py `poisson_arrivals` with the same seed, the same unique questions), and
each request's answer length is the one the simulator would draw for it on each node (it depends on
the node's seed). No network, no router, no failures: the live systems pay a few milliseconds more
per request, and a failing node's fast errors are not modelled.

Policies (each routes every request at its arrival, with the knowledge stated). The expected-time
policies minimise w x wait + service, w the `ect` strategy's `queue_weight` (1.5): a request that
joins a queue also delays every later request there, and weighing the wait beats plain earliest
completion (w = 1) for every policy here, the oracle included (at 70 % load on the heterogeneous
fleet the oracle's p99 is 1.98 s with w = 1.5 against 2.09 s with w = 1).

- `oracle`: true speeds, slots, the remaining work of every request on every node and the size of
  this one. The report's "oracle" row: no online router knows more. It is a greedy rule, so it is
  a yardstick rather than a proven bound.
- `oracle_state`: as `oracle` without this request's answer length (the mean length instead).
- `sed`: shortest expected delay on counts: (in flight + 1) x mean service time / slots.
- `ect`: the `ect` strategy's own score (services/router/learning.py `score`) with the true
  per-token costs, slots and mean answer length: what the strategy does once it has learned.
- `ect_elapsed`: `ect` that also knows when each in-flight request was sent, and so the expected
  remaining time of each, as a router keeping the start times of its requests could.
- `ect_learned`: the router's `ect` balancer itself (services/router/balancer.py `Ect`), starting
  from nothing and learning from the outcomes of the requests it routed (Ollama's stats as the
  simulator reports them): what the live strategy should reach without network noise.
- `p2c_ect`: the `p2c_ect` strategy idealised: power of two choices on (in flight + 1) x the mean
  service time (the live one uses latency EWMAs, which include queueing).
- `least_inflight`, `round_robin`, `random`.

Mixed models (`chat_trace(mix=...)`): each node holds one model at a time (the simulator's
`--max-loaded-models 1`) and starts with llama3.2:1b loaded. A request for another model waits for
every request on the node to finish, then for the load (the simulator's 0.3 s + 2 s per GB at speed
1), as the simulator's scheduler does; the policies that know the fleet see which model each node
holds, and `oracle` weighs the drain and the load like any wait. It stays greedy: it does not count
what a swap costs the requests that come after it.

Round robin and random send a quarter of the traffic to the 0.25x node, more than it can serve at
any of these loads: its queue grows without bound, so their p99 grows with the trace's length.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import os
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench.harness.report import machine
from bench.harness.stats import percentile
from bench.harness.stats import rounded as stats_round
from bench.harness.workload import ModelMix, RateProfile, model_of, poisson_arrivals, unique_question
from services.router.balancer import Candidate, Ect, PickContext
from services.router.config import BalancerConfig, EctConfig
from services.router.learning import Outcome, score
from sim import textgen
from sim.config import BUILTIN_MODELS, NodeConfig, normalize_model_name

MODEL = "llama3.2:1b"
# NOTE: the simulator's defaults (sim/config.py NodeConfig): 600 prompt tokens/s, 60 tokens/s, natural
# answers of 20-60 tokens drawn from (node seed, model, rendered prompt).
PROMPT_TOK_S = 600.0
EVAL_TOK_S = 60.0
ANSWER_MIN, ANSWER_MAX = 20, 60
# NOTE: the simulator's own model table and load costs (sim/config.py), not copies: a model's own
# rates replace the node's defaults (at speed 1), and its size sets its load time.
_SIM_NODE = NodeConfig()
LOAD_BASE_S, LOAD_S_PER_GB = _SIM_NODE.load_base_s, _SIM_NODE.load_s_per_gb


def model_rates(model: str) -> tuple[float, float]:
    """The simulator's prompt and generation tokens/s of `model` at speed 1."""
    spec = BUILTIN_MODELS[normalize_model_name(model)]
    return spec.prompt_eval_tok_s or PROMPT_TOK_S, spec.eval_tok_s or EVAL_TOK_S


def model_bytes(model: str) -> int:
    """The size of `model` in the simulator's table (0 when it has none)."""
    spec = BUILTIN_MODELS.get(normalize_model_name(model))
    return 0 if spec is None else spec.size_bytes


POLICIES = (
    "oracle",
    "oracle_state",
    "sed",
    "ect",
    "ect_elapsed",
    "ect_learned",
    "p2c_ect",
    "least_inflight",
    "round_robin",
    "random",
)


@dataclass(frozen=True, slots=True)
class NodeModel:
    """One simulated node as the cost model sees it.

    Attributes:
        node_id: The node's id.
        speed: The simulator's --speed-factor.
        slots: The simulator's --num-parallel.
        seed: The simulator's --seed (the answer length of a prompt depends on it).
        prompt_tok_s: Prompt evaluation rate at speed 1.
        eval_tok_s: Generation rate at speed 1.
        slow: Windows (from, until, factor) in trace seconds during which the node runs `factor`
            times slower: the simulator's `slow` fault, set and cleared at those times.
    """

    node_id: str
    speed: float
    slots: int
    seed: int
    prompt_tok_s: float = PROMPT_TOK_S
    eval_tok_s: float = EVAL_TOK_S
    slow: tuple[tuple[float, float, float], ...] = ()

    def speed_at(self, at: float | None) -> float:
        """The node's speed at trace time `at` (its nominal speed when `at` is None)."""
        if at is not None:
            for since, until, factor in self.slow:
                if since <= at < until:
                    return self.speed / factor
        return self.speed

    def service_s(
        self,
        prompt_tokens: float,
        output_tokens: float,
        time_scale: float,
        at: float | None = None,
        model: str = MODEL,
    ) -> float:
        """Seconds a request holds a slot (sim/completion.py: prompt evaluation, then generation).

        With `at`, the speed in force then: the simulator reads its slow factor when a request's
        prompt evaluation and generation begin, so a request that starts in a window runs slow.
        """
        speed = self.speed_at(at)
        prompt_tok_s, eval_tok_s = self.rates(model)
        nominal = prompt_tokens / (prompt_tok_s * speed) + output_tokens / (eval_tok_s * speed)
        return nominal * time_scale

    def rates(self, model: str) -> tuple[float, float]:
        """Prompt and generation tokens/s of `model` at speed 1."""
        if model == MODEL:
            return self.prompt_tok_s, self.eval_tok_s
        return model_rates(model)

    def load_s(self, model: str, time_scale: float) -> float:
        """Seconds to load `model` (sim/engine.py `load_s`)."""
        return (LOAD_BASE_S + LOAD_S_PER_GB * model_bytes(model) / 1e9) / self.speed * time_scale


@dataclass(frozen=True, slots=True)
class Job:
    """One request of the trace.

    Attributes:
        at_s: Arrival, seconds after the start.
        prompt_tokens: Tokens of the rendered prompt (the node evaluates them all: unique questions).
        output_tokens: The answer's length on each node, in the fleet's order.
        measured: False during the warm-up.
        model: The model it asks for.
    """

    at_s: float
    prompt_tokens: int
    output_tokens: tuple[int, ...]
    measured: bool = True
    model: str = MODEL


Slowdown = tuple[int, float, float, float]
"""A node made slower for a while: (node index, from s, until s, factor), in trace seconds."""


def sim_fleet(
    speeds: Sequence[float], num_parallel: int, slowdowns: Sequence[Slowdown] = ()
) -> list[NodeModel]:
    """The nodes as bench/harness/systems.py `start_nodes` starts them (ids node-1.., seeds 1..)."""
    return [
        NodeModel(
            f"node-{i + 1}",
            speed,
            num_parallel,
            seed=i + 1,
            slow=tuple((since, until, factor) for n, since, until, factor in slowdowns if n == i),
        )
        for i, speed in enumerate(speeds)
    ]


def natural_tokens(key: str, seed: int, lo: int = ANSWER_MIN, hi: int = ANSWER_MAX) -> int:
    """The length of the simulator's natural answer for `key` on a node with `seed`.

    sim/textgen.py `generate` draws the length from the first 32-bit word of SHAKE-128 over
    (seed, key); only that word is computed here (tests/bench/test_oracle.py checks it against
    `generate`).
    """
    word = array("I", hashlib.shake_128(f"{seed}\x00{key}".encode()).digest(4))[0]
    return lo + word % (hi - lo + 1)


def chat_trace(
    nodes: Sequence[NodeModel],
    rate_rps: float,
    duration_s: float,
    warmup_s: float,
    seed: int,
    tag: str,
    model: str = MODEL,
    per_node_answers: bool = False,
    profile: RateProfile = (),
    mix: ModelMix = (),
) -> list[Job]:
    """The load generator's trace of unique one-question chats (bench/harness/loadgen.py, kind "unique").

    The simulator draws an answer's length from the node's seed, so one question gets a different
    length on each node. A real answer's length does not depend on the node that writes it, so by
    default every request gets one length (the first node's draw): an oracle that knows sizes would
    otherwise win by sending each request where the simulator happens to draw it short (at 70 %
    load on the heterogeneous fleet, p99 1.44 s instead of 1.98 s). `per_node_answers` keeps the
    simulator's per-node draws. `mix` draws each request's model as the load generator does
    (bench/harness/workload.py `model_of`); without it every request asks for `model`.
    """
    jobs = []
    for i, arrival in enumerate(poisson_arrivals(rate_rps, duration_s, warmup_s, seed, profile)):
        question = unique_question(i, tag)
        if mix:
            model = model_of(i, str(seed), mix)
        # NOTE: sim/api_infer.py render_chat: a role marker, the content's tokens, the assistant marker.
        prompt_tokens = textgen.count_tokens(question) + 2
        key = f"{model}\x01user\x02{question}"
        if per_node_answers:
            answers = tuple(natural_tokens(key, node.seed) for node in nodes)
        else:
            answers = (natural_tokens(key, nodes[0].seed),) * len(nodes)
        jobs.append(Job(arrival.at_s, prompt_tokens, answers, arrival.phase == "measure", model))
    return jobs


# --- the discrete-event model ------------------------------------------------------------------


class InFlight(NamedTuple):
    """A request in a node's system (seconds), ordered by completion."""

    done: float
    seq: int
    sent: float
    expected: float
    start: float
    prompt_tokens: int
    output_tokens: int
    concurrency: int
    model: str = MODEL
    load_s: float = 0.0


@dataclass(slots=True)
class NodeState:
    """A node during the replay.

    Attributes:
        model: The node.
        free: Heap of the times each slot becomes free (first come, first served makes these exact).
        inflight: Heap of the requests in the system, by completion.
        finished: When not None, the requests that completed, for a policy that learns from them.
        loaded: The model the node holds (one at a time; see the module's notes on mixed models).
    """

    model: NodeModel
    free: list[float]
    inflight: list[InFlight] = field(default_factory=list)
    finished: list[InFlight] | None = None
    loaded: str = MODEL

    def start_of(self, now: float, model: str, time_scale: float) -> tuple[float, float]:
        """When a request for `model` sent now would start here, and the load it waits for (seconds).

        Its model loaded: the first free slot. Another model: every request on the node finishes
        first, then the load.
        """
        if model == self.loaded:
            return max(now, self.free[0]), 0.0
        load = self.model.load_s(model, time_scale)
        return max(now, max(self.free)) + load, load

    def count(self, now: float) -> int:
        """Requests in the system (running or queued) at `now`."""
        heap = self.inflight
        while heap and heap[0].done <= now:
            gone = heapq.heappop(heap)
            if self.finished is not None:
                self.finished.append(gone)
        return len(heap)


Policy = Callable[[float, Job, list[NodeState]], int]


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What the expected-size policies may use.

    Attributes:
        time_scale: The simulator's time scale.
        mean_output: The mean answer length (the simulator's natural answers are uniform).
        queue_weight: The weight of the queue wait against the service time in the expected-time
            policies: the `ect` strategy's (services/router/config.py).
    """

    time_scale: float
    mean_output: float = (ANSWER_MIN + ANSWER_MAX) / 2
    queue_weight: float = EctConfig().queue_weight


def _projected_start(state: NodeState, now: float, k: Knowledge, prompt_tokens: int) -> float:
    """When a new request would start, from the send times and expected sizes of those in flight.

    The requests in flight are replayed first come, first served on the node's slots with their
    expected service times; one that should have finished and has not is taken to finish now.
    """
    slots = [-1.0] * state.model.slots
    for job in sorted(state.inflight, key=lambda x: x.sent):
        start = max(job.sent, heapq.heappop(slots))
        heapq.heappush(slots, max(now, start + job.expected))
    return max(now, slots[0]) - now


def _outcome(node: NodeModel, visit: InFlight, time_scale: float) -> Outcome:
    """What the router hears of a finished request: Ollama's stats as the simulator reports them.

    The simulator reports nominal durations (time scale 1) and 5 ms of load_duration for a loaded
    model; its total_duration holds the queue wait.
    """
    speed = node.speed_at(visit.start)
    prompt_tok_s, eval_tok_s = node.rates(visit.model)
    prompt_ms = 1000 * visit.prompt_tokens / (prompt_tok_s * speed)
    eval_ms = 1000 * visit.output_tokens / (eval_tok_s * speed)
    real_ms = 1000 * (visit.done - visit.sent)
    load_ms = 1000 * visit.load_s / time_scale if visit.load_s else 5.0
    return Outcome(
        node_id=node.node_id,
        model=visit.model,
        concurrency=visit.concurrency,
        latency_ms=real_ms,
        prompt_tokens=visit.prompt_tokens,
        prompt_ms=prompt_ms,
        output_tokens=visit.output_tokens,
        eval_ms=eval_ms,
        load_ms=load_ms,
        total_ms=load_ms + real_ms / time_scale,
    )


def make_policy(name: str, knowledge: Knowledge, rng: random.Random) -> Policy:
    """The routing policy `name` (one of POLICIES)."""
    ts = knowledge.time_scale
    mean_out = knowledge.mean_output
    q = knowledge.queue_weight
    counter = itertools.count()

    # NOTE: the idealised policies know each node's speed at the moment they route (a slowdown
    # included); only `ect_learned` has to find it out from outcomes.
    def expected(state: NodeState, job: Job, now: float) -> float:
        return state.model.service_s(job.prompt_tokens, mean_out, ts, at=now, model=job.model)

    def oracle(now: float, job: Job, nodes: list[NodeState]) -> int:
        ends = []
        for i, s in enumerate(nodes):
            start, _ = s.start_of(now, job.model, ts)
            service = s.model.service_s(
                job.prompt_tokens, job.output_tokens[i], ts, at=start, model=job.model
            )
            ends.append(q * (start - now) + service)
        return min(range(len(nodes)), key=lambda i: (ends[i], i))

    def oracle_state(now: float, job: Job, nodes: list[NodeState]) -> int:
        starts = [s.start_of(now, job.model, ts)[0] for s in nodes]
        ends = [q * (start - now) + expected(s, job, start) for s, start in zip(nodes, starts, strict=True)]
        return min(range(len(nodes)), key=lambda i: (ends[i], i))

    def sed(now: float, job: Job, nodes: list[NodeState]) -> int:
        scores = [(s.count(now) + 1) * expected(s, job, now) / s.model.slots for s in nodes]
        return min(range(len(nodes)), key=lambda i: (scores[i], i))

    def ect(now: float, job: Job, nodes: list[NodeState]) -> int:
        # NOTE: the router's own score (services/router/learning.py) with the true per-token costs.
        scores = []
        for i, s in enumerate(nodes):
            m = s.model
            speed = m.speed_at(now)
            inflight = s.count(now)
            prompt_tok_s, eval_tok_s = m.rates(job.model)
            estimate = score(
                m.node_id,
                inflight=inflight,
                slots=m.slots,
                prompt_tokens=job.prompt_tokens,
                output_tokens=mean_out,
                prompt_ms_per_token=1000 * ts / (prompt_tok_s * speed),
                eval_ms_per_token=1000 * ts / (eval_tok_s * speed),
                typical_service_ms=1000 * expected(s, job, now),
                queue_weight=q,
                load_ms=0.0 if s.loaded == job.model else 1000 * m.load_s(job.model, ts),
            )
            scores.append((estimate.total_ms, inflight, i))
        return min(scores)[2]

    def ect_elapsed(now: float, job: Job, nodes: list[NodeState]) -> int:
        scores = []
        for s in nodes:
            s.count(now)
            wait = _projected_start(s, now, knowledge, job.prompt_tokens)
            scores.append(q * wait + expected(s, job, now))
        return min(range(len(nodes)), key=lambda i: (scores[i], i))

    def p2c_ect(now: float, job: Job, nodes: list[NodeState]) -> int:
        if len(nodes) == 1:
            return 0
        a, b = rng.sample(range(len(nodes)), 2)
        score_a = (nodes[a].count(now) + 1) * expected(nodes[a], job, now)
        score_b = (nodes[b].count(now) + 1) * expected(nodes[b], job, now)
        return a if score_a <= score_b else b

    def least_inflight(now: float, job: Job, nodes: list[NodeState]) -> int:
        counts = [s.count(now) for s in nodes]
        least = min(counts)
        return rng.choice([i for i, c in enumerate(counts) if c == least])

    def round_robin(now: float, job: Job, nodes: list[NodeState]) -> int:
        return next(counter) % len(nodes)

    def random_pick(now: float, job: Job, nodes: list[NodeState]) -> int:
        return rng.randrange(len(nodes))

    clock = [0.0]
    learning = Ect(BalancerConfig(ect=EctConfig(queue_weight=q)), clock=lambda: clock[0])

    def ect_learned(now: float, job: Job, nodes: list[NodeState]) -> int:
        # NOTE: the router's own balancer, learning from the outcomes of the requests it routed.
        clock[0] = now
        for s in nodes:
            if s.finished is None:
                s.finished = []
            s.count(now)
            for visit in s.finished:
                learning.observe(_outcome(s.model, visit, ts))
            s.finished.clear()
        candidates = [
            Candidate(
                s.model.node_id,
                "",
                loaded=s.loaded == job.model,
                local_inflight=len(s.inflight),
                size_bytes=model_bytes(job.model),
                displaced_bytes=0 if s.loaded == job.model else model_bytes(s.loaded),
            )
            for s in nodes
        ]
        picked = learning.pick(PickContext(model=job.model), candidates)
        return next(i for i, c in enumerate(candidates) if c is picked)

    table: dict[str, Policy] = {
        "oracle": oracle,
        "oracle_state": oracle_state,
        "sed": sed,
        "ect": ect,
        "ect_elapsed": ect_elapsed,
        "ect_learned": ect_learned,
        "p2c_ect": p2c_ect,
        "least_inflight": least_inflight,
        "round_robin": round_robin,
        "random": random_pick,
    }
    if name not in table:
        raise ValueError(f"unknown policy {name!r}: choose from {', '.join(POLICIES)}")
    return table[name]


@dataclass(slots=True)
class Replay:
    """The outcome of one policy on one trace.

    Attributes:
        latencies_s: Completion minus arrival of every measured request, in trace order.
        served_by: The node index of every request (warm-up included), in trace order.
        swaps: Model loads that replaced another model on a node.
    """

    latencies_s: list[float]
    served_by: list[int]
    swaps: int = 0


def replay(
    jobs: Sequence[Job],
    nodes: Sequence[NodeModel],
    policy: str,
    time_scale: float = 1.0,
    seed: int = 1,
    knowledge: Knowledge | None = None,
) -> Replay:
    """Routes the trace with the policy through the fleet's slots and queues.

    Every node serves first come, first served on `slots` slots, so a request's start is the
    earliest projected free time of its node's slots: no event queue is needed beyond that, and
    60,000 requests take about a second per policy (`ect_learned` about ten).
    """
    knowledge = knowledge or Knowledge(time_scale)
    states = [NodeState(node, [0.0] * node.slots) for node in nodes]
    choose = make_policy(policy, knowledge, random.Random(seed))
    latencies: list[float] = []
    served: list[int] = []
    swaps = 0
    mean_out = knowledge.mean_output
    for seq, job in enumerate(jobs):
        now = job.at_s
        index = choose(now, job, states)
        state = states[index]
        concurrency = state.count(now) + 1
        load = 0.0
        if job.model != state.loaded:
            ready, _ = state.start_of(now, job.model, time_scale)
            # NOTE: the simulator's load_duration counts the wait for the evicted model's requests
            # too (sim/engine.py `_load`), as Ollama's does.
            load = ready - now
            state.free = [ready] * state.model.slots
            state.loaded = job.model
            swaps += 1
        start = max(now, heapq.heappop(state.free))
        service = state.model.service_s(
            job.prompt_tokens, job.output_tokens[index], time_scale, at=start, model=job.model
        )
        done = start + service
        heapq.heappush(state.free, done)
        expected = state.model.service_s(job.prompt_tokens, mean_out, time_scale, at=now, model=job.model)
        visit = InFlight(
            done, seq, now, expected, start, job.prompt_tokens, job.output_tokens[index], concurrency,
            job.model, load,
        )  # fmt: skip
        heapq.heappush(state.inflight, visit)
        served.append(index)
        if job.measured:
            latencies.append(done - now)
    return Replay(latencies, served, swaps)


def figures(result: Replay, jobs: Sequence[Job], nodes: Sequence[NodeModel]) -> dict[str, Any]:
    """The scenario reports' figures of one replay (milliseconds; errors and throughput as live rows)."""
    ms = [x * 1000 for x in result.latencies_s]
    counts = [0] * len(nodes)
    for job, index in zip(jobs, result.served_by, strict=True):
        if job.measured:
            counts[index] += 1
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    models = sorted({job.model for job in jobs})
    extra: dict[str, Any] = {}
    if len(models) > 1:
        measured = [job.model for job in jobs if job.measured]
        extra["p99_by_model"] = {
            m: stats_round(percentile([x for x, jm in zip(ms, measured, strict=True) if jm == m], 99))
            for m in models
        }
        extra["swaps"] = result.swaps
    return {
        "requests": len(ms),
        "ok": len(ms),
        "errors": 0,
        "throughput_rps": None,
        "p50_ms": None if p50 is None else round(p50, 2),
        "p99_ms": None if p99 is None else round(p99, 2),
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else None,
        "requests_by_node": {node.node_id: c for node, c in zip(nodes, counts, strict=True)},
        **extra,
    }


def scenario_rows(
    speeds: Sequence[float],
    num_parallel: int,
    time_scale: float,
    rate_rps: float,
    duration_s: float,
    warmup_s: float,
    rounds: int,
    policies: Sequence[str] = ("oracle",),
    tag: str = "oracle",
    slowdowns: Sequence[Slowdown] = (),
    replays: dict[str, list[tuple[list[Job], Replay]]] | None = None,
    profile: RateProfile = (),
    mix: ModelMix = (),
) -> dict[str, dict[str, Any]]:
    """Rows for a scenario report: each policy on the arrival trace of the live run's rounds.

    Round r replays the load generator's trace with seed r + 1, `duration_s / rounds` long after
    `warmup_s` of warm-up, as bench/scenarios/heterogeneous.py runs it; the rounds are pooled.
    `slowdowns` and the rate `profile` repeat in every round (trace seconds, warm-up included);
    `mix` gives the requests' models (each node then holds one model at a time).
    When `replays` is given, each policy's per-round (trace, replay) pairs are put there, for
    timelines.
    """
    nodes = sim_fleet(speeds, num_parallel, slowdowns)
    traces = [
        chat_trace(
            nodes,
            rate_rps,
            duration_s / rounds,
            warmup_s,
            seed=r + 1,
            tag=f"{tag}-{r}",
            profile=profile,
            mix=mix,
        )
        for r in range(rounds)
    ]
    rows = {}
    for policy in policies:
        pooled = Replay([], [])
        jobs: list[Job] = []
        for r, trace in enumerate(traces):
            one = replay(trace, nodes, policy, time_scale, seed=r + 1)
            pooled.latencies_s += one.latencies_s
            pooled.served_by += one.served_by
            pooled.swaps += one.swaps
            jobs += trace
            if replays is not None:
                replays.setdefault(policy, []).append((trace, one))
        rows[policy] = figures(pooled, jobs, nodes)
    return rows


def long_run(
    speeds: Sequence[float],
    num_parallel: int,
    time_scale: float,
    rate_rps: float,
    requests: int,
    seed: int = 1,
    policies: Sequence[str] = POLICIES,
    queue_weight: float = EctConfig().queue_weight,
    per_node_answers: bool = False,
    slowdowns: Sequence[Slowdown] = (),
    mix: ModelMix = (),
) -> dict[str, dict[str, Any]]:
    """Each policy on one trace of about `requests` arrivals (enough samples for a stable p99)."""
    nodes = sim_fleet(speeds, num_parallel, slowdowns)
    jobs = chat_trace(
        nodes, rate_rps, requests / rate_rps, 0.0, seed=seed, tag="oracle", per_node_answers=per_node_answers,
        mix=mix,
    )  # fmt: skip
    knowledge = Knowledge(time_scale, queue_weight=queue_weight)
    return {p: figures(replay(jobs, nodes, p, time_scale, seed, knowledge), jobs, nodes) for p in policies}


Fleet = tuple[list[float], int, float, ModelMix]
"""Speeds, slots per node, the arrival rate at a load, and the model mix (empty: one model)."""


def _heterogeneous(load: float, time_scale: float) -> Fleet:
    from bench.scenarios import heterogeneous

    return (
        list(heterogeneous.SPEEDS),
        heterogeneous.NUM_PARALLEL,
        load * heterogeneous.capacity_rps(time_scale),
        (),
    )


def _mixed_models(load: float, time_scale: float) -> Fleet:
    from bench.scenarios import mixed_models

    return (
        list(mixed_models.SPEEDS),
        mixed_models.NUM_PARALLEL,
        load * mixed_models.capacity_rps(time_scale),
        mixed_models.MIX,
    )


SCENARIOS: dict[str, Callable[[float, float], Fleet]] = {
    "heterogeneous": _heterogeneous,
    "mixed-models": _mixed_models,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="heterogeneous")
    parser.add_argument("--load", type=float, default=0.7, help="share of the fleet's capacity (0.7)")
    parser.add_argument("--requests", type=int, default=60_000, help="arrivals in the trace (60,000)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="the simulator's time scale (1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, in table order")
    parser.add_argument("--queue-weight", type=float, default=EctConfig().queue_weight)
    parser.add_argument("--per-node-answers", action="store_true", help="the simulator's per-node draws")
    parser.add_argument("--json", type=Path, help="also write the run (parameters, machine, rows) here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    speeds, num_parallel, rate, mix = SCENARIOS[args.scenario](args.load, args.time_scale)
    policies = [p for p in args.policies.split(",") if p]
    started = time.perf_counter()
    rows = long_run(
        speeds,
        num_parallel,
        args.time_scale,
        rate,
        args.requests,
        args.seed,
        policies,
        args.queue_weight,
        args.per_node_answers,
        mix=mix,
    )
    elapsed = time.perf_counter() - started
    print(
        f"{args.scenario}: speeds {', '.join(f'{s:g}x' for s in speeds)}, {num_parallel} slots each, "
        f"load {args.load:.0%} ({rate:.2f} requests/s), time scale {args.time_scale:g}, seed {args.seed}, "
        f"queue weight {args.queue_weight:g}"
    )
    print(f"{'policy':<16} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}  served by node")
    for name, row in rows.items():
        share = ", ".join(f"{n} {c}" for n, c in row["requests_by_node"].items())
        swaps = f", {row['swaps']} model swaps" if "swaps" in row else ""
        times = f"{row['p50_ms']:>9,.0f} {row['p99_ms']:>9,.0f} {row['mean_ms']:>9,.0f}"
        print(f"{name:<16} {times}  {share}{swaps}")
    print(f"{next(iter(rows.values()))['requests']} requests per policy, {elapsed:.1f} s")
    if args.json:
        command = (
            f"python -m bench.oracle --scenario {args.scenario} --load {args.load:g}"
            f" --requests {args.requests} --time-scale {args.time_scale:g} --seed {args.seed}"
            f" --policies {','.join(policies)}"
            f" --queue-weight {args.queue_weight:g}"
        )
        run = {
            "command": command + (" --per-node-answers" if args.per_node_answers else ""),
            "parameters": {
                "scenario": args.scenario,
                "speeds": speeds,
                "num_parallel": num_parallel,
                "load": args.load,
                "rate_rps": round(rate, 4),
                "requests": args.requests,
                "time_scale": args.time_scale,
                "seed": args.seed,
                "queue_weight": args.queue_weight,
                "per_node_answers": args.per_node_answers,
                "mix": dict(mix),
            },
            "machine": {**machine(), "load_average_before": [round(x, 2) for x in load_before]},
            "elapsed_s": round(elapsed, 1),
            "rows": rows,
        }
        args.json.write_text(json.dumps(run, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
