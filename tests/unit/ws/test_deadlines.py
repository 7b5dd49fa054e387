"""The coalesced timers every socket's auth, warning and expiry deadlines share, on a fake clock."""

from __future__ import annotations

import contextvars
import logging

import pytest

from shared.jsonlog import REQUEST_ID
from tests.support.clock import FakeClock
from ws_service.domain.deadlines import Deadlines

TICK = 0.02


class Item:
    def __init__(
        self, clock: FakeClock, log: list[tuple[str, float]], name: str, fail: bool = False
    ) -> None:
        self.clock = clock
        self.log = log
        self.name = name
        self.fail = fail
        self.request_id: str | None = None

    def on_deadline(self) -> None:
        self.log.append((self.name, self.clock.monotonic()))
        if self.fail:
            raise RuntimeError("boom")


def test_fires_in_order_never_early_and_at_most_a_tick_late() -> None:
    clock = FakeClock(monotonic=1000.003)
    deadlines = Deadlines(clock, TICK)
    fired: list[tuple[str, float]] = []
    start = clock.monotonic()
    delays = {"c": 0.15, "a": 0.03, "b": 0.08, "a2": 0.031}
    for name, delay in delays.items():
        deadlines.schedule(delay, Item(clock, fired, name))
    clock.advance(0.3)
    assert [name for name, _ in fired][:2] in (["a", "a2"], ["a2", "a"])
    assert [name for name, _ in fired][2:] == ["b", "c"]
    for name, at in fired:
        late = at - (start + delays[name])
        assert 0 <= late < TICK, (name, late)
    assert len(deadlines) == 0


def test_deadlines_in_one_tick_share_one_timer() -> None:
    clock = FakeClock(monotonic=1000.0)
    deadlines = Deadlines(clock, TICK)
    fired: list[tuple[str, float]] = []
    for n in range(100):
        deadlines.schedule(0.001 + n * 0.0001, Item(clock, fired, str(n)))
    assert clock.pending == 1
    assert len(deadlines) == 100
    clock.advance(TICK)
    assert len(fired) == 100


def test_cancelled_items_do_not_fire_and_an_emptied_slot_drops_its_timer() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock, TICK)
    fired: list[tuple[str, float]] = []
    keep, drop, alone = (Item(clock, fired, name) for name in ("keep", "drop", "alone"))
    shared = deadlines.schedule(0.05, keep)
    assert deadlines.schedule(0.05, drop) == shared
    lone = deadlines.schedule(0.5, alone)
    deadlines.cancel(shared, drop)
    deadlines.cancel(lone, alone)
    deadlines.cancel(lone, alone)  # twice is harmless
    assert len(deadlines) == 1
    assert clock.pending == 1, "the emptied slot's timer is cancelled"
    clock.advance(1.0)
    assert [name for name, _ in fired] == ["keep"]
    assert len(deadlines) == 0


def test_a_deadline_set_from_a_callback_fires_in_its_own_tick() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock, TICK)
    fired: list[tuple[str, float]] = []

    class Chain(Item):
        def on_deadline(self) -> None:
            super().on_deadline()
            deadlines.schedule(0.1, Item(clock, fired, "next"))

    deadlines.schedule(0.1, Chain(clock, fired, "first"))
    clock.advance(0.25)
    (_, first), (_, second) = fired
    assert second - first >= 0.1


def test_deadlines_sharing_a_timer_each_run_under_their_own_request_id() -> None:
    """A slot's one timer runs in the context that set it (the loop's timers copy it); each
    deadline must run under its own item's request id, and the timer's is left as it was."""
    clock = FakeClock()
    deadlines = Deadlines(clock, TICK)
    seen: dict[str, str | None] = {}

    class Owned(Item):
        def on_deadline(self) -> None:
            seen[self.name] = REQUEST_ID.get()

    def schedule(name: str) -> None:
        REQUEST_ID.set(f"id-of-{name}")
        item = Owned(clock, [], name)
        item.request_id = None if name == "anonymous" else f"id-of-{name}"
        deadlines.schedule(0.01, item)

    for name in ("first", "second", "anonymous"):
        contextvars.copy_context().run(schedule, name)
    assert clock.pending == 1
    clock.advance(TICK)
    assert seen == {"first": "id-of-first", "second": "id-of-second", "anonymous": None}
    assert REQUEST_ID.get() is None


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock, TICK)
    fired: list[tuple[str, float]] = []
    for name in ("x", "y", "z"):
        deadlines.schedule(0.01, Item(clock, fired, name, fail=name == "y"))
    with caplog.at_level(logging.ERROR):
        clock.advance(0.08)
    assert sorted(name for name, _ in fired) == ["x", "y", "z"]
    assert "a deadline callback failed" in caplog.text


def test_close_cancels_everything() -> None:
    clock = FakeClock()
    deadlines = Deadlines(clock, TICK)
    fired: list[tuple[str, float]] = []
    deadlines.schedule(0.01, Item(clock, fired, "x"))
    deadlines.close()
    clock.advance(1.0)
    assert fired == []
    assert len(deadlines) == 0
    assert clock.pending == 0
