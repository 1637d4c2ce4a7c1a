"""One polling helper for conditions that no event announces (another process, a server's counters)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05, *, what: str = ""
) -> None:
    """Polls `predicate` (sync or async) until it is true; TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for: {what}" if what else "condition not reached")
        await asyncio.sleep(interval_s)
