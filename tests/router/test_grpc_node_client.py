"""Must-show: a Node `@grpc/grpc-js` client, stubs generated from protos/ at test time, makes a
tool-call chat through RouterService.ChatStream: the call, the tool's result, the final answer."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.router.stack import MODEL, Stack, start_stack

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).parent / "node" / "chat_stream.js"

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        shutil.which("node") is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir(),
        reason="node and node_modules/@grpc/grpc-js (make setup) are needed",
    ),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    started = await start_stack(node_count=2, health=False)
    try:
        yield started
    finally:
        await started.close()


async def test_node_client_tool_call_round_trip_through_chat_stream(stack: Stack) -> None:
    assert stack.router is not None
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        f"127.0.0.1:{stack.router.port}",
        MODEL,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[-1] == "END"
    chunks = [json.loads(line) for line in lines[:-1]]
    first = [c for c in chunks if c["turn"] == 1]
    second = [c for c in chunks if c["turn"] == 2]
    calls = [call for c in first for call in c["tool_calls"]]
    assert len(calls) == 1 and first[-1]["done"] and not any(c["done"] for c in first[:-1])
    call = calls[0]
    assert call["name"] == "get_weather" and call["arguments"]["city"] == "Tokyo" and len(call["id"]) == 8
    assert call["arguments"]["unit"] in ("celsius", "fahrenheit")
    assert second[-1]["done"] and "".join(c["content"] for c in second).strip()
    assert not any(c["tool_calls"] for c in second)
