"""The fan-out hub: every subscriber gets every message; a slow one is resynced, never waited for."""

from __future__ import annotations

import asyncio

import pytest

from services.health.hub import Hub, HubClosed


async def test_snapshot_then_messages_in_order() -> None:
    state = {"version": 0}
    hub: Hub[str] = Hub(lambda: f"snapshot@{state['version']}", queue_size=8)
    sub, first = hub.subscribe("a")
    assert first == "snapshot@0"
    hub.publish("u1")
    hub.publish("u2")
    assert [await sub.next_message(), await sub.next_message()] == ["u1", "u2"]


async def test_slow_subscriber_is_resynced_and_does_not_block_others() -> None:
    state = {"version": 0}
    hub: Hub[str] = Hub(lambda: f"snapshot@{state['version']}", queue_size=4)
    slow, _ = hub.subscribe("slow")
    fast, _ = hub.subscribe("fast")
    received: list[str] = []
    for i in range(1, 101):
        state["version"] = i
        hub.publish(f"u{i}")  # never awaits, whatever the slow one does
        received.append(await fast.next_message())
    assert received == [f"u{i}" for i in range(1, 101)]
    assert slow.resyncs == 1
    # The slow one catches up with one fresh snapshot, then live messages.
    assert await slow.next_message() == "snapshot@100"
    hub.publish("u101")
    assert await slow.next_message() == "u101"


async def test_close_ends_every_subscription() -> None:
    hub: Hub[str] = Hub(lambda: "s", queue_size=2)
    sub, _ = hub.subscribe("a")
    waiter = asyncio.create_task(sub.next_message())
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(HubClosed):
        await asyncio.wait_for(waiter, 5)
    with pytest.raises(HubClosed):
        hub.subscribe("late")


async def test_updates_already_in_the_snapshot_are_skipped() -> None:
    state = {"version": 3}
    hub: Hub[tuple[str, int]] = Hub(
        lambda: ("snapshot", state["version"]),
        queue_size=8,
        version_of=lambda m: None if m[0] == "heartbeat" else m[1],
    )
    sub, snapshot = hub.subscribe("a")
    assert snapshot == ("snapshot", 3)
    hub.publish(("update", 3))  # published while the snapshot was built: already in it
    hub.publish(("heartbeat", 3))
    hub.publish(("update", 4))
    assert await sub.next_message() == ("heartbeat", 3)
    assert await sub.next_message() == ("update", 4)
