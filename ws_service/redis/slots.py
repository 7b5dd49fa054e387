"""The per-user connection cap in Redis, shared by every replica and worker.

One sorted set per user, ``<prefix>{<user>}`` (the hash tag keeps it on one Cluster slot), of slot
ids scored by the time they lapse, in Redis's own clock so that replicas' clocks need not agree.
A Lua script drops the lapsed slots, counts the rest and adds one in a single step, so replicas
admitting the same user at once can never pass the cap together. Slots live two thirds of the TTL
and their replica refreshes them every third, as presence entries do: a dead replica's sockets
stop counting within the TTL.

Acquisitions and releases are batched (``shared.batch``): the sockets admitted while another batch
is out share one pipeline of script calls, one per user key (so on a Cluster each runs on its
key's own slot, and the pipeline is split by node).
"""

from __future__ import annotations

from collections.abc import Callable

from shared.batch import Batcher
from shared.redis.connect import RedisClient
from ws_service.domain.user_slots import Held
from ws_service.redis.client import NOW_MS, Call, run_pipelined, unavailable_as_bus_error

__all__ = ["RedisUserSlots"]

_NOW = NOW_MS + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"

# ARGV: slot, limit, lifetime (ms)
_ACQUIRE = (
    _NOW
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# ARGV: lifetime (ms), 'extend' (only the slots still there) or 'restore' (all), slot... Returns
# how many slots were not there to extend.
_HOLD = (
    _NOW
    + """
local gone = 0
for i = 3, #ARGV do
  if ARGV[2] == 'extend' then
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
      redis.call('ZADD', KEYS[1], 'XX', now + ARGV[1], ARGV[i])
    else
      gone = gone + 1
    end
  else
    redis.call('ZADD', KEYS[1], now + ARGV[1], ARGV[i])
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return gone
"""
)


class RedisUserSlots:
    """Implements ``UserSlots``; Redis failures are raised as ``BusUnavailable``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        ttl: float = 15.0,
        prefix: str = "ws:conns:",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``on_batch`` hears how many acquisitions each round trip carried."""
        self._redis = redis
        self._lifetime = int(ttl * 2000 / 3)
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._hold = redis.register_script(_HOLD)
        self._acquires: Batcher[tuple[str, str, int], bool] = Batcher(
            self._acquire_all, on_batch=on_batch
        )
        self._releases: Batcher[tuple[str, str], object] = Batcher(self._release_all)

    def _key(self, user: str) -> str:
        return f"{self._prefix}{{{user}}}"

    async def acquire(self, user: str, slot: str, limit: int) -> bool:
        [taken] = await self._acquires.run([(user, slot, limit)])
        return taken

    async def release(self, user: str, slot: str) -> None:
        await self._releases.run([(user, slot)])

    async def close(self) -> None:
        """Cancel the batches still out (the client is closed after this)."""
        await self._acquires.close()
        await self._releases.close()

    async def _acquire_all(self, requests: list[tuple[str, str, int]]) -> list[bool]:
        calls: list[Call] = [
            ([self._key(user)], [slot, limit, self._lifetime]) for user, slot, limit in requests
        ]
        with unavailable_as_bus_error():
            return [bool(taken) for taken in await run_pipelined(self._redis, self._acquire, calls)]

    async def _release_all(self, requests: list[tuple[str, str]]) -> list[object]:
        with unavailable_as_bus_error():
            async with self._redis.pipeline(transaction=False) as pipe:
                for user, slot in requests:
                    pipe.zrem(self._key(user), slot)
                result: list[object] = await pipe.execute()
        return result

    async def refresh(self, held: Held) -> list[str]:
        return await self._hold_all(held, "extend")

    async def restore(self, held: Held) -> None:
        await self._hold_all(held, "restore")

    async def _hold_all(self, held: Held, mode: str) -> list[str]:
        """One script call per user (each user's key may live on another Cluster node), all in
        one pipeline; returns the users some of whose slots were not there (``extend``)."""
        users = [(user, list(slots)) for user, slots in held]
        calls: list[Call] = [
            ([self._key(user)], [self._lifetime, mode, *slots]) for user, slots in users
        ]
        with unavailable_as_bus_error():
            gone = await run_pipelined(self._redis, self._hold, calls)
        return [user for (user, _), missing in zip(users, gone, strict=True) if int(missing or 0)]
