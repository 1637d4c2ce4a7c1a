"""`python -m scripts.stack up` (`make up`): ready when it returns, side by side, configurable.

Two stacks start at once on free ports with their own state folders, as two CI runs on one machine
would. Each is asked for a chat the moment its `up` returns. One of them runs with an environment
override whose effect shows from outside (a router metrics endpoint on a port of our choosing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import ollama
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.config import make_temp_state_dir
from devstack.ports import allocate
from scripts import stack
from scripts.stack import Ports
from tests.helpers.procs import ROOT

MODEL = "llama3.2:1b"
pytestmark = pytest.mark.timeout(300)
_API_LINE = re.compile(r"Ollama API\s+(http://127\.0\.0\.1:\d+)")


@dataclass
class Started:
    """One `scripts.stack up` run, and the chat sent right after it returned."""

    state: Path
    env: dict[str, str]
    returncode: int = -1
    stdout: str = ""
    stderr: str = ""
    api_url: str = ""
    chat: Any = None
    chat_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> dict[str, Any]:
        table: dict[str, Any] = json.loads((self.state / "processes.json").read_text())
        return table

    def log(self, name: str) -> str:
        return (self.state / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]


def _env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without stray CORRAL_ settings, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(overrides or {})
    return env


def _stack(
    command: str, state: Path, env: Mapping[str, str], *flags: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.stack", command, "--state-dir", str(state), *flags],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _up_then_chat(run: Started) -> Started:
    """Runs `up`; the moment it returns 0, one chat through the HTTP API it printed."""
    done = _stack("up", run.state, run.env, "--free-ports")
    run.returncode, run.stdout, run.stderr = done.returncode, done.stdout, done.stderr
    found = _API_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        return run
    run.api_url = found.group(1)
    try:
        run.chat = ollama.Client(host=run.api_url, timeout=30).chat(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}]
        )
    except Exception as exc:  # NOTE: recorded, so that the test reports it with the stack's logs
        run.chat_error = f"{type(exc).__name__}: {exc}"
    return run


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """The port the override puts the first stack's router metrics on."""
    return allocate()


@pytest.fixture(scope="module")
def two_stacks(metrics_port: int) -> Iterator[list[Started]]:
    """Two stacks started in parallel, each chatted with as soon as its `up` returned."""
    runs = [
        Started(
            make_temp_state_dir("corral-stack-a-"),
            _env({"CORRAL_ROUTER__METRICS_PORT": str(metrics_port)}),
        ),
        Started(make_temp_state_dir("corral-stack-b-"), _env()),
    ]
    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            list(pool.map(_up_then_chat, runs))
        yield runs
    finally:
        with ThreadPoolExecutor(len(runs)) as pool:
            list(pool.map(lambda run: _stack("down", run.state, run.env), runs))
        for run in runs:
            shutil.rmtree(run.state, ignore_errors=True)


def _explain(run: Started) -> str:
    return f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}\nrouter log:\n" + (
        run.log("router") if (run.state / "logs" / "router.log").exists() else "(none)"
    )


def test_a_chat_succeeds_the_moment_up_returns(two_stacks: list[Started]) -> None:
    for run in two_stacks:
        assert run.returncode == 0, _explain(run)
        assert run.chat_error == "", f"{run.chat_error}\n{_explain(run)}"
        assert run.chat.message.role == "assistant" and run.chat.message.content


def test_two_stacks_start_side_by_side_and_both_serve(two_stacks: list[Started]) -> None:
    port_sets = []
    for run in two_stacks:
        assert run.returncode == 0, _explain(run)
        ports = Ports.from_table(run.table)
        used = [ports.redis, ports.postgres, ports.health, ports.cache, ports.router, ports.router_http]
        port_sets.append({*used, ports.prewarm, *ports.nodes, *ports.admin})
        status = _stack("status", run.state, run.env)
        assert status.returncode == 0 and "stopped" not in status.stdout, status.stdout
        with grpc.insecure_channel(f"127.0.0.1:{ports.router}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listed = ollama.Client(host=run.api_url, timeout=30).list()
        assert MODEL in {m.model for m in listed.models}
    assert not port_sets[0] & port_sets[1]


def test_an_environment_override_reaches_the_services(two_stacks: list[Started], metrics_port: int) -> None:
    with_override, without = two_stacks
    assert with_override.returncode == 0, _explain(with_override)
    assert with_override.table["env_overrides"] == ["CORRAL_ROUTER__METRICS_PORT"]
    assert "CORRAL_ROUTER__METRICS_PORT" in with_override.stdout
    # Not written into the generated file: the router read it from its environment.
    assert "metrics_port" not in (with_override.state / "corral.yaml").read_text()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert b"corral_" in reply.read()
    assert without.table["env_overrides"] == []


def test_up_again_on_a_running_stack_is_refused_and_leaves_it_running(two_stacks: list[Started]) -> None:
    run = two_stacks[1]
    assert run.returncode == 0, _explain(run)
    again = _stack("up", run.state, run.env, "--free-ports")
    assert again.returncode == 1 and "already running" in again.stderr, again.stderr
    status = _stack("status", run.state, run.env)
    assert status.returncode == 0 and "stopped" not in status.stdout, status.stdout
    assert MODEL in {m.model for m in ollama.Client(host=run.api_url, timeout=30).list().models}


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"CORRAL_ROUTER__HTTP_PORT": "8080"}, ["CORRAL_ROUTER__HTTP_PORT", "router.http_port"]),
        ({"CORRAL_CONFIG": "/etc/corral.yaml", "CORRAL_HEALTH__NODES": "[]"}, ["CORRAL_CONFIG", "nodes"]),
        ({"CORRAL_REDIS_PORT": "6390"}, ["CORRAL_REDIS_PORT", "--free-ports"]),
        ({"CORRAL_HEALTH__PROBE_INTERVAL_S": "often"}, ["configuration", "health.probe_interval_s"]),
    ],
    ids=["wired-port", "own-config-file", "store-port", "bad-value"],
)
def test_an_override_that_cannot_be_honoured_is_refused_before_anything_starts(
    variables: dict[str, str],
    named: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in [k for k in os.environ if k.startswith("CORRAL_")]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    state = make_temp_state_dir("corral-stack-refused-")
    try:
        assert stack.main(["up", "--free-ports", "--state-dir", str(state)]) == 1
        out, err = capsys.readouterr()
        for fragment in named:
            assert fragment in err
        assert "Corral is up" not in out
        assert not (state / "processes.json").exists() and not (state / "redis").exists()
    finally:
        shutil.rmtree(state, ignore_errors=True)
