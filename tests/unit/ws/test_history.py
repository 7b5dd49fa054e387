"""The in-memory history ring: any interleaving of publishes, trims and reads, no gap, no duplicate."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.clock import FakeClock
from ws_service.domain.errors import HistoryFull
from ws_service.domain.history import (
    SWEEP_DELAY,
    EmptyMarks,
    HistoryPolicy,
    MemoryHistory,
    Position,
    message_cost,
)

POLICY = HistoryPolicy(size=5, ttl=10)


def offsets(frames: list[str]) -> list[int]:
    return [json.loads(frame)["offset"] for frame in frames]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 3)),
        st.tuples(st.just("wait"), st.floats(0, 6)),
        st.tuples(st.just("recover"), st.integers(-2, 30)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_recovery_never_skips_or_repeats(ops: list[tuple[str, float]]) -> None:
    clock = FakeClock(monotonic=0.0)
    published: list[str] = []

    async def bus(topic: str, frame: str) -> None:
        published.append(frame)

    history = MemoryHistory(bus, clock=clock)

    async def run() -> None:
        for op, arg in ops:
            if op == "publish":
                for _ in range(int(arg)):
                    await history.publish("chat:a", "chan:chat:a", '{"type":"message"}', POLICY)
            elif op == "wait":
                clock.advance(arg)
            else:
                start = (await history.read("chat:a", None, 0, POLICY)).position
                since = Position(int(arg), start.epoch)
                result = await history.read("chat:a", since, 100, POLICY)
                current = result.position.offset
                if result.recovered:
                    # Exactly the messages after `since`, in order, ending at the current offset.
                    assert offsets(result.publications) == list(
                        range(since.offset + 1, current + 1)
                    )
                    assert 0 <= since.offset <= current
                else:
                    kept = await history.read("chat:a", None, 100, POLICY)
                    oldest = offsets(kept.publications)[0] if kept.publications else current + 1
                    assert since.offset > current or since.offset + 1 < oldest or since.offset < 0

    asyncio.run(run())
    # The bus saw every message once, in offset order: 1, 2, ... within each epoch (a channel whose
    # messages all expired is forgotten, and its next message starts a new epoch).
    epochs: dict[str, list[int]] = {}
    for frame in published:
        epochs.setdefault(json.loads(frame)["epoch"], []).append(json.loads(frame)["offset"])
    assert all(seen == list(range(1, len(seen) + 1)) for seen in epochs.values())


async def test_another_epoch_is_not_recovered() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    history = MemoryHistory(bus)
    frame = await history.publish("chat:a", "chan:chat:a", '{"type":"message"}', POLICY)
    assert json.loads(frame)["offset"] == 1
    result = await history.read("chat:a", Position(0, "other"), 10, POLICY)
    assert (result.recovered, result.publications) == (False, [])


async def test_a_channel_whose_messages_all_expired_is_forgotten_and_starts_a_new_epoch() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    clock = FakeClock(monotonic=0.0)
    history = MemoryHistory(bus, clock=clock)
    await history.publish("chat:a", "t", '{"type":"message"}', POLICY)
    before = (await history.read("chat:a", None, 10, POLICY)).position
    clock.advance(POLICY.ttl)
    await history.read("chat:b", None, 0, POLICY)
    assert history.stored_bytes == 0
    framed = await history.publish("chat:a", "t", '{"type":"message"}', POLICY)
    after = await history.read("chat:a", before, 10, POLICY)
    assert (json.loads(framed)["offset"], after.recovered) == (1, False)
    assert after.position.epoch != before.epoch


async def test_limit_without_since_gives_the_most_recent() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    history = MemoryHistory(bus)
    for _ in range(4):
        await history.publish("chat:a", "t", '{"type":"message"}', POLICY)
    recent = await history.read("chat:a", None, 2, POLICY)
    assert offsets(recent.publications) == [3, 4]
    assert recent.position.offset == 4


async def test_reads_of_channels_without_history_create_nothing_and_evict_nothing() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    history = MemoryHistory(bus)
    for _ in range(5):
        framed = await history.publish("chat:victim", "t", '{"type":"message"}', POLICY)
    epoch = json.loads(framed)["epoch"]
    stored = history.stored_bytes
    for n in range(1000):
        empty = await history.read(f"chat:e{n}", None, 0, POLICY)
        assert (empty.position.offset, empty.publications) == (0, [])
    assert history.stored_bytes == stored
    kept = await history.read("chat:victim", Position(2, epoch), 10, POLICY)
    assert (kept.recovered, offsets(kept.publications)) == (True, [3, 4, 5])


async def test_a_position_read_before_the_first_message_recovers_it() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    history = MemoryHistory(bus)
    mark = (await history.read("chat:a", None, 10, POLICY)).position
    assert mark.offset == 0
    assert (await history.read("chat:a", mark, 10, POLICY)).recovered
    for _ in range(2):
        await history.publish("chat:a", "t", '{"type":"message"}', POLICY)
    result = await history.read("chat:a", mark, 10, POLICY)
    assert (result.recovered, offsets(result.publications)) == (True, [1, 2])
    assert result.position.epoch != mark.epoch


async def test_a_mark_whose_time_is_not_ascii_digits_is_not_recovered() -> None:
    """A client writes ``since``: a superscript two is a digit to ``str.isdigit`` but not to
    ``int``, and an Arabic-Indic digit is one to both; neither names a mark."""

    async def bus(topic: str, frame: str) -> None:
        return None

    history = MemoryHistory(bus)
    mark = (await history.read("chat:a", None, 10, POLICY)).position
    origin = mark.epoch.rpartition("-")[0]
    for ms in ("\u00b2", "\u0661", "1_0", " 1"):
        forged = Position(0, f"{origin}-{ms}")
        result = await history.read("chat:a", forged, 10, POLICY)
        assert (result.recovered, result.publications) == (False, [])


async def test_a_position_read_before_a_stream_that_expired_is_not_recovered() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    clock = FakeClock(monotonic=0.0)
    history = MemoryHistory(bus, clock=clock)
    mark = (await history.read("chat:a", None, 10, POLICY)).position
    clock.advance(1)
    await history.publish("chat:a", "t", '{"type":"message"}', POLICY)  # missed by the reader
    clock.advance(POLICY.ttl + 1)  # expired: the stream is forgotten
    await history.publish("chat:a", "t", '{"type":"message"}', POLICY)
    result = await history.read("chat:a", mark, 10, POLICY)
    assert (result.recovered, result.publications) == (False, [])


async def test_expired_messages_free_their_memory_though_their_channels_are_never_used_again() -> (
    None
):
    """The review's case: many distinct channels, each published to once; memory must come back
    after the TTL without anyone touching those channels again."""

    async def bus(topic: str, frame: str) -> None:
        return None

    clock = FakeClock(monotonic=0.0)
    history = MemoryHistory(bus, clock=clock)
    frame = json.dumps({"type": "message", "data": "x" * 10_000})
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for n in range(500):
            await history.publish(f"chat:c{n}", "t", frame, POLICY)
        grown = tracemalloc.get_traced_memory()[0] - baseline
        clock.advance(POLICY.ttl)
        await history.read("chat:elsewhere", None, 0, POLICY)
        kept = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown > 500 * 10_000
    assert kept < grown / 20


async def test_the_sweep_timer_frees_expired_messages_with_no_publish_or_read() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    clock = FakeClock(monotonic=0.0)
    history = MemoryHistory(bus, clock=clock)
    brief = HistoryPolicy(size=5, ttl=0.05)
    for n in range(50):
        await history.publish(f"chat:c{n}", "t", '{"type":"message"}', brief)
    assert history.stored_bytes > 0
    assert clock.pending == 1, "one timer for the whole store"
    clock.advance(brief.ttl + SWEEP_DELAY)
    assert history.stored_bytes == 0
    assert clock.pending == 0


async def test_the_store_is_bounded_in_bytes_and_refuses_rather_than_evicts() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    clock = FakeClock(monotonic=0.0)
    history = MemoryHistory(bus, clock=clock, max_bytes=1_000_000)
    for _ in range(3):
        framed = await history.publish("chat:victim", "t", '{"type":"message"}', POLICY)
    victim = Position(0, json.loads(framed)["epoch"])
    big = json.dumps({"type": "message", "data": "x" * 60_000})
    published = 0
    with pytest.raises(HistoryFull):
        for n in range(100):
            await history.publish(f"chat:c{n}", "t", big, POLICY)
            published += 1
    assert 10 <= published < 17
    assert history.stored_bytes <= 1_000_000
    kept = await history.read("chat:victim", victim, 10, POLICY)
    assert (kept.recovered, offsets(kept.publications)) == (True, [1, 2, 3])
    clock.advance(POLICY.ttl)
    await history.publish("chat:c0", "t", big, POLICY)  # room again once the old ones expired


async def test_what_one_user_keeps_is_capped_until_it_expires_or_is_trimmed() -> None:
    async def bus(topic: str, frame: str) -> None:
        return None

    clock = FakeClock(monotonic=0.0)
    frame = json.dumps({"type": "message", "data": "x" * 10_000})
    history = MemoryHistory(bus, clock=clock, user_bytes=5 * message_cost(frame))
    for n in range(5):
        await history.publish(f"chat:c{n}", "t", frame, POLICY, owner="mallory")
    stored = history.stored_bytes
    with pytest.raises(HistoryFull):
        await history.publish("chat:c9", "t", frame, POLICY, owner="mallory")
    assert history.stored_bytes == stored  # refused: nothing kept
    assert (await history.read("chat:c9", None, 10, POLICY)).position.offset == 0
    await history.publish("chat:c9", "t", frame, POLICY)  # the server is not charged
    await history.publish("chat:c9", "t", frame, POLICY, owner="alice")
    # Trimming by size gives the owner's share back: chat:c0 keeps 5 messages.
    for _ in range(POLICY.size):
        await history.publish("chat:c0", "t", "{}", POLICY, owner="bob")
    await history.publish("chat:c8", "t", frame, POLICY, owner="mallory")
    clock.advance(POLICY.ttl)
    for n in range(5):
        await history.publish(f"chat:d{n}", "t", frame, POLICY, owner="mallory")


def test_a_mark_with_more_digits_than_a_time_is_not_one_of_ours() -> None:
    """A client's ``since.epoch`` is parsed here: 5,000 digits raised ValueError (Python's
    integer-string limit) and closed the socket 1011 (an outside probe)."""
    marks = EmptyMarks("none")
    now = 1_800_000_000.0
    assert marks.continues(marks.at(now - 1), now, 60)
    assert not marks.continues(Position(0, "none-" + "9" * 5000), now, 60)
