"""Channel history in Redis, shared by every replica.

Per channel a hash ``hist:{<channel>}:meta`` holds the epoch, the last offset and the last offset
delivered, and a stream ``hist:{<channel>}:log`` the messages (stream id ``<offset>-0``, capped at
the policy's size). One Lua script increments the offset, appends the message and SPUBLISHes it on
``chan:{<channel>}``, so subscribers on every replica receive messages in offset order with no gap.
Only a publish creates these keys, and they live ``ttl`` after the channel's last publish; a read
writes nothing. A flushed or restarted Redis loses the hash, and the next publish starts a new
epoch. Times are Redis's own (``TIME``), so replicas' clocks do not matter.

Replication is asynchronous, so a master with a replica (Sentinel, Cluster) delivers a message only
once a replica has it: the script keeps it without publishing, the publisher WAITs for the replica,
then a second script delivers every kept message up to it, in offset order (whichever publisher
gets there first). A failover then never loses a message anyone received, so the promoted replica
goes on from the last delivered offset, and a recovery across it is exact. Reads see only what
was delivered. A master without a replica delivers at once, in the first script.

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

from shared.bus import BusOutcomeUnknown, BusUnavailable
from shared.redis.connect import RedisClient
from shared.redis.write import REPLICAS_LUA, WriteScript
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

# Shared by the publish and the flush: deliver, in offset order, every message of this epoch up
# to ``up_to`` that was not delivered yet. KEYS: meta, log.
_FLUSH_LUA = """
local function flush(up_to, epoch, topic)
  local meta = redis.call('HMGET', KEYS[1], 'epoch', 'delivered')
  local delivered = tonumber(meta[2] or '0')
  if meta[1] ~= epoch or up_to <= delivered then
    return
  end
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], (delivered + 1) .. '-0', up_to .. '-0')) do
    redis.call('SPUBLISH', topic, entry[2][4])
  end
  redis.call('HSET', KEYS[1], 'delivered', up_to)
end
"""

# KEYS: meta, log, this publish's result. ARGV: frame, size, ttl (ms), topic, new epoch, result
# ttl (ms). Returns {message, pending, offset, epoch}: pending is 1 when the master has a replica
# and the message is kept but not delivered yet (the caller WAITs for the replica, then flushes).
# A missing meta hash (a new channel, or a flushed or restarted Redis) starts a new epoch with an
# empty log. Expired messages at the head of the log are deleted, so that a channel kept alive by
# others holds nobody's messages past their ttl (and their charge).
_PUBLISH = WriteScript(
    _NOW_MS
    + REPLICAS_LUA
    + _FLUSH_LUA
    + """
local function framed(offset, epoch)
  return string.sub(ARGV[1], 1, -2) .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
end
local function done_with(message, offset, epoch)
  if replicas() > 0 then
    return {message, 1, offset, epoch}
  end
  flush(tonumber(offset), epoch, ARGV[4])
  return {message, 0, offset, epoch}
end
local done = redis.call('GET', KEYS[3])
if done then
  local offset, epoch = string.match(done, '^(%d+):(.+)$')
  return done_with(framed(offset, epoch), offset, epoch)
end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'delivered')
local epoch = meta[1]
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'delivered', 0)
elseif not meta[3] then
  redis.call('HSET', KEYS[1], 'delivered', meta[2] or 0)
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
return done_with(message, offset, epoch)
"""
)

# KEYS: meta, log. ARGV: epoch, offset, topic. Delivers what a publish kept until a replica had
# it; safe to run twice, or after a later publish delivered it already.
_DELIVER = WriteScript(_FLUSH_LUA + "flush(tonumber(ARGV[2]), ARGV[1], ARGV[3])")

# KEYS: meta, log. ARGV: first id ('' for the latest messages), how many, how many bytes of
# frames at most (0: any; at least one entry). Reads only what was delivered (a message kept but
# still waiting for a replica is not there yet), never more than asked, and returns no more
# bytes than asked. Writes nothing: a read of a channel without history leaves no trace.
_READ = (
    _NOW_MS
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'delivered')
if not meta[1] then
  return {false, false, now_ms, {}}
end
local last = meta[3] or meta[2]
local entries = {}
if tonumber(ARGV[2]) > 0 then
  if ARGV[1] == '' then
    entries = redis.call('XREVRANGE', KEYS[2], last .. '-0', '-', 'COUNT', ARGV[2])
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[1], last .. '-0', 'COUNT', ARGV[2])
  end
end
local budget = tonumber(ARGV[3]) or 0
if budget > 0 then
  local total, fitting = 0, {}
  for i, entry in ipairs(entries) do
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'f' then  -- the frame; not its timestamp, which the reply does not carry
        total = total + #fields[j + 1]
      end
    end
    if total > budget and i > 1 then
      break
    end
    fitting[i] = entry
  end
  entries = fitting
end
return {meta[1], last, now_ms, entries}
"""
)


class RedisHistory:
    """Implements ``History``; Redis failures are raised as ``BusUnavailable``. ``user_bytes``:
    what one user's messages may cost at once (0: no limit)."""

    def __init__(self, redis: RedisClient, *, prefix: str = "hist:", user_bytes: int = 0) -> None:
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
        keys = self._keys(channel)
        with unavailable_as_bus_error():
            framed, pending, offset, epoch = await _PUBLISH(
                self._redis,
                [*keys, self._key(channel, f"pub:{publish_id}")],
                [frame, policy.size, ttl_ms, topic, new_epoch(), RESULT_TTL_MS],
                idempotent=True,
                replicas=_pending,
            )
        if int(pending):
            try:
                with unavailable_as_bus_error():
                    await _DELIVER(self._redis, keys, [epoch, offset, topic], idempotent=True)
            except BusUnavailable as exc:
                # Kept but not delivered: the next publish on the channel delivers it. Delivering
                # it here as well could repeat it.
                raise BusOutcomeUnknown(f"the message waits for delivery: {exc}") from exc
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
        self,
        channel: str,
        since: Position | None,
        limit: int,
        policy: HistoryPolicy,
        max_bytes: int = 0,
    ) -> HistoryPage:
        """Reads at most ``limit`` entries (one to tell whether ``since`` can be continued)."""
        if since is None:
            start, count = "", limit
        else:
            start, count = f"{since.offset + 1}-0", max(limit, 1)
        with unavailable_as_bus_error():
            epoch, offset, now_ms, entries = await self._read(
                keys=self._keys(channel), args=[start, count, max_bytes]
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
        return page(kept, current, since, limit, from_empty=from_empty)  # cut to max_bytes already


def _pending(reply: Any) -> int:
    """How many replicas a kept message waits for before its delivery (0: delivered already)."""
    return int(reply[1])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
