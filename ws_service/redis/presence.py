"""Presence in Redis, shared by every replica.

Per channel: ``presence:{<ch>}:conns`` (connection -> encoded user), ``presence:{<ch>}:exp``
(connection -> expiry in ms) and ``presence:{<ch>}:users`` (user -> connection count). Lua scripts
keep the three in step and SPUBLISH ``join``/``leave`` on ``pres:{<ch>}`` exactly when a user's
count moves between zero and one, so two replicas adding the same user's tabs at once still
announce one join. The keys and the topic share the channel's hash tag: on a Cluster every script
runs on the one shard that owns the channel. Entries of a dead replica
expire: every read and every refresh sweeps them out, announcing their leaves.

A channel where no live replica has an entry is read and refreshed by no one: the dead replica's
entries would lapse unswept and the keys expire a minute later without a ``leave`` (so without the
``presence_leave`` webhook). So every channel is also indexed in ``presence:lapsing`` (a sorted set
of its own, outside the channels' hash tags), scored by when its newest entry lapses, and every
replica's periodic refresh sweeps the channels whose entries have all lapsed, whoever held them,
and forgets those it finds empty.

Expiries, and the index's scores, are on Redis's clock (``TIME``), which every replica shares, as
the per-user slots' are.
An entry lives two thirds of the TTL and its replica refreshes it every third (one refresh may be
late by up to a third). A dead replica's entries have expired two thirds of the TTL after its death
at the latest, and a survivor's next refresh, at most a third later, sweeps them: its users leave
within the TTL. Entries living the whole TTL would leave up to four thirds of it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError
from redis.typing import KeyT

from shared.redis.connect import RedisClient
from ws_service.domain.presence import Member, Transition, members_of, presence_topic
from ws_service.redis.client import NOW_MS, Call, run_pipelined, unavailable_as_bus_error

__all__ = ["RedisPresence"]

# Shared by every script: forget one connection, announce the leave if it was the user's last.
# Every script returns the transitions it made (kind, user json, ...), for this replica to report.
_DROP = (
    NOW_MS
    + """
local changes = {}
local function drop(conn, topic, channel)
  local info = redis.call('HGET', KEYS[1], conn)
  if not info then return end
  redis.call('HDEL', KEYS[1], conn)
  redis.call('ZREM', KEYS[2], conn)
  local uid = cjson.decode(info)['id']
  local left = redis.call('HINCRBY', KEYS[3], uid, -1)
  if left <= 0 then
    redis.call('HDEL', KEYS[3], uid)
    redis.call('SPUBLISH', topic,
      '{"type":"leave","channel":"' .. channel .. '","user":' .. info .. '}')
    table.insert(changes, 'leave')
    table.insert(changes, info)
  end
end
local function sweep(now, topic, channel)
  for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
    drop(conn, topic, channel)
  end
end
"""
)

# ARGV: conn, user json, user id, lifetime (ms), topic, channel, key ttl (s)
_ADD = (
    _DROP
    + """
sweep(now, ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[2], now + ARGV[4], ARGV[1])
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[3], ARGV[3], 1) == 1 then
    redis.call('SPUBLISH', ARGV[5],
      '{"type":"join","channel":"' .. ARGV[6] .. '","user":' .. ARGV[2] .. '}')
    table.insert(changes, 'join')
    table.insert(changes, ARGV[2])
  end
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
return changes
"""
)

# ARGV: conn, topic, channel
_REMOVE = _DROP + "drop(ARGV[1], ARGV[2], ARGV[3])\nreturn changes"

# ARGV: topic, channel
_MEMBERS = _DROP + "sweep(now, ARGV[1], ARGV[2])\nreturn {redis.call('HVALS', KEYS[1]), changes}"

# KEYS: the index. ARGV: lifetime (ms), channel... Scores each channel by when an entry added or
# refreshed now lapses, on Redis's clock, never lowering a score (another entry lapses later).
_INDEX = (
    NOW_MS
    + """
local at = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'GT', at, ARGV[i]) end
return 0
"""
)

# KEYS: the index. ARGV: how many at most. Returns {the channels lapsed by now, now (ms)}.
_LAPSED = (
    NOW_MS + "return {redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1]), now}"
)

# KEYS: the index. ARGV: channel, now (ms, Redis's clock from _LAPSED). A channel swept empty
# leaves the index, unless an entry was added or refreshed since (its score is then ahead of now).
_UNINDEX = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""

SWEEP_BATCH = 256
"""Lapsed channels one refresh sweeps at most (the next refresh takes the rest)."""

# ARGV: lifetime (ms), topic, channel, key ttl (s), conn... Returns {the conns that are gone (swept
# as expired: their replica stalled past their lifetime), transitions}.
_REFRESH = (
    _DROP
    + """
