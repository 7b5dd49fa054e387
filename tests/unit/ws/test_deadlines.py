"""The coalesced timers every socket's auth, warning and expiry deadlines share."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ws_service.domain.deadlines import Deadlines

TICK = 0.02


class Item:
    def __init__(self, log: list[tuple[str, float]], name: str, fail: bool = False) -> None:
        self.log = log
        self.name = name
        self.fail = fail

    def on_deadline(self) -> None:
        self.log.append((self.name, asyncio.get_running_loop().time()))
        if self.fail:
            raise RuntimeError("boom")


async def test_fires_in_order_never_early_and_at_most_a_tick_late() -> None:
    deadlines = Deadlines(TICK)
    fired: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    delays = {"c": 0.15, "a": 0.03, "b": 0.08, "a2": 0.031}
    for name, delay in delays.items():
        deadlines.schedule(delay, Item(fired, name))
    await asyncio.sleep(0.3)
    assert [name for name, _ in fired][:2] in (["a", "a2"], ["a2", "a"])
    assert [name for name, _ in fired][2:] == ["b", "c"]
    for name, at in fired:
        late = at - (start + delays[name])
        # the loop's clock resolution (1 ms in libuv) is the only earliness allowed
        assert -0.002 <= late < TICK + 0.05, (name, late)
    assert len(deadlines) == 0


async def test_cancelled_items_do_not_fire_and_an_emptied_slot_drops_its_timer() -> None:
    deadlines = Deadlines(TICK)
    fired: list[tuple[str, float]] = []
    keep, drop, alone = Item(fired, "keep"), Item(fired, "drop"), Item(fired, "alone")
    shared = deadlines.schedule(0.05, keep)
    assert deadlines.schedule(0.05, drop) == shared
    lone = deadlines.schedule(0.5, alone)
    deadlines.cancel(shared, drop)
    deadlines.cancel(lone, alone)
    deadlines.cancel(lone, alone)  # twice is harmless
    assert len(deadlines) == 1
    await asyncio.sleep(0.12)
    assert [name for name, _ in fired] == ["keep"]
    assert len(deadlines) == 0


async def test_one_failing_callback_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deadlines = Deadlines(TICK)
    fired: list[tuple[str, float]] = []
    for name in ("x", "y", "z"):
        deadlines.schedule(0.01, Item(fired, name, fail=name == "y"))
    with caplog.at_level(logging.ERROR):
        await asyncio.sleep(0.08)
    assert sorted(name for name, _ in fired) == ["x", "y", "z"]
    assert "a deadline callback failed" in caplog.text


async def test_close_cancels_everything() -> None:
    deadlines = Deadlines(TICK)
    fired: list[tuple[str, float]] = []
    deadlines.schedule(0.01, Item(fired, "x"))
    deadlines.close()
    await asyncio.sleep(0.05)
    assert fired == []
    assert len(deadlines) == 0
