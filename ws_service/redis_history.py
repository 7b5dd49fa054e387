"""Channel history in Redis, shared by every replica.

Per channel a hash ``hist:{<channel>}:meta`` holds the epoch and the last offset, and a stream
``hist:{<channel>}:log`` the messages (stream id ``<offset>-0``, capped at the policy's size). One Lua
script increments the offset, appends the message and PUBLISHes it, so subscribers on every
replica receive messages in offset order with no gap. Only a publish creates these keys; a read
writes nothing. A flushed or restarted Redis loses the hash, and the next publish starts a new
epoch. Times are Redis's own (``TIME``), so replicas' clocks do not matter.

Every key a script touches carries the channel as its hash tag (``{chat:x}``), so each script
stays within one hash slot, as Redis Cluster requires.

A publish is idempotent: it carries an id, and the script leaves ``hist:{<channel>}:pub:<id>``
(the offset and epoch it gave, for ``RESULT_TTL_MS``), so a retry of a publish whose reply was
lost returns the first result instead of storing and publishing the message again, as
centrifuge's result key does.
"""

from __future__ import annotations

import secrets
from typing import Any

from redis.asyncio import Redis

from shared.redis_write import WriteScript
from ws_service.domain.history import (
    EmptyMarks,
    HistoryPage,
    HistoryPolicy,
    Position,
    new_epoch,
    page,
)
from ws_service.redis_client import unavailable_as_bus_error

__all__ = ["RedisHistory"]

POSITION_RETENTION = 86_400
"""Seconds a quiet channel's epoch and offset are kept, so a client can learn it missed nothing."""

RESULT_TTL_MS = 30_000
"""How long a publish's result is kept for its retries: far longer than the retries of one write
(a few socket timeouts), short enough to cost little."""

MARKS = EmptyMarks("none")
"""Redis's positions for a channel without a stream; see ``EmptyMarks``."""

_NOW_MS = """
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
"""

# KEYS: meta, log, this publish's result. ARGV: frame, size, log ttl (ms), topic, new epoch,
# meta ttl (s), result ttl (ms). A missing meta hash (a new channel, or a flushed or restarted
# Redis) starts a new epoch with an empty log.
_PUBLISH = (
    _NOW_MS
    + """
local function framed(offset, epoch)
  return string.sub(ARGV[1], 1, -2) .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
end
local done = redis.call('GET', KEYS[3])
if done then
  local offset, epoch = string.match(done, '^(%d+):(.+)$')
  return framed(offset, epoch)
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local message = framed(offset, epoch)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 't', now_ms, 'f', message)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('SET', KEYS[3], offset .. ':' .. epoch, 'PX', ARGV[7])
redis.call('PUBLISH', ARGV[4], message)
return message
"""
)

# KEYS: meta, log. ARGV: first id ('' for the latest messages), how many. Writes nothing: a read
# of a channel without history leaves no trace.
_READ = (
    _NOW_MS
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
if not meta[1] then
  return {false, false, now_ms, {}}
end
local entries = {}
if tonumber(ARGV[2]) > 0 then
  if ARGV[1] == '' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
  end
end
return {meta[1], meta[2], now_ms, entries}
"""
)


class RedisHistory:
    """Implements ``History``; Redis failures are raised as ``BusUnavailable``."""

    def __init__(self, redis: Redis, *, prefix: str = "hist:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._publish = WriteScript(_PUBLISH)
        self._read = redis.register_script(_READ)

    def _key(self, channel: str, name: str) -> str:
        return f"{self._prefix}{{{channel}}}:{name}"

    def _keys(self, channel: str) -> list[str]:
        return [self._key(channel, "meta"), self._key(channel, "log")]

    async def publish(self, channel: str, topic: str, frame: str, policy: HistoryPolicy) -> str:
        """Raises ``BusOutcomeUnknown`` when every try timed out after reaching Redis."""
        publish_id = secrets.token_hex(8)
        with unavailable_as_bus_error():
            framed = await self._publish(
                self._redis,
                [*self._keys(channel), self._key(channel, f"pub:{publish_id}")],
                [
                    frame,
                    policy.size,
                    max(1, int(policy.ttl * 1000)),
                    topic,
                    new_epoch(),
                    _retention(policy),
                    RESULT_TTL_MS,
                ],
                idempotent=True,
            )
        return _text(framed)

    async def read(
        self, channel: str, since: Position | None, limit: int, policy: HistoryPolicy
    ) -> HistoryPage:
        """Reads at most ``limit`` entries (one to tell whether ``since`` can be continued)."""
        if since is None:
            start, count = "", limit
        else:
            start, count = f"{since.offset + 1}-0", max(limit, 1)
        with unavailable_as_bus_error():
            epoch, offset, now_ms, entries = await self._read(
                keys=self._keys(channel), args=[start, count]
            )
        now = int(now_ms) / 1000
        from_empty = MARKS.continues(since, now, _retention(policy))
        if epoch is None:
            return page([], MARKS.at(now), since, limit, from_empty=from_empty)
        if since is None:
            entries.reverse()
        oldest_ms = int(now_ms) - policy.ttl * 1000
        kept = []
        for entry_id, flat in entries:
            fields = {_text(k): v for k, v in zip(flat[::2], flat[1::2], strict=True)}
            if int(fields["t"]) >= oldest_ms:
                kept.append((int(_text(entry_id).partition("-")[0]), _text(fields["f"])))
        current = Position(int(offset), _text(epoch))
        return page(kept, current, since, limit, from_empty=from_empty)


def _retention(policy: HistoryPolicy) -> int:
    """Seconds a channel's epoch and offset live after its last publish (never less than its
    messages): a stream's lifetime, which bounds how long an ``EmptyMarks`` position holds."""
    return max(POSITION_RETENTION, int(policy.ttl))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
