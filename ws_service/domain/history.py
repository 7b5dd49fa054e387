"""Channel history with positions: what makes a reconnect lossless.

Every message of a channel with history gets an ``offset`` one above the previous one, in publish
order, and the channel's stream has an ``epoch`` that changes whenever its history was lost (a
restart, an eviction, a Redis flush). A client that remembers ``{offset, epoch}`` asks for what it
missed; the answer is either every missed message in order (``recovered``) or an honest "no".

The offset is assigned in the same step that publishes the message on the bus, so the order
subscribers see is the offset order: in-process here, in one Lua script in Redis.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "MAX_OFFSET",
    "EmptyMarks",
    "History",
    "HistoryPage",
    "HistoryPolicy",
    "MemoryHistory",
    "Position",
    "new_epoch",
    "position_of",
    "with_position",
]


MAX_OFFSET = 2**63 - 1
"""The largest offset a stream can reach: Redis keeps the counter as a signed 64-bit integer, so a
position beyond it is a client's mistake, not something to look up."""


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
    epoch, an offset older than what is kept, or an offset the stream never reached.
    """

    publications: list[str]
    position: Position
    recovered: bool


class History(Protocol):
    async def publish(self, channel: str, topic: str, frame: str, policy: HistoryPolicy) -> str:
        """Give ``frame`` the channel's next offset, keep it, publish it on ``topic``; returns it."""

    async def read(
        self, channel: str, since: Position | None, limit: int, policy: HistoryPolicy
    ) -> HistoryPage:
        """The messages after ``since`` (all kept ones when None), at most ``limit`` of them."""


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
    if not sep or not offset.isdigit() or not (epoch.isascii() and epoch.isalnum()):
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
            and ms.isdigit()
            and 0 <= now * 1000 - int(ms) < retention * 1000
        )


def page(
    kept: list[tuple[int, str]],
    current: Position,
    since: Position | None,
    limit: int,
    *,
    from_empty: bool = False,
) -> HistoryPage:
    """Shared by every backend: decide ``recovered`` from what is kept and cut to ``limit``.

    ``kept`` holds (offset, frame) pairs, oldest first, all of epoch ``current.epoch``.
    ``from_empty``: ``since`` is a mark that ``EmptyMarks.continues``, so whatever stream the
    channel has now began after it.
    """
    if since is None:
        return HistoryPage([frame for _, frame in kept[-limit:]] if limit else [], current, True)
    oldest = kept[0][0] if kept else current.offset + 1
    recovered = (
        (since.epoch == current.epoch or from_empty)
        and since.offset <= current.offset
        and since.offset + 1 >= oldest
    )
    if not recovered:
        return HistoryPage([], current, False)
    missed = [frame for offset, frame in kept if offset > since.offset]
    return HistoryPage(missed[:limit], current, True)


@dataclass
class _Stream:
    epoch: str
    offset: int = 0
    entries: deque[tuple[int, float, str]] = field(default_factory=deque)

    def trim(self, policy: HistoryPolicy, now: float) -> None:
        while self.entries and (
            len(self.entries) > policy.size or self.entries[0][1] < now - policy.ttl
        ):
            self.entries.popleft()


class MemoryHistory:
    """The embedded backend: bounded by ``size`` per channel and ``max_channels`` channels.

    Only a publish makes a stream; a read of a channel without one answers an ``EmptyMarks``
    position. A channel evicted to stay under ``max_channels`` starts a new epoch when it is
    used again, and the marks get a new origin, so a client holding an old position is told to
    resynchronise rather than given a wrong answer.
    """

    def __init__(
        self,
        publish: Callable[[str, str], Awaitable[None]],
        *,
        max_channels: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publish = publish
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._max_channels = max_channels
        self._clock = clock
        self._marks = EmptyMarks(new_epoch())

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(new_epoch())
            if len(self._streams) > self._max_channels:
                self._streams.popitem(last=False)
                self._marks = EmptyMarks(new_epoch())
        else:
            self._streams.move_to_end(channel)
        return stream

    async def publish(self, channel: str, topic: str, frame: str, policy: HistoryPolicy) -> str:
        now = self._clock()
        stream = self._stream(channel)
        stream.offset += 1
        framed = with_position(frame, stream.offset, stream.epoch)
        stream.entries.append((stream.offset, now, framed))
        stream.trim(policy, now)
        await self._publish(topic, framed)
        return framed

    async def read(
        self, channel: str, since: Position | None, limit: int, policy: HistoryPolicy
    ) -> HistoryPage:
        now = self._clock()
        from_empty = self._marks.continues(since, now, policy.ttl)
        stream = self._streams.get(channel)
        if stream is None:
            return page([], self._marks.at(now), since, limit, from_empty=from_empty)
        stream.trim(policy, now)
        kept = [(offset, frame) for offset, _, frame in stream.entries]
        current = Position(stream.offset, stream.epoch)
        return page(kept, current, since, limit, from_empty=from_empty)
