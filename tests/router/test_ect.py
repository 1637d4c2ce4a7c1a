"""Unit tests of the `ect` balancer and what it learns, on recorded outcomes (pure Python, no I/O)."""

from __future__ import annotations

import dataclasses
import itertools
import logging

import pytest
from corral.v1 import common_pb2

from services.router.balancer import Candidate, Ect, Learning, PickContext, make_balancer
from services.router.config import BalancerConfig, EctConfig
from services.router.learning import Learner, Outcome, outcome_of, request_size, score

MODEL = "llama3.2:1b"
CTX = PickContext(model=MODEL, prompt_chars=80)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def served(
    node_id: str,
    *,
    prompt_ms_per_token: float = 2.0,
    eval_ms_per_token: float = 20.0,
    prompt_tokens: int = 20,
    output_tokens: int = 40,
    waited_ms: float = 0.0,
    load_ms: float = 5.0,
    concurrency: int = 1,
    prompt_chars: int = 80,
) -> Outcome:
    """A successful attempt with Ollama's stats as the simulator reports them."""
    prompt_ms = prompt_tokens * prompt_ms_per_token
    eval_ms = output_tokens * eval_ms_per_token
    total = load_ms + waited_ms + prompt_ms + eval_ms
    return Outcome(
        node_id=node_id,
        model=MODEL,
        concurrency=concurrency,
        latency_ms=total + 2.0,
        ttft_ms=load_ms + waited_ms + prompt_ms + 2.0,
        prompt_chars=prompt_chars,
        prompt_tokens=prompt_tokens,
        prompt_ms=prompt_ms,
        output_tokens=output_tokens,
        eval_ms=eval_ms,
        load_ms=load_ms,
        total_ms=total,
    )


def cands(*ids: str, **kw: object) -> list[Candidate]:
    return [Candidate(node_id=i, address=f"http://{i}", **kw) for i in ids]  # type: ignore[arg-type]


def ect(clock: Clock | None = None, **ect_kw: object) -> Ect:
    cfg = BalancerConfig(ect=EctConfig(**ect_kw))  # type: ignore[arg-type]
    return Ect(cfg, clock=clock or Clock())


def by_node(balancer: Ect, candidates: list[Candidate], ctx: PickContext = CTX) -> dict[str, float]:
    return {e.node_id: e.total_ms for e in balancer.estimates(ctx, candidates)}


# --- learning -------------------------------------------------------------------------------------


def test_rates_lengths_and_tokens_per_char_are_learned_from_outcomes() -> None:
    learner = Learner(EctConfig(), clock=Clock())
    for _ in range(30):
        learner.observe(
            served("a", prompt_ms_per_token=2.0, eval_ms_per_token=20.0, output_tokens=30, prompt_chars=100)
        )
    costs = learner.costs_of("a", MODEL)
    assert costs.prompt_ms_per_token.fast == pytest.approx(2.0)
    assert costs.eval_ms_per_token.fast == pytest.approx(20.0)
    model = learner.models[MODEL]
    assert model.output_tokens.value == pytest.approx(30)
    assert model.tokens_per_char.value == pytest.approx(0.2)
    assert costs.overhead_ms.value == pytest.approx(2.0)
    est = learner.estimate(
        "a",
        MODEL,
        inflight=0,
        loaded=True,
        size_bytes=0,
        prompt_chars=200,
        num_predict=None,
        prior=learner.prior(MODEL, ["a"]),
        not_loaded_penalty_ms=5000,
    )
    assert est.prompt_tokens == pytest.approx(40)  # 200 characters at 0.2 tokens each
    assert est.prompt_tok_s == pytest.approx(500) and est.eval_tok_s == pytest.approx(50)
    assert est.total_ms == pytest.approx(40 * 2.0 + 30 * 20.0 + 2.0)


def test_num_predict_caps_the_expected_length_and_capped_answers_are_not_learned() -> None:
    learner = Learner(EctConfig(), clock=Clock())
    learner.observe(served("a", output_tokens=50))
    learner.observe(dataclasses.replace(served("a", output_tokens=5), num_predict=5))
    assert learner.models[MODEL].output_tokens.value == pytest.approx(50)
    assert learner.expected_tokens(MODEL, 0, 10)[1] == 10
    assert learner.expected_tokens(MODEL, 0, None)[1] == pytest.approx(50)


