"""Channel history in Redis, shared by every replica.

Per channel a hash ``hist:{<channel>}:meta`` holds the epoch and the last offset, and a stream
``hist:{<channel>}:log`` the messages (stream id ``<offset>-0``, capped at the policy's size). One Lua
script increments the offset, appends the message and PUBLISHes it, so subscribers on every
replica receive messages in offset order with no gap. Only a publish creates these keys, and they
live ``ttl`` after the channel's last publish; a read writes nothing. A flushed or restarted Redis
loses the hash, and the next publish starts a new epoch. Times are Redis's own (``TIME``), so
replicas' clocks do not matter.

A user's publish is first charged to them (``message_cost``, until the message expires) in
``hist:{u:<sub>}:charges`` and ``hist:{u:<sub>}:bytes``, atomically across replicas; one over
``user_bytes`` is refused. The charge is a script of its own because every key a script touches
carries one hash tag (the channel's ``{chat:x}`` or the user's ``{u:42}``), so that each script
stays within one hash slot, as Redis Cluster requires. A charge whose publish then fails stays
until it would have expired: the error is on the safe side.

Both writes are idempotent: a publish carries an id, and the script leaves
``hist:{<channel>}:pub:<id>`` (the offset and epoch it gave, for ``RESULT_TTL_MS``), so a retry of
a publish whose reply was lost returns the first result instead of storing and publishing the
message again, as centrifuge's result key does; a charge is recorded under the same id.
"""

from __future__ import annotations

import secrets
from typing import Any

from redis.asyncio import Redis

from shared.bus import BusOutcomeUnknown, BusUnavailable
from shared.redis.write import WriteScript
from ws_service.domain.errors import HistoryFull
from ws_service.domain.history import (
    USER_FULL,
    EmptyMarks,
    HistoryPage,
    HistoryPolicy,
    Position,
    message_cost,
    new_epoch,
    page,
)
from ws_service.redis.client import unavailable_as_bus_error

__all__ = ["RedisHistory"]

RESULT_TTL_MS = 30_000
"""How long a publish's result is kept for its retries: far longer than the retries of one write
(a few socket timeouts), short enough to cost little."""

MARKS = EmptyMarks("none")
"""Redis's positions for a channel without a stream; see ``EmptyMarks``."""

_NOW_MS = """
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
"""

# KEYS: the user's charges (a sorted set of "<id>:<bytes>" scored by expiry, ms), their total.
# ARGV: this publish's "<id>:<bytes>", its bytes, its ttl (ms), the user's limit. Returns 1 when
# charged (or already charged: a retry), 0 when over the limit.
_CHARGE = WriteScript(
    _NOW_MS
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if #expired > 0 then
  local freed = 0
  for _, charge in ipairs(expired) do
    freed = freed + tonumber(string.match(charge, ':(%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  redis.call('DECRBY', KEYS[2], freed)
end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
if total + tonumber(ARGV[2]) > tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[2])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
return 1
"""
)

# KEYS: meta, log, this publish's result. ARGV: frame, size, ttl (ms), topic, new epoch, result
# ttl (ms). A missing meta hash (a new channel, or a flushed or restarted Redis) starts a new epoch
# with an empty log. Expired messages at the head of the log are deleted, so that a channel kept
# alive by others holds nobody's messages past their ttl (and their charge).
_PUBLISH = WriteScript(
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
local oldest = now_ms - tonumber(ARGV[3])
while true do
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][2]) >= oldest then
    break
  end
  redis.call('XDEL', KEYS[2], head[1][1])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local message = framed(offset, epoch)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 't', now_ms, 'f', message)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], offset .. ':' .. epoch, 'PX', ARGV[6])
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
    """Implements ``History``; Redis failures are raised as ``BusUnavailable``. ``user_bytes``:
    what one user's messages may cost at once (0: no limit)."""

    def __init__(self, redis: Redis, *, prefix: str = "hist:", user_bytes: int = 0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._user_bytes = user_bytes
        self._read = redis.register_script(_READ)

    def _key(self, tag: str, name: str) -> str:
        return f"{self._prefix}{{{tag}}}:{name}"

    def _keys(self, channel: str) -> list[str]:
        return [self._key(channel, "meta"), self._key(channel, "log")]

    async def publish(
        self,
        channel: str,
        topic: str,
        frame: str,
        policy: HistoryPolicy,
        *,
        owner: str | None = None,
    ) -> str:
        """Raises ``BusOutcomeUnknown`` when every try timed out after reaching Redis."""
        publish_id = secrets.token_hex(8)
        ttl_ms = max(1, int(policy.ttl * 1000))
        if owner is not None and self._user_bytes:
            await self._charge(owner, publish_id, message_cost(frame), ttl_ms)
        with unavailable_as_bus_error():
            framed = await _PUBLISH(
                self._redis,
                [*self._keys(channel), self._key(channel, f"pub:{publish_id}")],
                [frame, policy.size, ttl_ms, topic, new_epoch(), RESULT_TTL_MS],
                idempotent=True,
            )
        return _text(framed)

    async def _charge(self, owner: str, publish_id: str, cost: int, ttl_ms: int) -> None:
        tag = f"u:{owner}"
        try:
            with unavailable_as_bus_error():
                charged = await _CHARGE(
                    self._redis,
                    [self._key(tag, "charges"), self._key(tag, "bytes")],
                    [f"{publish_id}:{cost}", cost, ttl_ms, self._user_bytes],
                    idempotent=True,
                )
        except BusOutcomeUnknown as exc:
            # Only the charge may have happened: the message itself went nowhere.
            raise BusUnavailable(f"Redis did not confirm the charge: {exc}") from exc
        if not charged:
            raise HistoryFull(USER_FULL)

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
        from_empty = MARKS.continues(since, now, policy.ttl)
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
