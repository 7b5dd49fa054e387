"""WebSocket tickets: the contract between auth_service, which mints them from an access token, and
every ws replica, which redeems each one once.

A ticket is a JWT signed with the issuer's keys but of its own ``typ``, so the gateway never takes a
ticket for an access token nor an access token for a ticket. It lives at most ``TICKET_TTL``
seconds and never past the access token it came from, whose ``iat`` and ``exp`` it carries: the
socket it opens is bound to the same user, session and scope, expires with that token, and is
covered by the same revocations. Its ``jti`` is burnt on first use in a store every ws replica
shares (Redis when configured, this process otherwise).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.bus_errors import BusUnavailable

__all__ = [
    "TICKET_CLAIMS",
    "TICKET_TTL",
    "TICKET_TYP",
    "LocalUsedTickets",
    "RedisUsedTickets",
    "UsedTickets",
    "open_used_tickets",
    "ticket_claims",
]

TICKET_TYP = "ws-ticket+jwt"
TICKET_TTL = 30
TOKEN_IAT, TOKEN_EXP = "token_iat", "token_exp"
TICKET_CLAIMS = ["iss", "aud", "sub", "sid", "jti", "iat", "exp", TOKEN_IAT, TOKEN_EXP]
"""Every claim a ticket must carry (``scope`` and ``preferred_username`` are copied when present)."""

PREFIX = "gateway:ticket"


def ticket_claims(access: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The claims of a ticket minted at ``now`` from a verified access token's claims."""
    iat = int(now)
    claims = {
        "iss": access["iss"],
        "aud": access["aud"],
        "sub": access["sub"],
        "sid": access["sid"],
        "jti": uuid.uuid4().hex,
        "iat": iat,
        "exp": min(iat + TICKET_TTL, int(access["exp"])),
        TOKEN_IAT: int(access["iat"]),
        TOKEN_EXP: int(access["exp"]),
    }
    for optional in ("scope", "preferred_username"):
        if optional in access:
            claims[optional] = access[optional]
    return claims


class UsedTickets(Protocol):
    async def burn(self, jti: str, until: float) -> bool:
        """Mark ``jti`` used until ``until`` (epoch seconds); ``True`` only the first time.
        Raises ``BusUnavailable`` when the shared store cannot be reached (tickets then fail)."""
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