def test_slots_are_learned_from_waits_at_each_concurrency() -> None:
    learner = Learner(EctConfig(default_slots=1, slot_evidence=1), clock=Clock())
    learner.observe(served("a", concurrency=3))
    assert learner.node("a").slots == 3  # three at once and none waited: at least three slots
    learner.observe(served("a", concurrency=3, waited_ms=400))
    assert learner.node("a").slots == 2  # the third one waited: fewer than three
    learner.observe(served("a", concurrency=2, waited_ms=1.0))
    assert learner.node("a").slots == 2  # a tiny wait is noise, not a queue
    # Health's count (all routers) bounds the occupancy from above: a wait there lowers the slots.
    learner.observe(dataclasses.replace(served("a", concurrency=1, waited_ms=400), fleet_concurrency=2))
    assert learner.node("a").slots == 1
    # This router's own count bounds it from below: only that raises them.
    learner.observe(dataclasses.replace(served("a", concurrency=1), fleet_concurrency=5))
    assert learner.node("a").slots == 1
    fixed = Learner(EctConfig(node_slots={"a": 8}), clock=Clock())
    fixed.observe(served("a", concurrency=3, waited_ms=400))
    assert fixed.node("a").slots == 8  # configured num_parallel is not second-guessed


def test_a_raise_of_the_slots_needs_repeated_evidence_and_a_wait_cancels_it() -> None:
    # The router's count runs ahead of the node's while finished answers wait to be read, so a
    # request can find a free slot at a count above the true slots: once is not enough to raise.
    learner = Learner(EctConfig(default_slots=2, slot_evidence=3), clock=Clock())
    node = learner.node("a")
    learner.observe(served("a", concurrency=3))
    learner.observe(served("a", concurrency=3))
    assert node.slots == 2
    learner.observe(served("a", concurrency=3, waited_ms=400))  # the node was full after all
    assert node.slots == 2
    learner.observe(served("a", concurrency=3))
    learner.observe(served("a", concurrency=2))  # within the slots: no evidence either way
    learner.observe(served("a", concurrency=4))
    assert node.slots == 2
    learner.observe(served("a", concurrency=3))
    assert node.slots == 3  # three in a row without a wait
    # Lowering needs one wait: a request that waited shows the node full.
    learner.observe(served("a", concurrency=3, waited_ms=400))
    assert node.slots == 2


def test_slots_count_as_confirmed_only_once_a_request_waited() -> None:
    learner = Learner(EctConfig(default_slots=4), clock=Clock())
    assert learner.confirmed_slots("a") is None
    learner.observe(served("a", concurrency=2))
    assert learner.confirmed_slots("a") is None  # the default guess, not seen full yet
    learner.observe(served("a", concurrency=3, waited_ms=400))
    assert learner.confirmed_slots("a") == 2


def test_failures_teach_the_time_a_failed_attempt_costs() -> None:
    learner = Learner(EctConfig(failure_ms=500), clock=Clock())
    assert learner.failure_ms("a") == 500
    learner.observe(Outcome(node_id="a", model=MODEL, ok=False, latency_ms=12.0))
    assert learner.failure_ms("a") == pytest.approx(12.0)
    assert ("a", MODEL) not in learner.costs  # a failure teaches no speed


def test_a_cold_load_is_learned_only_from_requests_that_loaded() -> None:
    learner = Learner(EctConfig(), clock=Clock())
    learner.observe(served("a", load_ms=5.0))
    assert learner.costs_of("a", MODEL).load_ms.samples == 0
    learner.observe(served("a", load_ms=2900.0))
    assert learner.costs_of("a", MODEL).load_ms.value == pytest.approx(2900.0)


def test_outcome_of_reads_ollamas_final_stats_and_request_size_the_spec() -> None:
    stats = common_pb2.GenerationStats(prompt_eval_count=12, eval_count=30)
    stats.prompt_eval_duration.FromMilliseconds(24)
    stats.eval_duration.FromMilliseconds(500)
    stats.load_duration.FromMilliseconds(5)
    stats.total_duration.FromMilliseconds(600)
    o = outcome_of(
        "a", MODEL, True, stats, concurrency=2, latency_ms=610, ttft_ms=40, prompt_chars=50, num_predict=None
    )
    assert (o.prompt_tokens, o.prompt_ms, o.output_tokens, o.eval_ms) == (12, 24.0, 30, 500.0)
    assert (o.load_ms, o.total_ms, o.concurrency) == (5.0, 600.0, 2)
    assert outcome_of("a", MODEL, False, None, concurrency=1, latency_ms=3, ttft_ms=0, prompt_chars=0,
                      num_predict=None).prompt_tokens == 0  # fmt: skip
    chat = common_pb2.ChatSpec(
        model=MODEL,
        messages=[common_pb2.ChatMessage(role="system", content="abc"),
                  common_pb2.ChatMessage(role="user", content="hello")],
        options=common_pb2.ModelOptions(num_predict=7),
    )  # fmt: skip
    assert request_size(chat) == (8, 7)
    assert request_size(common_pb2.GenerateSpec(model=MODEL, prompt="hi", system="s")) == (3, None)


