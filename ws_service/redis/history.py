"""Channel history in Redis, shared by every replica.

Per channel a hash ``hist:meta:<channel>`` holds the epoch and the last offset, and a stream
``hist:log:<channel>`` the messages (stream id ``<offset>-0``, capped at the policy's size). One Lua
script increments the offset, appends the message and PUBLISHes it, so subscribers on every
replica receive messages in offset order with no gap. A flushed or restarted Redis loses the hash,
and the next use starts a new epoch.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from ws_service.domain.history import HistoryPage, HistoryPolicy, Position, new_epoch, page
from ws_service.redis.client import unavailable_as_bus_error

__all__ = ["RedisHistory"]

POSITION_RETENTION = 86_400
"""Seconds a quiet channel's epoch and offset are kept, so a client can learn it missed nothing."""

# Shared by both scripts: the channel's epoch, started afresh (with an empty log) when the meta
# hash is gone, which is how a flushed or restarted Redis shows.
_EPOCH = """
local function current_epoch(candidate, ttl)
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
    redis.call('EXPIRE', KEYS[1], ttl)
  end
  return epoch
end
"""

# ARGV: frame, size, log ttl (ms), topic, new epoch, now (ms), meta ttl (s)
_PUBLISH = (
    _EPOCH
    + """
local epoch = current_epoch(ARGV[5], ARGV[7])
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local framed = string.sub(ARGV[1], 1, -2) .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 't', ARGV[6], 'f', framed)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('PUBLISH', ARGV[4], framed)
return framed
"""
)

# ARGV: first id, new epoch, meta ttl (s)
_READ = (
    _EPOCH
    + """
local epoch = current_epoch(ARGV[2], ARGV[3])
local offset = redis.call('HGET', KEYS[1], 'offset')
return {epoch, offset, redis.call('XRANGE', KEYS[2], ARGV[1], '+')}
"""
)


class RedisHistory:
    """Implements ``History``; Redis failures are raised as ``BusUnavailable``."""

    def __init__(self, redis: Redis, *, prefix: str = "hist:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._publish = redis.register_script(_PUBLISH)
        self._read = redis.register_script(_READ)

    def _keys(self, channel: str) -> list[str]:
        return [f"{self._prefix}meta:{channel}", f"{self._prefix}log:{channel}"]

    async def publish(self, channel: str, topic: str, frame: str, policy: HistoryPolicy) -> str:
        with unavailable_as_bus_error():
            framed = await self._publish(
                keys=self._keys(channel),
                args=[
                    frame,
                    policy.size,
                    max(1, int(policy.ttl * 1000)),
                    topic,
                    new_epoch(),
                    int(time.time() * 1000),
                    max(POSITION_RETENTION, int(policy.ttl)),
                ],
            )
        return _text(framed)

    async def read(
        self, channel: str, since: Position | None, limit: int, policy: HistoryPolicy
    ) -> HistoryPage:
        start = "-" if since is None else f"{max(since.offset, 0) + 1}-0"
        with unavailable_as_bus_error():
            epoch, offset, entries = await self._read(
                keys=self._keys(channel),
                args=[start, new_epoch(), max(POSITION_RETENTION, int(policy.ttl))],
            )
        oldest_ms = time.time() * 1000 - policy.ttl * 1000
        kept = []
        for entry_id, flat in entries:
            fields = {_text(k): v for k, v in zip(flat[::2], flat[1::2], strict=True)}
            if int(fields["t"]) >= oldest_ms:
                kept.append((int(_text(entry_id).partition("-")[0]), _text(fields["f"])))
        return page(kept, Position(int(offset), _text(epoch)), since, limit)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
