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


def page(
    kept: list[tuple[int, str]], current: Position, since: Position | None, limit: int
) -> HistoryPage:
    """Shared by every backend: decide ``recovered`` from what is kept and cut to ``limit``.

    ``kept`` holds (offset, frame) pairs, oldest first, all of epoch ``current.epoch``.
    """
    if since is None:
        return HistoryPage([frame for _, frame in kept[-limit:]] if limit else [], current, True)
    oldest = kept[0][0] if kept else current.offset + 1
    recovered = (
        since.epoch == current.epoch
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

    A channel evicted to stay under ``max_channels`` starts a new epoch when it is used again, so
    a client holding an old position is told to resynchronise rather than given a wrong answer.
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

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(new_epoch())
            if len(self._streams) > self._max_channels:
                self._streams.popitem(last=False)
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
        stream = self._stream(channel)
        stream.trim(policy, self._clock())
        kept = [(offset, frame) for offset, _, frame in stream.entries]
        return page(kept, Position(stream.offset, stream.epoch), since, limit)