sweep(now, ARGV[2], ARGV[3])
local gone = {}
for i = 5, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 'XX', now + ARGV[1], ARGV[i])
  else
    table.insert(gone, ARGV[i])
  end
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return {gone, changes}
"""
)


class RedisPresence:
    """Implements ``Presence``; Redis failures are raised as ``BusUnavailable``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        ttl: float = 15.0,
        prefix: str = "presence:",
        on_transition: Transition | None = None,
    ) -> None:
        self._redis = redis
        self._on_transition = on_transition
        self.ttl = ttl
        self._prefix = prefix
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._members = redis.register_script(_MEMBERS)
        self._refresh = redis.register_script(_REFRESH)
        self._unindex = redis.register_script(_UNINDEX)
        self._index_script = redis.register_script(_INDEX)
        self._lapsed = redis.register_script(_LAPSED)
        self._index = f"{prefix}lapsing"

    def _keys(self, channel: str) -> list[KeyT]:
        return [f"{self._prefix}{{{channel}}}:{kind}" for kind in ("conns", "exp", "users")]

    def _key_ttl(self) -> int:
        return max(60, int(self.ttl * 4))

    def _lifetime(self) -> int:
        return int(self.ttl * 2000 / 3)

    def _add_args(self, conn_id: str, member: Member, channel: str) -> list[Any]:
        return [
            conn_id,
            member.as_json(),
            member.id,
            self._lifetime(),
            presence_topic(channel),
            channel,
            self._key_ttl(),
        ]

    async def add(self, channel: str, conn_id: str, member: Member) -> None:
        with unavailable_as_bus_error():
            changes = await self._add(
                keys=self._keys(channel), args=self._add_args(conn_id, member, channel)
            )
        self._report(channel, changes)
        await self._index_channels([channel])

    async def add_all(self, entries: Sequence[tuple[str, str, Member]]) -> None:
        """The entries in one pipeline (one round trip per node), then indexed at once."""
        if not entries:
            return
        calls: list[Call] = [
            (self._keys(channel), self._add_args(conn_id, member, channel))
            for channel, conn_id, member in entries
        ]
        with unavailable_as_bus_error():
            results = await run_pipelined(self._redis, self._add, calls)
        for (channel, _, _), changes in zip(entries, results, strict=True):
            self._report(channel, changes)
        await self._index_channels([channel for channel, _, _ in entries])

    async def _index_channels(self, channels: list[str]) -> None:
        # Indexed for the sweep of a dead replica's channels; missed here, its replica's next
        # refresh indexes it (the entry is in Redis and its join was reported: raising now would
        # say otherwise). Scored on Redis's clock: on this replica's, one a minute ahead indexed
        # its channels a minute late (never lowered), and once it died no survivor swept them
        # until then, its users present far past WS_PRESENCE_TTL (outside probe K).
        with contextlib.suppress(RedisError, OSError):
            await self._index_script(keys=[self._index], args=[self._lifetime(), *channels])

    async def remove(self, channel: str, conn_id: str, member: Member) -> None:
        with unavailable_as_bus_error():
            changes = await self._remove(
                keys=self._keys(channel), args=[conn_id, presence_topic(channel), channel]
            )
        self._report(channel, changes)

    async def members(self, channel: str) -> list[tuple[Member, int]]:
        with unavailable_as_bus_error():
            values, changes = await self._members(
                keys=self._keys(channel), args=[presence_topic(channel), channel]
            )
        self._report(channel, changes)
        users: dict[str, tuple[str | None, int]] = {}
        for value in values:
            user = json.loads(value)
            _, count = users.get(user["id"], (None, 0))
            users[user["id"]] = (user["username"], count + 1)
        return members_of(users)

    async def refresh(self, entries: Iterable[tuple[str, Iterable[str]]]) -> list[tuple[str, str]]:
        """Extend this replica's live connections (channel, connection ids) by one lifetime,
        in one pipeline; then sweep the channels whose entries have all lapsed (a dead replica's
        that no live replica reads or refreshes), announcing their leaves. Returns the entries
        Redis no longer had (see ``Presence.refresh``)."""
        entries = [(channel, list(conns)) for channel, conns in entries]
        calls: list[Call] = [
            (
                self._keys(channel),
                [self._lifetime(), presence_topic(channel), channel, self._key_ttl(), *conns],
            )
            for channel, conns in entries
        ]
        with unavailable_as_bus_error():
            results = await run_pipelined(self._redis, self._refresh, calls)
        gone: list[tuple[str, str]] = []
        for (_, args), (missing, changes) in zip(calls, results, strict=True):
            channel = str(args[2])
            gone.extend((channel, _text(conn)) for conn in missing)
            self._report(channel, changes)
        if entries:
            await self._index_channels([channel for channel, _ in entries])
        await self._sweep_lapsed()
        return gone

    async def _sweep_lapsed(self) -> None:
        with unavailable_as_bus_error():
            lapsed, now = await self._lapsed(keys=[self._index], args=[SWEEP_BATCH])
            channels = [_text(c) for c in lapsed]
            if not channels:
                return
            calls: list[Call] = [
                (self._keys(channel), [presence_topic(channel), channel]) for channel in channels
            ]
            results = await run_pipelined(self._redis, self._members, calls)
            empty: list[Call] = []
            for channel, (values, changes) in zip(channels, results, strict=True):
                self._report(channel, changes)
                if not values:
                    empty.append(([self._index], [channel, now]))
            if empty:
                await run_pipelined(self._redis, self._unindex, empty)

    def _report(self, channel: str, changes: list[str]) -> None:
        """The transitions a script made, each reported by this replica alone."""
        if self._on_transition is None:
            return
        for kind, info in zip(changes[::2], changes[1::2], strict=True):
            user = json.loads(info)
            self._on_transition(kind, channel, Member(user["id"], user["username"]))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