# --- adaptation ---------------------------------------------------------------------------------


def test_a_slowed_node_loses_the_lead_within_three_outcomes() -> None:
    clock = Clock()
    balancer = ect(clock)
    for _ in range(10):
        balancer.observe(served("a", eval_ms_per_token=15.0))
        balancer.observe(served("b", eval_ms_per_token=20.0))
    candidates = cands("a", "b")
    assert balancer.pick(CTX, candidates).node_id == "a"  # type: ignore[union-attr]
    before = by_node(balancer, candidates)["a"]
    seen = []
    for _ in range(3):
        clock.now += 0.5
        balancer.observe(served("a", eval_ms_per_token=60.0))  # 4x slower: throttled
        seen.append(by_node(balancer, candidates)["a"])
    assert seen[0] > 1.5 * before  # the first slow outcome already shows
    assert seen == sorted(seen)
    assert balancer.pick(CTX, candidates).node_id == "b"  # type: ignore[union-attr]


def test_a_recovered_node_gets_its_lead_back_gradually() -> None:
    clock = Clock()
    balancer = ect(clock)
    for _ in range(20):
        clock.now += 1.0
        balancer.observe(served("a", eval_ms_per_token=15.0))
        balancer.observe(served("b", eval_ms_per_token=20.0))
    for _ in range(5):
        clock.now += 1.0
        balancer.observe(served("a", eval_ms_per_token=60.0))
    candidates = cands("a", "b")
    slow = by_node(balancer, candidates)["a"]
    steps = [slow]
    for _ in range(6):
        clock.now += 1.0
        balancer.observe(served("a", eval_ms_per_token=15.0))
        steps.append(by_node(balancer, candidates)["a"])
    drops = [earlier - later for earlier, later in itertools.pairwise(steps)]
    assert all(d > 0 for d in drops)  # every good outcome helps...
    assert max(drops) < 0.5 * (slow - steps[-1])  # ...and no single one flips it back (no cliff)
    assert balancer.pick(CTX, candidates).node_id == "a"  # type: ignore[union-attr]


def test_without_outcomes_a_slow_estimate_relaxes_toward_the_nodes_baseline() -> None:
    clock = Clock()
    balancer = ect(clock, recover_half_life_s=5.0)
    for _ in range(30):
        clock.now += 2.0
        balancer.observe(served("a", eval_ms_per_token=15.0))
    for _ in range(4):
        balancer.observe(served("a", eval_ms_per_token=60.0))
    signal = balancer.learner.costs_of("a", MODEL).eval_ms_per_token
    fresh = signal.value(clock.now, 5.0)
    later = [signal.value(clock.now + dt, 5.0) for dt in (2.5, 5.0, 10.0, 30.0)]
    assert fresh > later[0] > later[1] > later[2] > later[3] > signal.base
    assert later[1] == pytest.approx((signal.base * fresh) ** 0.5)  # half the (geometric) gap in 5 s


# --- scoring ---------------------------------------------------------------------------------------


def trained(clock: Clock | None = None, **ect_kw: object) -> Ect:
    """A balancer that knows a fast node f (10 ms/token) and a slow one s (40 ms/token), 2 slots each."""
    balancer = ect(clock, default_slots=2, **ect_kw)
    for _ in range(10):
        balancer.observe(served("f", eval_ms_per_token=10.0, output_tokens=40))
        balancer.observe(served("s", eval_ms_per_token=40.0, output_tokens=40))
    return balancer


def test_a_busy_fast_node_and_an_idle_slow_node_are_weighed_by_expected_completion() -> None:
    balancer = trained()
    # f: 40 + 400 ms per request; s: 40 + 1,600 ms. With 2 slots, f's queue wait is
    # 1.5 x (inflight - 1) x 440 / 2 ms.
    idle_slow = cands("s")[0]
    for inflight, expected in ((1, "f"), (2, "f"), (3, "f"), (5, "s")):
        fast = Candidate("f", "http://f", local_inflight=inflight)
        ests = by_node(balancer, [fast, idle_slow])
        picked = balancer.pick(CTX, [fast, idle_slow])
        assert picked is not None and picked.node_id == expected, (inflight, ests)
        assert picked.node_id == min(ests, key=lambda n: ests[n])


