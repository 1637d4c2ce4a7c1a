"""Unit tests of the offline routing model (bench/oracle.py): pure Python, a few seconds in all."""

from __future__ import annotations

import heapq
import itertools
import json
import random
from pathlib import Path

import pytest

from bench import oracle
from bench.harness.workload import model_of, poisson_arrivals, poisson_gaps
from bench.scenarios import heterogeneous
from sim import textgen

SPEEDS = heterogeneous.SPEEDS


def test_answer_lengths_are_the_simulators() -> None:
    for seed, i in itertools.product((0, 1, 4), range(40)):
        key = f"llama3.2:1b\x01user\x02{textgen.generate('q', i, 1, 9, None).text} {i}"
        expected = len(textgen.generate(key, seed, oracle.ANSWER_MIN, oracle.ANSWER_MAX, None).pieces)
        assert oracle.natural_tokens(key, seed) == expected


def test_the_trace_is_the_load_generators() -> None:
    rate, duration, warmup = 5.0, 20.0, 2.0
    times, at = [], 0.0
    for gap in poisson_gaps(rate, 3):
        at += gap
        if at >= warmup + duration:
            break
        times.append(at)
    arrivals = list(poisson_arrivals(rate, duration, warmup, 3))
    assert [a.at_s for a in arrivals] == times
    assert all((a.phase == "warmup") == (a.at_s < warmup) for a in arrivals)
    nodes = oracle.sim_fleet(SPEEDS, 2)
    jobs = oracle.chat_trace(nodes, rate, duration, warmup, seed=3, tag="t")
    assert [j.at_s for j in jobs] == times
    assert all(len(set(j.output_tokens)) == 1 for j in jobs)  # one length per request by default
    per_node = oracle.chat_trace(nodes, rate, duration, warmup, seed=3, tag="t", per_node_answers=True)
    assert any(len(set(j.output_tokens)) > 1 for j in per_node)
    assert all(oracle.ANSWER_MIN <= n <= oracle.ANSWER_MAX for j in per_node for n in j.output_tokens)


def fifo_latencies(arrivals: list[float], services: list[float], slots: int) -> list[float]:
    """First come, first served on `slots` servers, by explicit events (independent of the model)."""
    free_slots = slots
    waiting: list[int] = []
    running: list[tuple[float, int]] = []
    done: dict[int, float] = {}
    events = sorted((t, i) for i, t in enumerate(arrivals))
    for t, i in events:
        while running and running[0][0] <= t:
            end, _ = heapq.heappop(running)
            free_slots += 1
            if waiting:
                j = waiting.pop(0)
                free_slots -= 1
                done[j] = end + services[j]
                heapq.heappush(running, (done[j], j))
        if free_slots:
            free_slots -= 1
            done[i] = t + services[i]
            heapq.heappush(running, (done[i], i))
        else:
            waiting.append(i)
    while waiting:
        end, _ = heapq.heappop(running)
        j = waiting.pop(0)
        done[j] = end + services[j]
        heapq.heappush(running, (done[j], j))
    return [done[i] - arrivals[i] for i in range(len(arrivals))]


def one_node(slots: int) -> list[oracle.NodeModel]:
    # NOTE: 60 tokens/s and no prompt: a job of n answer tokens takes n / 60 s.
    return [oracle.NodeModel("n", speed=1.0, slots=slots, seed=1, prompt_tok_s=1e9)]


@pytest.mark.parametrize("policy", oracle.POLICIES)
def test_one_node_is_a_fifo_multi_server_queue(policy: str) -> None:
    trivial = [oracle.Job(0.0, 0, (60,)), oracle.Job(0.0, 0, (60,)), oracle.Job(0.0, 0, (60,))]
    assert oracle.replay(trivial, one_node(2), policy).latencies_s == [1.0, 1.0, 2.0]
    rng = random.Random(7)
    at, jobs = 0.0, []
    for _ in range(400):
        at += rng.expovariate(2.5)
        jobs.append(oracle.Job(at, 0, (rng.randint(20, 60),)))
    got = oracle.replay(jobs, one_node(2), policy).latencies_s
    want = fifo_latencies([j.at_s for j in jobs], [j.output_tokens[0] / 60 for j in jobs], 2)
    assert got == pytest.approx(want)


