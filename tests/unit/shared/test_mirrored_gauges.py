"""A mirrored gauge shows its state from the start, follows it, and stops with the block."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge

from shared.metrics.mirrored import mirrored


async def test_the_gauge_follows_the_state_until_the_block_ends() -> None:
    gauge = Gauge("state", "a state", registry=CollectorRegistry())
    state = {"connected": True}
    async with mirrored([(gauge, lambda: state["connected"])], interval=0):
        assert gauge._value.get() == 1, "copied before the block starts"
        state["connected"] = False
        for _ in range(3):  # each turn of the loop copies once
            await asyncio.sleep(0)
        assert gauge._value.get() == 0
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "mirrored-gauges"]
