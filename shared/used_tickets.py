"""Which tickets were redeemed: each ticket's ``jti`` is burnt on first use in a store every ws
replica shares (Redis when configured, this process otherwise)."""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.bus_errors import BusUnavailable

__all__ = ["LocalUsedTickets", "RedisUsedTickets", "UsedTickets", "open_used_tickets"]

PREFIX = "gateway:ticket"


class UsedTickets(Protocol):
    async def burn(self, jti: str, until: float) -> bool:
        """Mark ``jti`` used until ``until`` (epoch seconds); ``True`` only the first time.
        ``until`` must be the last moment the verifier accepts the ticket (its ``exp`` plus the
        leeway), or a replay after the record is gone works again. Raises ``BusUnavailable``
        when the shared store cannot be reached (tickets then fail)."""
        ...

    async def close(self) -> None: ...


class LocalUsedTickets:
    """One process's memory: enough for a single ws replica."""

    def __init__(self) -> None:
        self._used: dict[str, float] = {}

    async def burn(self, jti: str, until: float) -> bool:
        now = time.time()
        self._used = {key: exp for key, exp in self._used.items() if exp > now}
        if jti in self._used:
            return False
        self._used[jti] = until
        return True

    async def close(self) -> None:
        self._used.clear()


class RedisUsedTickets:
    """``SET NX`` with an expiry: exactly one replica wins each ticket."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self._redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )

    async def burn(self, jti: str, until: float) -> bool:
        ttl = max(1, int(until - time.time()) + 1)
        try:
            return bool(await self._redis.set(f"{PREFIX}:{jti}", "1", nx=True, ex=ttl))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"ticket store unreachable: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


def open_used_tickets(redis_url: str) -> UsedTickets:
    return RedisUsedTickets(redis_url) if redis_url else LocalUsedTickets()
