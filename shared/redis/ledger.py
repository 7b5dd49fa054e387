"""The revocation ledger in Redis: one key per revoked session or user, expiring with the last
token it covers (``until``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import RevocationEvent, SessionRevoked
from shared.bus import BusUnavailable

__all__ = ["PREFIX", "RedisRevocationLedger"]

PREFIX = "gateway:revoked"


class RedisRevocationLedger:
    """Implements :class:`shared.bus.RevocationLedger`."""

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        # One quick retry: after a Redis restart the pooled connection is stale, not Redis down.
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    async def close(self) -> None:
        await self._redis.aclose()

    async def record(self, event: RevocationEvent, now: float | None = None) -> None:
        """Remember a revocation until ``event.until``; raises :class:`BusUnavailable`."""
        ttl = max(1, int(event.until - (time.time() if now is None else now)) + 1)
        try:
            if isinstance(event, SessionRevoked):
                await self._redis.set(f"{PREFIX}:sid:{event.sid}", "1", ex=ttl)
            else:
                # A later logout-everywhere has a later cut-off and a later until: it supersedes.
                await self._redis.set(f"{PREFIX}:user:{event.sub}", event.issued_before, ex=ttl)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"revocation ledger unreachable: {exc}") from exc

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]:
        """For each token, whether the ledger says it is revoked (one round trip for all)."""
        if not tokens:
            return []
        keys: list[str] = []
        for token in tokens:
            keys += [f"{PREFIX}:sid:{token.sid}", f"{PREFIX}:user:{token.sub}"]
        try:
            values = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"revocation ledger unreachable: {exc}") from exc
        result = []
        for i, token in enumerate(tokens):
            session, cutoff = values[2 * i], values[2 * i + 1]
            result.append(session is not None or (cutoff is not None and token.iat < int(cutoff)))
        return result