def test_score_is_the_sum_of_its_terms() -> None:
    est = score(
        "n",
        inflight=4,
        slots=2,
        prompt_tokens=10,
        output_tokens=50,
        prompt_ms_per_token=2.0,
        eval_ms_per_token=10.0,
        typical_service_ms=500.0,
        queue_weight=1.5,
        load_ms=300.0,
        overhead_ms=3.0,
    )
    assert est.queue_ms == pytest.approx(1.5 * 3 * 500 / 2)
    assert est.total_ms == pytest.approx(est.queue_ms + 300 + 20 + 500 + 3)
    free = score("n", inflight=1, slots=2, prompt_tokens=10, output_tokens=50, prompt_ms_per_token=2.0,
                 eval_ms_per_token=10.0, typical_service_ms=500.0, queue_weight=1.5)  # fmt: skip
    assert free.queue_ms == 0  # a free slot: no wait


def test_a_model_that_is_not_loaded_adds_its_load_cost() -> None:
    balancer = trained()
    warm, cold = Candidate("f", "http://f"), Candidate("s", "http://s")
    cold_f = Candidate("f", "http://f", loaded=False, size_bytes=2_000_000_000)
    base = by_node(balancer, [warm, cold])["f"]
    est = balancer.estimates(CTX, [cold_f, cold])[0]
    assert est.load_ms == pytest.approx(300 + 2 * 2000)  # load_base_ms + load_ms_per_gb x 2 GB
    assert est.total_ms == pytest.approx(base + est.load_ms)
    assert balancer.pick(CTX, [cold_f, cold]).node_id == "s"  # type: ignore[union-attr]
    balancer.observe(served("f", eval_ms_per_token=10.0, load_ms=900.0))  # a load seen: 0.9 s
    assert balancer.estimates(CTX, [cold_f, cold])[0].load_ms == pytest.approx(900.0)
    unknown = Candidate("f", "http://f", loaded=False)
    cfg_penalty = BalancerConfig().not_loaded_penalty_ms
    assert ect().estimates(CTX, [unknown])[0].load_ms == cfg_penalty  # no size, never seen loading


def test_errors_cost_the_failure_and_the_retry_elsewhere() -> None:
    balancer = trained()
    flaky = Candidate("f", "http://f", error_rate=0.1)
    ests = balancer.estimates(CTX, [flaky, Candidate("s", "http://s")])
    f, s = ests
    assert f.penalty_ms == pytest.approx(0.1 * (500 + s.base_ms))  # default failure_ms 500
    balancer.observe(Outcome(node_id="f", model=MODEL, ok=False, latency_ms=5.0))
    f2 = balancer.estimates(CTX, [flaky, Candidate("s", "http://s")])[0]
    assert f2.penalty_ms == pytest.approx(0.1 * (5 + s.base_ms))  # it fails fast: mostly the retry
    busy = balancer.estimates(CTX, [Candidate("f", "http://f", busy_rate=0.5)])[0]
    assert busy.penalty_ms == pytest.approx(0.5 * BalancerConfig().busy_penalty_ms)


def test_a_node_without_outcomes_gets_the_median_of_the_others() -> None:
    balancer = ect()
    for node, cost in (("a", 10.0), ("b", 20.0), ("c", 60.0)):
        balancer.observe(served(node, eval_ms_per_token=cost))
    ests = {e.node_id: e for e in balancer.estimates(CTX, cands("a", "b", "c", "new"))}
    assert ests["new"].generate_ms == pytest.approx(ests["b"].generate_ms)
    assert ests["new"].prompt_ms == pytest.approx(ests["b"].prompt_ms)


def test_ties_are_broken_by_load_then_node_id_whatever_the_order() -> None:
    balancer = ect(default_slots=4)
    assert balancer.pick(CTX, cands("n2", "n0", "n1")).node_id == "n0"  # type: ignore[union-attr]
    assert balancer.pick(CTX, cands("n1", "n0")).node_id == "n0"  # type: ignore[union-attr]
    # NOTE: with 4 slots one request in flight costs nothing yet, so the tie goes to the idler node.
    busy, idle = Candidate("n0", "x", local_inflight=1), Candidate("n1", "y")
    assert balancer.pick(CTX, [busy, idle]).node_id == "n1"  # type: ignore[union-attr]
    assert balancer.pick(CTX, [idle, busy]).node_id == "n1"  # type: ignore[union-attr]


