"""``UsedOnce`` in Redis: ``SET NX`` with an expiry, so exactly one replica wins each key."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.bus import BusUnavailable
from shared.once import LocalUsedOnce, UsedOnce

__all__ = ["RedisUsedOnce", "open_used_once"]


class RedisUsedOnce:
    """Implements :class:`shared.once.UsedOnce`. A key is one Redis key: callers give it a
    prefix of their own and, where it groups, a hash tag."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self._redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )

    async def burn(self, key: str, until: float) -> bool:
        ttl = max(1, int(until - time.time()) + 1)
        try:
            return bool(await self._redis.set(key, "1", nx=True, ex=ttl))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"the used-once store is unreachable: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


def open_used_once(redis_url: str) -> UsedOnce:
    """Redis when configured, so every replica refuses a second use; else this process."""
    return RedisUsedOnce(redis_url) if redis_url else LocalUsedOnce()
