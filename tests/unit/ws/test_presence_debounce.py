"""Debounced join/leave frames on a fake clock: no leave/join pair for a quick return, at most one
frame per user per window, and the watchers' view always ends at the real state."""

from __future__ import annotations

import itertools

from tests.support.clock import FakeClock
from ws_service.domain.presence import Member, member_frame
from ws_service.domain.presence_debounce import PresenceDebounce

WINDOW = 1.0
CHANNEL = "chat:a"
ALICE, BOB = Member("u1", "alice"), Member("u2", "bob")


class Watchers:
    def __init__(self) -> None:
        self.clock = FakeClock(monotonic=0.0)
        self.frames: list[tuple[float, str, str]] = []
        self.filter = PresenceDebounce(WINDOW, self.show, self.clock)

    def show(self, channel: str, payload: str) -> None:
        kind = "join" if '"type":"join"' in payload else "leave"
        user = "alice" if ALICE.id in payload else "bob"
        self.frames.append((self.clock.monotonic(), kind, user))

    def move(self, kind: str, member: Member = ALICE, channel: str = CHANNEL) -> None:
        self.filter.announce(channel, member_frame(kind, channel, member.as_json()))

    def seen(self) -> list[tuple[str, str]]:
        return [(kind, user) for _, kind, user in self.frames]


def test_a_join_is_shown_at_once_and_a_leave_after_the_window() -> None:
    w = Watchers()
    w.move("join")
    assert w.frames == [(0.0, "join", "alice")]
    w.clock.advance(5)
    w.move("leave")
    w.clock.advance(WINDOW - 0.01)
    assert w.seen() == [("join", "alice")]
    w.clock.advance(0.01)
    assert w.frames[-1] == (5 + WINDOW, "leave", "alice")
    w.clock.advance(10)
    assert w.clock.pending == 0, "no state kept once the user is quiet"


def test_a_leave_and_join_within_the_window_show_nothing() -> None:
    w = Watchers()
    w.move("join")
    w.clock.advance(5)
    w.move("leave")
    w.clock.advance(0.3)
    w.move("join")
    w.clock.advance(10)
    assert w.seen() == [("join", "alice")]


def test_a_toggling_user_shows_at_most_one_frame_per_window_and_ends_right() -> None:
    for period in (0.05, 0.4, 0.7, 1.3, 2.5):
        w = Watchers()
        kind = "join"
        for _ in range(200):
            w.move(kind)
            kind = "leave" if kind == "join" else "join"
            w.clock.advance(period / 2)
        w.clock.advance(WINDOW - period / 2)
        assert w.frames[-1][1] == "leave", "shown within a window of the last move (a leave)"
        shown = len(w.frames)
        w.clock.advance(3 * WINDOW)
        assert len(w.frames) == shown
        times = [when for when, _, _ in w.frames]
        assert all(b - a >= WINDOW for a, b in itertools.pairwise(times)), (period, w.frames)
        kinds = [kind for _, kind, _ in w.frames]
        assert all(a != b for a, b in itertools.pairwise(kinds)), "joins and leaves alternate"


def test_a_return_after_a_shown_leave_waits_for_the_window() -> None:
    w = Watchers()
    w.move("leave")  # the first move seen: the user was present
    w.clock.advance(WINDOW)
    assert w.frames == [(WINDOW, "leave", "alice")]
    w.clock.advance(0.2)
    w.move("join")
    assert len(w.frames) == 1
    w.clock.advance(WINDOW)
    assert w.frames[-1] == (2 * WINDOW, "join", "alice")


def test_users_and_channels_are_independent_and_forget_cancels() -> None:
    w = Watchers()
    w.move("join", ALICE)
    w.move("join", BOB)
    w.move("leave", BOB)
    w.move("leave", ALICE, channel="chat:b")
    w.filter.forget("chat:b")
    w.clock.advance(2 * WINDOW)
    assert w.seen() == [("join", "alice"), ("join", "bob"), ("leave", "bob")]


def test_without_a_window_every_frame_is_shown_at_once() -> None:
    w = Watchers()
    w.filter = PresenceDebounce(0, w.show, w.clock)
    for kind in ("join", "leave", "join"):
        w.move(kind)
    assert w.seen() == [("join", "alice"), ("leave", "alice"), ("join", "alice")]
