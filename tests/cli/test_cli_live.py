"""The `corral` command against a live local stack: output for people, --json for scripts, errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from devstack.redis import RedisServer
from tests.helpers.polling import wait_for as wait_until
from tests.helpers.procs import ROOT, base_env, free_port, run_cli
from tests.http.live import LiveStack, start_live_stack

MODEL = "llama3.2:1b"
EMBED_MODEL = "nomic-embed-text:v1.5"
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(redis_server: RedisServer, migrated_dsn: str) -> AsyncIterator[LiveStack]:
    live = await start_live_stack(redis_url=redis_server.url, postgres_dsn=migrated_dsn, prewarm=True)
    try:
        # NOTE: `status` lists nodes as soon as health runs; wait until every node has been probed.
        async def probed() -> bool:
            code, out, _ = await corral(live, "status", "--json")
            nodes = json.loads(out)["nodes"] if code == 0 else []
            return len(nodes) == 3 and all(n["state"] == "NODE_STATE_HEALTHY" for n in nodes)

        await wait_until(probed, timeout_s=20, interval_s=0.2)
        yield live
    finally:
        await live.close()


async def corral(stack: LiveStack | None, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Runs the CLI as a separate process, as an operator would; returns (exit code, stdout, stderr)."""
    return await run_cli(stack.cli_env() if stack is not None else {}, *args, stdin=stdin)


