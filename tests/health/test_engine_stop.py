"""The engine stops whatever its publisher is doing when stop() cancels it."""

from __future__ import annotations

import asyncio

from services.health.config import HealthConfig
from services.health.engine import HealthEngine
from services.health.prober import Prober


async def test_stop_ends_the_publisher_even_as_a_change_arrives() -> None:
    # NOTE: on Python 3.11 a wait_for whose event is set in the same turn as the cancellation returns
    # the event instead of raising, and a loop around it runs on; stop() then never returns. Every
    # yield count from 0 to 3 lands the cancellation at a different point of the wake-up.
    for turns in range(4):
        for _ in range(25):
            engine = HealthEngine(HealthConfig(port=0, min_update_interval_s=0), Prober(0.1))
            await engine.start()
            for _ in range(2):
                await asyncio.sleep(0)
            engine.fleet.on_change()
            for _ in range(turns):
                await asyncio.sleep(0)
            await asyncio.wait_for(engine.stop(), 5)
