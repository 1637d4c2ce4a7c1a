"""The one-minute soak (`make soak-smoke`): traffic with faults, no failed unary call, samples recorded."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.helpers.procs import ROOT, base_env

pytestmark = pytest.mark.timeout(240)


async def test_one_minute_soak(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.soak",
        "--duration",
        "60",
        "--out",
        str(tmp_path),
        env=base_env(),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 220)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["totals"]["unary_failed"] == 0
    assert result["totals"]["streams_truncated"] == 0 and result["wrong_answers"] == 0
    assert len(result["samples"]) >= 10 and len(result["faults"]) >= 4
    assert set(result["samples"][-1]["services"]) == {"router", "cache", "health", "prewarm"}
