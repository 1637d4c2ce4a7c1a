"""heterogeneous-90: the heterogeneous scenario at 90 % of capacity (at least 2,000 requests a system)."""

from __future__ import annotations

from typing import Any

from bench.harness.context import Context
from bench.scenarios.heterogeneous import run_at


async def run(ctx: Context) -> dict[str, Any]:
    """Every Corral and LiteLLM strategy on the heterogeneous fleet at 90 % load."""
    return await run_at(ctx, "heterogeneous-90", 0.9, duration_s=80.0)