def run(policy: str, load: float, requests: int = 4000, seed: int = 1) -> dict[str, object]:
    rate = load * heterogeneous.capacity_rps(1.0)
    return oracle.long_run(SPEEDS, 2, 1.0, rate, requests, seed, [policy])[policy]


@pytest.mark.parametrize("load", [0.5, 0.7, 0.9])
def test_the_oracle_beats_round_robin_and_least_inflight(load: float) -> None:
    best = run("oracle", load)
    for other in ("round_robin", "least_inflight"):
        worse = run(other, load)
        for key in ("p50_ms", "p99_ms", "mean_ms"):
            if other == "least_inflight" and key == "p50_ms":
                continue  # least in flight buys its median with its tail (docs/router.md)
            assert best[key] <= worse[key], (other, key, best[key], worse[key])  # type: ignore[operator]


def test_replays_are_deterministic_for_a_seed() -> None:
    for policy in ("oracle", "ect", "p2c_ect", "least_inflight", "random"):
        assert run(policy, 0.7, 1500, seed=5) == run(policy, 0.7, 1500, seed=5)
    assert run("random", 0.7, 1500, seed=5) != run("random", 0.7, 1500, seed=6)


@pytest.mark.parametrize("policy", ["ect", "ect_learned"])
def test_the_ect_strategy_is_close_to_the_oracle_at_70_percent(policy: str) -> None:
    # NOTE: `ect_learned` is the router's balancer learning from scratch on the model's outcomes.
    best, ect = run("oracle", 0.7, 6000), run(policy, 0.7, 6000)
    assert ect["p99_ms"] <= 1.3 * best["p99_ms"], (ect, best)  # type: ignore[operator]
    assert ect["p50_ms"] <= 1.1 * best["p50_ms"], (ect, best)  # type: ignore[operator]


def test_scenario_rows_have_the_report_schema() -> None:
    rows = oracle.scenario_rows(SPEEDS, 2, 1.0, 5.0, 30.0, 1.0, 2, policies=("oracle", "ect"))
    assert set(rows) == {"oracle", "ect"}
    for row in rows.values():
        assert {"p50_ms", "p99_ms", "throughput_rps", "errors", "requests_by_node"} <= row.keys()
        assert row["errors"] == 0 and row["requests"] == sum(row["requests_by_node"].values())
        assert row["requests"] > 100


def test_the_command_line_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    oracle.main(["--load", "0.5", "--requests", "500", "--policies", "oracle,least_inflight"])
    out = capsys.readouterr().out
    assert "oracle" in out and "least_inflight" in out and "p99 ms" in out
    with pytest.raises(ValueError, match="unknown policy"):
        oracle.replay([], one_node(1), "nope")


