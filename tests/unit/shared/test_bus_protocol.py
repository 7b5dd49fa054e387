"""The in-process bus answers the whole EventBus Protocol, so callers never ask which bus it is."""

from __future__ import annotations

import asyncio

from shared.bus import EventBus, InProcessBus


async def test_the_in_process_bus_is_always_connected_and_in_sync() -> None:
    bus: EventBus = InProcessBus()
    bus.subscribe("t", lambda topic, payload: None)
    assert bus.connected
    await asyncio.wait_for(bus.wait_synced(), 0.1)


async def test_the_in_process_bus_never_reconnects() -> None:
    bus: EventBus = InProcessBus()
    called: list[bool] = []

    async def listener() -> None:
        called.append(True)

    remove = bus.add_reconnect_listener(listener)
    await bus.publish("t", "x")
    await bus.close()
    remove()
    assert called == []
