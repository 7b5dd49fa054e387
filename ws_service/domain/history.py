"""Channel history with positions: what makes a reconnect lossless.

Every message of a channel with history gets an ``offset`` one above the previous one, in publish
order, and the channel's stream has an ``epoch`` that changes whenever its history was lost (a
restart, a channel whose messages all expired, a Redis flush). A client that remembers ``{offset, epoch}`` asks for what it
missed; the answer is either every missed message in order (``recovered``) or an honest "no".

The offset is assigned in the same step that publishes the message on the bus, so the order
subscribers see is the offset order: in-process here, in one Lua script in Redis.
"""

from __future__ import annotations

import heapq
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from realtime_gateway_protocol.frames import MAX_EPOCH_LENGTH, MAX_OFFSET
from ws_service.domain.clock import Clock, LoopClock, Timer
from ws_service.domain.errors import HistoryFull

__all__ = [
    "MAX_EPOCH_LENGTH",
    "MAX_OFFSET",
    "MESSAGE_OVERHEAD",
    "USER_FULL",
    "EmptyMarks",
    "History",
    "HistoryPage",
    "HistoryPolicy",
    "MemoryHistory",
    "Position",
    "message_cost",
    "new_epoch",
    "position_of",
    "with_position",
]


@dataclass(frozen=True, slots=True)
class Position:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How much of a channel's past is kept: at most ``size`` messages, none older than ``ttl`` s."""

    size: int
    ttl: float


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages as ready-to-send ``message`` frames (oldest first) and the stream's position.

    ``recovered`` is False when the requested position cannot be continued without a gap: another
    epoch, an offset older than what is kept, or an offset the stream never reached. ``complete``
    (after a ``since``): the publications reach the stream's position, none was left out for the
    limit or the byte budget.
    """

    publications: list[str]
    position: Position
    recovered: bool
    complete: bool = True


class History(Protocol):
    async def publish(
        self,
        channel: str,
        topic: str,
        frame: str,
        policy: HistoryPolicy,
        *,
        owner: str | None = None,
    ) -> str:
        """Give ``frame`` the channel's next offset, keep it, publish it on ``topic``; returns it.

        ``owner`` is the publishing user, whose messages kept at once may cost at most the
        backend's ``user_bytes`` (``message_cost`` each, until they expire); None for the server,
        which is not charged. Raises ``HistoryFull`` when there is no room: nothing is stored or
        published then."""

    async def read(
        self,
        channel: str,
        since: Position | None,
        limit: int,
        policy: HistoryPolicy,
        max_bytes: int = 0,
    ) -> HistoryPage:
        """The messages after ``since`` (all kept ones when None), at most ``limit`` of them and,
        with ``max_bytes``, at most that many bytes of them (at least one): the oldest after
        ``since``, else the most recent. Only what is returned is read out of the store."""


def new_epoch() -> str:
    return secrets.token_hex(4)


def with_position(frame: str, offset: int, epoch: str) -> str:
    """Add ``offset`` and ``epoch`` to an encoded JSON object without decoding it again."""
    return f'{frame[:-1]},"offset":{offset},"epoch":"{epoch}"}}'


_OFFSET = ',"offset":'
_EPOCH = ',"epoch":"'


def position_of(frame: str) -> Position | None:
    """The position ``with_position`` appended, read back without decoding the frame (once per
    message on a replica, not once per subscriber); None when the frame ends otherwise."""
    start = frame.rfind(_OFFSET)
    if start < 0 or not frame.endswith('"}'):
        return None
    offset, sep, epoch = frame[start + len(_OFFSET) : -2].partition(_EPOCH)
    if (
        not sep
        or not (offset.isascii() and offset.isdigit())
        or not (epoch.isascii() and epoch.isalnum())
    ):
        return None
    return Position(int(offset), epoch)


@dataclass(frozen=True, slots=True)
class EmptyMarks:
    """The position of a channel that has no stream: offset 0 and ``<origin>-<ms>`` for epoch.

    Reading such a channel creates nothing (any reader could otherwise create millions of
    streams), so the epoch names the moment of the read instead of a stream. A stream lives at
    most ``retention`` seconds after its last message; a stream begun after a mark younger than
    that is therefore still there, and none can have come and gone unseen: recovering from the
    mark is reading the current stream from its start. ``origin`` tells this backend's marks
    apart (a process of its own for the embedded one, whose restart loses every stream).
    """

    origin: str

    def at(self, now: float) -> Position:
        return Position(0, f"{self.origin}-{int(now * 1000)}")

    def continues(self, since: Position | None, now: float, retention: float) -> bool:
        """Whether ``since`` is one of these marks, young enough to be recovered from."""
        if since is None or since.offset != 0:
            return False
        origin, sep, ms = since.epoch.rpartition("-")
        return (
            bool(sep)
            and origin == self.origin
            and (ms.isascii() and ms.isdigit() and len(ms) <= 16)
            and 0 <= now * 1000 - int(ms) < retention * 1000
        )


def fitting(frames: list[str], max_bytes: int, *, newest: bool) -> list[str]:
    """The oldest (else the newest) of ``frames`` whose bytes stay within ``max_bytes``, at least
    one; all of them without a budget."""
    if max_bytes <= 0:
        return frames
    ordered = reversed(frames) if newest else iter(frames)
    kept, total = 0, 0
    for frame in ordered:
        total += len(frame)
        if total > max_bytes and kept:
            break
        kept += 1
    if kept == len(frames):
        return frames
    return frames[len(frames) - kept :] if newest else frames[:kept]


def page(
    kept: list[tuple[int, str]],
    current: Position,
    since: Position | None,
    limit: int,
    *,
    from_empty: bool = False,
    max_bytes: int = 0,
) -> HistoryPage:
    """Shared by every backend: decide ``recovered`` from what is kept and cut to ``limit`` and
    ``max_bytes``.

    ``kept`` holds (offset, frame) pairs, oldest first, all of epoch ``current.epoch`` (a backend
    may have cut it to the budget already: ``complete`` is read from the offsets).
    ``from_empty``: ``since`` is a mark that ``EmptyMarks.continues``, so whatever stream the
    channel has now began after it.
    """
    if since is None:
        recent = [frame for _, frame in kept[-limit:]] if limit else []
        return HistoryPage(fitting(recent, max_bytes, newest=True), current, True)
    oldest = kept[0][0] if kept else current.offset + 1
    recovered = (
        (since.epoch == current.epoch or from_empty)
        and since.offset <= current.offset
        and since.offset + 1 >= oldest
    )
    if not recovered:
        return HistoryPage([], current, False)
    missed = [(offset, frame) for offset, frame in kept if offset > since.offset][:limit]
    frames = fitting([frame for _, frame in missed], max_bytes, newest=False)
    last = missed[len(frames) - 1][0] if frames else since.offset
    return HistoryPage(frames, current, True, complete=last >= current.offset)


MESSAGE_OVERHEAD = 256
"""What keeping one message costs beyond its frame as published: its offset and epoch, and the
bookkeeping around it (about 220 B in process, measured with tracemalloc; a stream entry, a
result key and a budget entry in Redis)."""

USER_FULL = "your messages kept in channel history fill your share; try again when they expire"


def message_cost(frame: str) -> int:
    """What a message counts against the store's bound and its publisher's budget."""
    return len(frame) + MESSAGE_OVERHEAD


STREAM_BYTES = 1000
"""What one channel's stream costs beyond its messages (its deque, its dict entry, its name)."""

