"""The registry of live ws replicas in Redis, for the server API's scatter-gather.

One sorted set, ``ws:replicas``, of replica ids scored by the time their registration lapses, in
Redis's own clock. A replica registers at start and on every presence refresh (every third of
``WS_PRESENCE_TTL``) for two thirds of it, as presence entries and connection slots do: a replica
that died stops being waited for within the TTL, and until then an API call waits for it only up to
its deadline (and answers ``complete: false``).
"""

from __future__ import annotations

from shared.redis.connect import RedisClient
from ws_service.redis.client import NOW_MS, unavailable_as_bus_error

__all__ = ["RedisReplicas"]

_NOW = NOW_MS + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"

# ARGV: replica, lifetime (ms)
_JOIN = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
)

_LIVE = _NOW + "return redis.call('ZRANGE', KEYS[1], 0, -1)"


class RedisReplicas:
    """Implements ``Replicas``; Redis failures are raised as ``BusUnavailable``."""

    def __init__(self, redis: RedisClient, *, ttl: float = 15.0, key: str = "ws:replicas") -> None:
        self._redis = redis
        self._key = key
        self._lifetime = int(ttl * 2000 / 3)
        self._join = redis.register_script(_JOIN)
        self._live = redis.register_script(_LIVE)

    async def join(self, replica: str) -> None:
        with unavailable_as_bus_error():
            await self._join(keys=[self._key], args=[replica, self._lifetime])

    async def leave(self, replica: str) -> None:
        with unavailable_as_bus_error():
            await self._redis.zrem(self._key, replica)

    async def live(self) -> frozenset[str]:
        with unavailable_as_bus_error():
            found = await self._live(keys=[self._key])
        return frozenset(str(replica) for replica in found)