def test_affinity_keeps_its_node_within_the_slack_only() -> None:
    key = next(k for k in (f"s:{i}" for i in range(100)) if _rendezvous_first(k, ["f", "s"]) == "s")
    ctx = PickContext(model=MODEL, prompt_chars=80, affinity_key=key)
    # A follow-up of a conversation this router has not seen prefers its rendezvous node, s: it takes
    # 1,640 ms against f's 440 ms idle, more than 2x, so the key goes to f.
    picked = trained(affinity_slack=2.0).pick(ctx, cands("f", "s"))
    assert picked is not None and picked.node_id == "f"
    # With f busy (4 in flight: 1.5 x 3 x 440 / 2 = 990 ms of queue) s is within 2x: the key stays.
    busy_f = Candidate("f", "http://f", local_inflight=4)
    picked = trained(affinity_slack=2.0).pick(ctx, [busy_f, Candidate("s", "http://s")])
    assert picked is not None and picked.node_id == "s"
    assert picked.estimate is not None and picked.estimate.reason.startswith("affinity")


def test_a_first_turn_goes_to_the_best_node_and_its_follow_ups_follow_it() -> None:
    balancer = trained(affinity_slack=2.0)
    key = next(k for k in (f"p:{i}" for i in range(100)) if _rendezvous_first(k, ["f", "s"]) == "s")
    first = PickContext(model=MODEL, prompt_chars=80, affinity_key=key, follow_up=False)
    busy_f = Candidate("f", "http://f", local_inflight=4)
    # f busy: s is within 2x of it, yet a first turn gains nothing from s (no node holds the
    # conversation yet), so it takes the best node.
    picked = balancer.pick(first, [busy_f, Candidate("s", "http://s")])
    assert picked is not None and picked.node_id == "f"
    assert picked.estimate is not None and picked.estimate.reason.startswith("first turn")
    assert balancer.placed[key] == "f"
    # Its follow-ups keep to f (where the KV cache holds it) while f is within the slack...
    follow = PickContext(model=MODEL, prompt_chars=80, affinity_key=key)
    idle_s = Candidate("s", "http://s")
    assert balancer.pick(follow, [Candidate("f", "http://f", local_inflight=2), idle_s]).node_id == "f"  # type: ignore[union-attr]
    # ...and move to the best node beyond it, which then holds the conversation.
    very_busy_f = Candidate("f", "http://f", local_inflight=12)
    assert balancer.pick(follow, [very_busy_f, Candidate("s", "http://s")]).node_id == "s"  # type: ignore[union-attr]
    assert balancer.placed[key] == "s"


def test_the_remembered_conversations_are_bounded() -> None:
    balancer = trained(affinity_memory=2)
    for key in ("a", "b", "c"):
        balancer.pick(PickContext(model=MODEL, affinity_key=key, follow_up=False), cands("f", "s"))
    assert list(balancer.placed) == ["b", "c"]
    balancer.pick(PickContext(model=MODEL, affinity_key="b"), cands("f", "s"))
    balancer.pick(PickContext(model=MODEL, affinity_key="d", follow_up=False), cands("f", "s"))
    assert list(balancer.placed) == ["b", "d"]  # b was used again: c was the least recent


def _rendezvous_first(key: str, ids: list[str]) -> str:
    from services.router.balancer import rendezvous_weight

    return max(ids, key=lambda n: rendezvous_weight(key, n))


def test_the_explanation_names_every_term(caplog: pytest.LogCaptureFixture) -> None:
    balancer = trained()
    with caplog.at_level(logging.DEBUG, logger="services.router.balancer"):
        picked = balancer.pick(
            CTX, [Candidate("f", "http://f", local_inflight=2, error_rate=0.05), *cands("s")]
        )
    assert picked is not None and picked.estimate is not None
    text = picked.estimate.explain()
    for term in ("f:", "queue", "in flight", "slots", "load", "prompt", "tok/s", "generate", "overhead",
                 "penalty", "errors 0.05", "lowest expected completion"):  # fmt: skip
        assert term in text, (term, text)
    assert text in caplog.text and "others: s " in caplog.text
    only = balancer.pick(CTX, cands("s"))
    assert only is not None and only.estimate is not None and only.estimate.reason == "only candidate"


