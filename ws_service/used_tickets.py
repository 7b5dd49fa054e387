"""Which tickets were redeemed: each ticket's ``jti`` is burnt on first use in a store every ws
replica shares (Redis when configured, this process otherwise)."""

from __future__ import annotations

import heapq
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from redis.exceptions import RedisError

from shared.bus import BusUnavailable
from shared.redis.connect import open_client

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

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._used: set[str] = set()
        # (until, jti), soonest first: a burn pops what has expired instead of scanning every
        # live ticket, a cost an attacker minting tickets would control.
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._used)

    async def burn(self, jti: str, until: float) -> bool:
        now = self._clock()
        while self._expiries and self._expiries[0][0] < now:
            self._used.discard(heapq.heappop(self._expiries)[1])
        if jti in self._used:
            return False
        self._used.add(jti)
        heapq.heappush(self._expiries, (until, jti))
        return True

    async def close(self) -> None:
        self._used.clear()
        self._expiries.clear()


class RedisUsedTickets:
    """``SET NX GET`` with an expiry: exactly one replica wins each ticket.

    Each burn writes a value of its own: redis-py re-sends the command after a timeout, and a
    retry whose first attempt had won reads back its own value, so the legitimate use is not
    mistaken for a replay (with a constant value it was answered "already used")."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        self._redis = open_client(url, timeout=timeout)

    async def burn(self, jti: str, until: float) -> bool:
        ttl = max(1, int(until - time.time()) + 1)
        mine = secrets.token_hex(8)
        try:
            before = await self._redis.set(f"{PREFIX}:{jti}", mine, nx=True, get=True, ex=ttl)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"ticket store unreachable: {exc}") from exc
        return before is None or before == mine

    async def close(self) -> None:
        await self._redis.aclose()


def open_used_tickets(redis_url: str) -> UsedTickets:
    return RedisUsedTickets(redis_url) if redis_url else LocalUsedTickets()