def test_the_command_line_writes_the_run_as_json(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    oracle.main(["--load", "0.5", "--requests", "500", "--policies", "oracle,ect", "--json", str(path)])
    run = json.loads(path.read_text())
    rate = 0.5 * heterogeneous.capacity_rps(1.0)
    want = oracle.long_run(SPEEDS, 2, 1.0, rate, 500, 1, ["oracle", "ect"])
    assert run["rows"] == json.loads(json.dumps(want))
    assert run["parameters"]["load"] == 0.5 and run["parameters"]["queue_weight"] == 1.5
    assert run["command"] == (
        "python -m bench.oracle --scenario heterogeneous --load 0.5 --requests 500 --time-scale 1 --seed 1"
        " --policies oracle,ect --queue-weight 1.5"
    )
    assert "load_average_1m" in run["machine"]


def test_a_slowed_node_is_slow_only_inside_its_window() -> None:
    node = oracle.sim_fleet([1.0, 1.0], 2, slowdowns=[(1, 10.0, 20.0, 4.0)])[1]
    assert oracle.sim_fleet([1.0], 2, slowdowns=[(1, 10.0, 20.0, 4.0)])[0].slow == ()
    normal = node.service_s(30, 40, 1.0)
    assert node.service_s(30, 40, 1.0, at=9.99) == normal
    assert node.service_s(30, 40, 1.0, at=10.0) == pytest.approx(4 * normal)
    assert node.service_s(30, 40, 1.0, at=19.99) == pytest.approx(4 * normal)
    assert node.service_s(30, 40, 1.0, at=20.0) == normal


def test_the_oracle_and_the_learning_router_move_traffic_off_a_slowed_node() -> None:
    since, until = 20.0, 40.0
    nodes = oracle.sim_fleet([1.0] * 4, 2, slowdowns=[(1, since, until, 4.0)])
    rate = 0.7 * 4 * 2 / (40 / 60 + 30 / 600)
    jobs = oracle.chat_trace(nodes, rate, 60.0, 0.0, seed=1, tag="slow")

    def share(served: list[int], lo: float, hi: float) -> float:
        picked = [n for job, n in zip(jobs, served, strict=True) if lo <= job.at_s < hi]
        return sum(n == 1 for n in picked) / len(picked)

    for policy in ("oracle", "ect_learned"):
        served = oracle.replay(jobs, nodes, policy).served_by
        before, during, after = (
            share(served, 5, since),
            share(served, since + 5, until),
            share(served, until + 5, 60),
        )
        assert before > 0.15, policy
        assert during < before / 3, policy
        assert after > before / 2, policy
    # Without the slowdown the same trace keeps the node's share.
    steady = oracle.replay(jobs, oracle.sim_fleet([1.0] * 4, 2), "oracle").served_by
    assert share(steady, since + 5, until) > 0.15


def test_the_model_mix_is_drawn_alike_for_every_system_and_the_oracle() -> None:
    mix = (("llama3.2:1b", 0.8), ("mistral:7b", 0.2))
    drawn = [model_of(i, "1", mix) for i in range(2000)]
    assert drawn == [model_of(i, "1", mix) for i in range(2000)]  # fixed by (seed, index)
    assert 0.17 < drawn.count("mistral:7b") / len(drawn) < 0.23
    assert drawn != [model_of(i, "2", mix) for i in range(2000)]  # another round, another draw
    nodes = oracle.sim_fleet([1.0], 2)
    trace = oracle.chat_trace(nodes, 10.0, 20.0, 0.0, seed=1, tag="t", mix=mix)
    assert [job.model for job in trace] == drawn[: len(trace)]


def test_a_node_holding_another_model_drains_then_loads() -> None:
    nodes = oracle.sim_fleet([1.0], 2)
    big = "mistral:7b"
    jobs = [
        oracle.Job(0.0, 10, (40,)),  # llama, 10/600 + 40/60 s
        oracle.Job(0.1, 10, (40,), model=big),  # waits for the first to finish, then the load
        oracle.Job(0.2, 10, (40,), model=big),  # the big model is loaded: a free slot at once
    ]
    result = oracle.replay(jobs, nodes, "round_robin")
    first = 10 / 600 + 40 / 60
    load = oracle.LOAD_BASE_S + oracle.LOAD_S_PER_GB * oracle.model_bytes(big) / 1e9
    big_service = 10 / 150 + 40 / 12
    assert result.latencies_s[0] == pytest.approx(first)
    assert result.latencies_s[1] == pytest.approx(first + load + big_service - 0.1)
    assert result.latencies_s[2] == pytest.approx(first + load + big_service - 0.2)
    assert result.swaps == 1


def test_the_learning_router_keeps_two_models_from_evicting_each_other() -> None:
    from bench.scenarios import mixed_models

    ts = 0.25
    rate = 0.7 * mixed_models.capacity_rps(ts)
    rows = oracle.scenario_rows(
        mixed_models.SPEEDS, mixed_models.NUM_PARALLEL, ts, rate, 120.0, 2.0, 2,
        policies=("oracle", "ect_learned", "least_inflight"), mix=mixed_models.MIX,
    )  # fmt: skip
    learned, blind = rows["ect_learned"], rows["least_inflight"]
    # Least in flight ignores which model a node holds and swaps on most requests; the learning
    # router places the big model on a few nodes and keeps it there.
    assert blind["swaps"] > 10 * learned["swaps"]
    assert learned["p99_ms"] < 2 * rows["oracle"]["p99_ms"] < blind["p99_ms"]
