"""The `python -m sim` process: readiness line, official sync client, admin port, fleets, bad input."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
import ollama
import pytest

from devstack import ports
from tests.helpers.procs import ROOT, base_env, free_port

_LINE = re.compile(r"corral-sim: node (\S+) listening on 127\.0\.0\.1:(\d+) admin (\d+)")


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, list[tuple[str, int, int]]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim", *args,
        env=base_env(), cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return proc, []


async def _ready(proc: asyncio.subprocess.Process, count: int) -> list[tuple[str, int, int]]:
    assert proc.stdout is not None
    nodes: list[tuple[str, int, int]] = []
    async with asyncio.timeout(30):
        while len(nodes) < count:
            line = (await proc.stdout.readline()).decode()
            assert line, "simulator exited before it was ready"
            match = _LINE.search(line)
            if match:
                nodes.append((match.group(1), int(match.group(2)), int(match.group(3))))
    return nodes


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.terminate()
    return await asyncio.wait_for(proc.wait(), 10)


async def test_single_node_process_with_official_sync_client() -> None:
    port = free_port()
    proc, _ = await _start("--port", str(port), "--admin-port", "0")
    try:
        [(name, api_port, admin_port)] = await _ready(proc, 1)
        assert name == "node-0" and api_port == port and admin_port > 0

        def use_client() -> tuple[set[str], str]:
            client = ollama.Client(host=f"http://127.0.0.1:{port}")
            models = {m.model for m in client.list().models if m.model}
            reply = client.generate("llama3.2:1b", "hello from another process")
            return models, reply.response or ""

        models, text = await asyncio.to_thread(use_client)
        assert models == {"llama3.2:1b", "nomic-embed-text:v1.5", "mistral:7b"} and text
        async with aiohttp.ClientSession() as http:
            admin = f"http://127.0.0.1:{admin_port}/_sim"
            async with http.post(f"{admin}/faults", json={"error_rate": 1}) as resp:
                assert resp.status == 200
            async with http.post(
                f"http://127.0.0.1:{port}/api/generate", json={"model": "llama3.2:1b", "prompt": "x"}
            ) as resp:
                assert resp.status == 500
            async with http.get(f"{admin}/stats") as resp:
                assert (await resp.json())["faults_injected"] == 1
    finally:
        assert await _stop(proc) == 0


async def test_fleet_from_profile_on_consecutive_ports() -> None:
    # NOTE: node i listens on the first port + i, so both ports are taken from the allocator as a block;
    # the admin ports are the nodes' own choice (0), never base + 1000 + i, which nobody reserved.
    base = ports.allocate_block(2)[0]
    proc, _ = await _start(
        "--profile", "test", "--port", str(base), "--admin-port", "0", "--nodes", "2", "--fault", "busy=-1"
    )
    try:
        nodes = await _ready(proc, 2)
        assert [p for _, p, _ in nodes] == [base, base + 1]
        assert [n for n, _, _ in nodes] == ["sim-1", "sim-2"]
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{base + 1}/api/chat", json={"model": "llama3.2:1b", "messages": []}
            ) as resp:
                assert resp.status == 503
    finally:
        await _stop(proc)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--profile", "no-such-profile"), "no-such-profile"),
        (("--fault", "explode"), "unknown fault 'explode'"),
        (("--models", "gpt-9"), "unknown model 'gpt-9'"),
        (("--num-parallel", "0"), "num_parallel"),
    ],
)
async def test_bad_arguments_exit_with_one_clear_line(args: tuple[str, ...], needle: str) -> None:
    proc, _ = await _start("--port", "0", *args)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert needle in stderr.decode() and stderr.decode().startswith("corral-sim: error:")


async def test_bad_profile_names_the_field(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("nodes:\n  - name: a\n    num_paralel: 3\n")
    proc, _ = await _start("--profile", str(profile), "--port", "0")
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and "nodes[0].num_paralel" in stderr.decode()
