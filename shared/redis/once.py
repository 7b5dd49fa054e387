"""``UsedOnce`` in Redis: ``SET NX GET`` with an expiry, so exactly one replica wins each key.

Each burn writes a value of its own: redis-py re-sends a command after a timeout, and a retry
whose first attempt had won reads back its own value, so the rightful use is not mistaken for a
replay (with a constant value it was answered "already used")."""

from __future__ import annotations

import secrets
import time

from redis.exceptions import RedisError

from shared.bus import BusUnavailable
from shared.once import LocalUsedOnce, UsedOnce
from shared.redis.connect import open_client

__all__ = ["RedisUsedOnce", "open_used_once"]


class RedisUsedOnce:
    """Implements :class:`shared.once.UsedOnce`. A key is one Redis key: callers give it a
    prefix of their own and, where it groups, a hash tag."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self._redis = open_client(url, timeout=timeout)

    async def burn(self, key: str, until: float) -> bool:
        ttl = max(1, int(until - time.time()) + 1)
        mine = secrets.token_hex(8)
        try:
            before = await self._redis.set(key, mine, nx=True, get=True, ex=ttl)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"the used-once store is unreachable: {exc}") from exc
        return before is None or before == mine

    async def close(self) -> None:
        await self._redis.aclose()


def open_used_once(redis_url: str) -> UsedOnce:
    """Redis when configured, so every replica refuses a second use; else this process."""
    return RedisUsedOnce(redis_url) if redis_url else LocalUsedOnce()