async def test_status_table_and_json(stack: LiveStack) -> None:
    code, out, err = await corral(stack, "status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("3 nodes, 3 serving")
    assert max(len(line) for line in lines) <= 80
    for node in stack.nodes:
        assert any(line.strip().startswith(node.node_id) and "healthy" in line for line in lines)
    code, out, _ = await corral(stack, "status", "--json")
    reply = json.loads(out)
    assert {n["node_id"] for n in reply["nodes"]} == {n.node_id for n in stack.nodes}


async def test_status_watch_follows_the_score_stream(stack: LiveStack) -> None:
    code, out, err = await corral(stack, "status", "--watch", "--json", "--count", "1")
    assert code == 0, err
    first = json.loads(out.splitlines()[0])
    assert first["kind"] == "SCORE_UPDATE_KIND_SNAPSHOT" and len(first["nodes"]) == 3
    code, out, err = await corral(stack, "status", "--watch", "--count", "1")
    assert code == 0, err
    assert "3 nodes" in out


async def test_models(stack: LiveStack) -> None:
    code, out, err = await corral(stack, "models")
    assert code == 0, err
    assert MODEL in out and EMBED_MODEL in out and "1.3 GB" in out
    code, out, _ = await corral(stack, "models", "--json")
    assert MODEL in {m["name"] for m in json.loads(out)}


async def test_chat_one_shot_streaming_and_json(stack: LiveStack) -> None:
    code, out, err = await corral(stack, "chat", MODEL, "why", "is", "the", "sky", "blue?")
    assert code == 0, err
    assert out.strip()
    assert "node-" in err and "cache" in err
    code, out, err = await corral(stack, "chat", MODEL, "--no-stream", "--num-predict", "5", stdin=b"")
    assert code == 2 and err.startswith("corral: error: no prompt")
    code, out, err = await corral(stack, "chat", MODEL, "--json", stdin=b"hello from stdin\n")
    assert code == 0, err
    reply = json.loads(out)
    assert reply["message"]["role"] == "assistant" and reply["message"]["content"]
    assert reply["routing"]["node_id"].startswith("node-")


async def test_embed(stack: LiveStack) -> None:
    code, out, err = await corral(stack, "embed", EMBED_MODEL, "first text", "second text")
    assert code == 0, err
    assert out.startswith("2 embedding(s) of 768 dimensions")
    code, out, _ = await corral(stack, "embed", EMBED_MODEL, "x", "--dimensions", "8", "--json")
    assert len(json.loads(out)["embeddings"][0]) == 8


async def test_prewarm_shows_progress(stack: LiveStack) -> None:
    code, out, err = await corral(stack, "prewarm", "--step", "warm")
    assert code == 0, err
    assert "warm models" in out and "3/3" in out
    assert "prewarm run" in out and "0 failed" in out
    code, out, err = await corral(stack, "prewarm", "--step", "warm", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["run_finished"] is True


async def test_cache_stats_and_invalidate(stack: LiveStack) -> None:
    code, out, err = await corral(stack, "cache", "stats")
    assert code == 0, err
    assert "exact" in out and "semantic" in out and "HIT RATE" in out
    code, out, err = await corral(stack, "cache", "invalidate", "--tenant", "default")
    assert code == 0, err
    assert out.startswith("removed ")
    code, out, _ = await corral(stack, "cache", "invalidate", "--tenant", "default", "--json")
    assert set(json.loads(out)) == {"exact_removed", "semantic_removed"}


async def test_nodes_add_drain_undrain_remove(stack: LiveStack) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = await corral(stack, "nodes", "add", "node-9", url, "--label", "gpu=none")
    assert code == 0, err
    removed = False
    try:
        assert out.strip() == f"node-9 added ({url})"
        code, out, err = await corral(stack, "nodes", "drain", "node-9")
        assert code == 0, err
        assert "draining" in out
        code, out, _ = await corral(stack, "status", "--json")
        node = next(n for n in json.loads(out)["nodes"] if n["node_id"] == "node-9")
        assert node["draining"] is True and node["labels"] == {"gpu": "none"}
        code, out, err = await corral(stack, "nodes", "undrain", "node-9")
        assert code == 0, err
        code, out, err = await corral(stack, "nodes", "remove", "node-9")
        removed = code == 0
        assert code == 0, err
        assert out.startswith("node-9 removed")
    finally:
        # NOTE: the other tests count three nodes; node-9 must not outlive this test.
        if not removed:
            await corral(stack, "nodes", "remove", "node-9")
    code, out, err = await corral(stack, "nodes", "remove", "node-9")
    assert code == 1 and err.startswith("corral: error: health: ") and len(err.splitlines()) == 1


async def test_errors_are_one_line_with_exit_codes(stack: LiveStack) -> None:
    code, _, err = await corral(stack, "chat", "no-such-model", "hi")
    assert code == 1 and err.startswith("corral: error: router: ") and "no-such-model" in err
    assert len(err.splitlines()) == 1
    dead = f"127.0.0.1:{free_port()}"
    code, _, err = await corral(None, "status", "--health", dead)
    hint = "(is it running? set --health or CORRAL_HEALTH_ADDR)"
    assert code == 1 and err == f"corral: error: cannot reach the health service at {dead} {hint}\n"
    code, _, err = await corral(None, "nodes", "add", "x")
    assert code == 2 and "usage:" in err
    code, _, err = await corral(None, "cache", "invalidate")
    assert code == 2 and err == "corral: error: cache invalidate: give --tenant, --key or --all-tenants\n"


async def test_chat_interactive_session_keeps_the_conversation(stack: LiveStack) -> None:
    # NOTE: a pseudo-terminal on stdin makes the CLI interactive, as for an operator at a terminal.
    primary, secondary = os.openpty()
    env = base_env(stack.cli_env())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "chat",
        MODEL,
        "--num-predict",
        "8",
        # NOTE: both turns go to a node (not the cache), so that the node shows what each carried.
        "--cache-mode",
        "bypass",
        env=env,
        cwd=str(ROOT),
        stdin=secondary,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(secondary)
    try:
        os.write(primary, b"first question\nsecond question\n/exit\n")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        os.close(primary)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "chatting with llama3.2:1b" in text
    assert err.decode().count("node-") >= 2
    # The second turn carried the first: the question and the answer a node gave (and the CLI showed).
    records = [r for node in stack.nodes for r in await _transcripts(node.admin_url)]
    first = {"role": "user", "content": "first question"}
    second = {"role": "user", "content": "second question"}
    (turn_1,) = [r for r in records if r["request"].get("messages") == [first]]
    (turn_2,) = [r for r in records if r["request"].get("messages", [])[-1:] == [second]]
    answer = {"role": "assistant", "content": turn_1["sent"]}
    assert turn_1["sent"] and turn_1["sent"] in text
    assert turn_2["request"]["messages"] == [first, answer, second]


async def _transcripts(admin_url: str) -> list[dict[str, Any]]:
    """A simulated node's latest completions: the body each received and the text it sent."""
    async with aiohttp.ClientSession() as http, http.get(f"{admin_url}/_sim/requests") as resp:
        requests: list[dict[str, Any]] = (await resp.json())["requests"]
        return requests