def test_ect_is_built_by_name_and_is_the_only_learning_strategy() -> None:
    balancer = make_balancer("ect")
    assert balancer.name == "ect" and isinstance(balancer, Learning)
    for other in ("p2c_ect", "round_robin", "random", "least_inflight"):
        assert not isinstance(make_balancer(other), Learning)  # type: ignore[arg-type]
    assert balancer.pick(CTX, []) is None
    assert BalancerConfig().ect.queue_weight == 1.5


def test_a_chat_is_a_follow_up_once_it_holds_an_earlier_answer() -> None:
    from services.router.forward import Job

    def chat(*roles: str) -> Job:
        spec = common_pb2.ChatSpec(
            model=MODEL, messages=[common_pb2.ChatMessage(role=r, content="x") for r in roles]
        )
        return Job(spec, MODEL)

    assert not chat("system", "user").follow_up
    assert not chat("user").follow_up
    assert chat("user", "assistant", "user").follow_up
    assert chat("user", "assistant", "tool").follow_up
    assert Job(common_pb2.GenerateSpec(model=MODEL, prompt="x"), MODEL).follow_up


def test_a_session_keeps_to_its_rendezvous_node_from_its_first_request() -> None:
    balancer = trained(affinity_slack=2.0)
    key = next(k for k in (f"s:{i}" for i in range(100)) if _rendezvous_first(k, ["f", "s"]) == "s")
    # A session's requests keep to the node every router computes, first one included.
    first = PickContext(model=MODEL, prompt_chars=80, affinity_key=key, follow_up=False)
    busy_f = Candidate("f", "http://f", local_inflight=4)
    assert balancer.pick(first, [busy_f, Candidate("s", "http://s")]).node_id == "s"  # type: ignore[union-attr]
    assert key not in balancer.placed


def test_a_full_node_counts_the_requests_waiting_ahead_at_the_router() -> None:
    balancer = trained()
    # f is full (4 in flight on 2 slots): its queue wait and 440 ms of service come to less than
    # the idle s's 1,640 ms, so a request with nobody ahead of it at the router waits for f.
    fast = Candidate("f", "http://f", local_inflight=4, full=True)
    slow = cands("s")[0]
    picked = balancer.pick(CTX, [fast, slow])
    assert picked is not None and picked.node_id == "f"
    # One request already waiting takes f's next slot first: f serves 2 / 440 requests per ms, so
    # the wait grows by 1.5 x 440 / 2 ms, enough to make the idle slow node the sooner one.
    behind = dataclasses.replace(CTX, waiting_ahead=1)
    alone, queued = balancer.estimates(CTX, [fast, slow]), balancer.estimates(behind, [fast, slow])
    typical = queued[0].typical_service_ms
    assert typical == pytest.approx(440.0, rel=0.05)
    assert queued[0].queue_ms - alone[0].queue_ms == pytest.approx(1.5 * typical / 2)
    assert queued[0].waiting_ahead == 1 and "1 waiting ahead at the router" in queued[0].explain()
    assert queued[1].queue_ms == alone[1].queue_ms and queued[1].waiting_ahead == 0  # s is free
    picked = balancer.pick(behind, [fast, slow])
    assert picked is not None and picked.node_id == "s"


def test_a_load_that_may_evict_another_model_is_charged_its_reload() -> None:
    balancer = trained()
    gb = 1_000_000_000
    # Both nodes must load the 4 GB model; f holds a 1.5 GB model that the load may evict, s holds
    # nothing: s is the better place although f is faster.
    holding = Candidate("f", "http://f", loaded=False, size_bytes=4 * gb, displaced_bytes=3 * gb // 2)
    empty = Candidate("s", "http://s", loaded=False, size_bytes=4 * gb)
    est = balancer.estimates(CTX, [holding, empty])
    assert est[0].displace_ms == pytest.approx(300 + 1.5 * 2000) and est[1].displace_ms == 0
    assert "reload of the models it may evict 3300 ms" in est[0].explain()
    picked = balancer.pick(CTX, [holding, empty])
    assert picked is not None and picked.node_id == "s"
    # A loaded model displaces nothing, whatever the candidate says; weight 0 turns the charge off.
    loaded = dataclasses.replace(holding, loaded=True)
    assert balancer.estimates(CTX, [loaded])[0].displace_ms == 0
    plain = trained(displace_weight=0.0)
    assert plain.estimates(CTX, [holding])[0].displace_ms == 0
