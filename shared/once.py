"""Things that work once: a ticket's or a DPoP proof's ``jti`` is burnt on first use, in a store
every replica shares (Redis when configured: ``shared.redis.once``; this process otherwise).

The port lives here, beside its in-process implementation, so that a domain may use it without
importing Redis."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["LocalUsedOnce", "UsedOnce"]


class UsedOnce(Protocol):
    async def burn(self, key: str, until: float) -> bool:
        """Mark ``key`` used until ``until`` (epoch seconds); ``True`` only the first time.
        ``until`` must be the last moment a verifier accepts what ``key`` names (a ticket's
        ``exp`` plus the leeway, a proof's ``iat`` plus its window), or a replay after the record
        is gone works again. Raises ``shared.bus.BusUnavailable`` when the shared store cannot be
        reached (what needs it then fails)."""
        ...

    async def close(self) -> None: ...


class LocalUsedOnce:
    """One process's memory: enough for a single replica."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._used: set[str] = set()
        # (until, key), soonest first: a burn pops what has expired instead of scanning every
        # live record, a cost an attacker minting tickets or proofs would control.
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._used)

    async def burn(self, key: str, until: float) -> bool:
        now = self._clock()
        while self._expiries and self._expiries[0][0] < now:
            self._used.discard(heapq.heappop(self._expiries)[1])
        if key in self._used:
            return False
        self._used.add(key)
        heapq.heappush(self._expiries, (until, key))
        return True

    async def close(self) -> None:
        self._used.clear()
        self._expiries.clear()