SWEEP_DELAY = 1.0
"""Seconds the expiry sweep may run late, so that expiries close together share one timer."""


class _Entry(NamedTuple):
    offset: int
    expires: float
    frame: str
    cost: int
    owner: str | None


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    entries: deque[_Entry] = field(default_factory=deque)


class MemoryHistory:
    """The embedded backend, bounded in time and in bytes.

    Every message is dropped ``ttl`` after it was published, by a sweep on a timer (a heap of
    one due time per stream), whether or not its channel is used again; a stream whose last
    message went is forgotten, its memory freed. ``max_bytes`` bounds the whole store, and
    ``user_bytes`` (0: no limit) what one user's messages may cost in it at once: a publish that
    does not fit is refused with ``HistoryFull`` rather than evicting anyone's history, so no
    publisher can push out another channel's messages. Only a publish makes a stream; a read
    of a channel without one answers an ``EmptyMarks`` position, which stays honest because a
    stream is only ever forgotten ``ttl`` after its last message.
    """

    def __init__(
        self,
        publish: Callable[[str, str], Awaitable[None]],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        user_bytes: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self._publish = publish
        self._max_bytes = max_bytes
        self._user_bytes = user_bytes
        self._owned: dict[str, int] = {}
        self._clock: Clock = clock or LoopClock()
        self._streams: dict[str, _Stream] = {}
        self._due: list[tuple[float, str]] = []
        self._bytes = 0
        self._timer: Timer | None = None
        self._timer_at = 0.0
        self._marks = EmptyMarks(new_epoch())

    @property
    def stored_bytes(self) -> int:
        """What the store holds, as counted against ``max_bytes``."""
        return self._bytes

    async def publish(
        self,
        channel: str,
        topic: str,
        frame: str,
        policy: HistoryPolicy,
        *,
        owner: str | None = None,
    ) -> str:
        now = self._clock.monotonic()
        self._expire(now)
        cost = message_cost(frame)
        over = owner is not None and self._owned.get(owner, 0) + cost > self._user_bytes
        if over and self._user_bytes:
            raise HistoryFull(USER_FULL)
        stream = self._streams.get(channel)
        new = stream is None
        if stream is None:
            stream = _Stream(new_epoch())
        opening = STREAM_BYTES + len(channel) if new else 0
        if self._bytes + cost + opening > self._max_bytes:
            raise HistoryFull("channel history is full; try again when older messages expire")
        if new:
            self._streams[channel] = stream
            heapq.heappush(self._due, (now + policy.ttl, channel))
            self._bytes += opening
            self._schedule()
        stream.offset += 1
        framed = with_position(frame, stream.offset, stream.epoch)
        stream.entries.append(_Entry(stream.offset, now + policy.ttl, framed, cost, owner))
        self._bytes += cost
        if owner is not None:
            self._owned[owner] = self._owned.get(owner, 0) + cost
        while len(stream.entries) > policy.size:
            self._drop(stream.entries.popleft())
        await self._publish(topic, framed)
        return framed

    async def read(
        self,
        channel: str,
        since: Position | None,
        limit: int,
        policy: HistoryPolicy,
        max_bytes: int = 0,
    ) -> HistoryPage:
        now = self._clock.monotonic()
        self._expire(now)
        from_empty = self._marks.continues(since, now, policy.ttl)
        stream = self._streams.get(channel)
        if stream is None:
            return page([], self._marks.at(now), since, limit, from_empty=from_empty)
        kept = [(entry.offset, entry.frame) for entry in stream.entries]
        current = Position(stream.offset, stream.epoch)
        return page(kept, current, since, limit, from_empty=from_empty, max_bytes=max_bytes)

    def close(self) -> None:
        """Stop the sweep timer (the store itself needs no closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, now: float) -> None:
        """Drop every message whose time has come; forget the streams left empty."""
        while self._due and self._due[0][0] <= now:
            _, channel = heapq.heappop(self._due)
            stream = self._streams[channel]
            entries = stream.entries
            while entries and entries[0].expires <= now:
                self._drop(entries.popleft())
            if entries:
                heapq.heappush(self._due, (entries[0].expires, channel))
            else:
                del self._streams[channel]
                self._bytes -= STREAM_BYTES + len(channel)

    def _drop(self, entry: _Entry) -> None:
        self._bytes -= entry.cost
        if entry.owner is not None:
            left = self._owned.pop(entry.owner) - entry.cost
            if left:
                self._owned[entry.owner] = left

    def _schedule(self) -> None:
        """Keep one timer, for the earliest due time (a stream's due time is never later than
        its oldest message's expiry, so nothing waits for a read or a publish to be dropped)."""
        if not self._due or (self._timer is not None and self._timer_at <= self._due[0][0]):
            return
        self.close()
        self._timer_at = self._due[0][0]
        at = max(self._timer_at, self._clock.monotonic()) + SWEEP_DELAY
        self._timer = self._clock.call_at(at, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        self._expire(self._clock.monotonic())
        self._schedule()
