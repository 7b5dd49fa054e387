"""Writes to Redis that must not be applied twice, and that say whether they may have been.

redis-py retries a command after a timeout or a broken connection (its ``Retry`` covers both by
default, and ``retry_on_error`` only adds to that list), so a write whose reply was lost runs a
second time: a message published twice. Here a write runs on one pooled connection at a time and
its outcome is tracked: a failure before the command left is :class:`BusUnavailable` (nothing
happened, retrying is always safe); a failure after it is :class:`BusOutcomeUnknown`. Only a write
that is idempotent (a script that recognises its own retry) is sent again after that.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from shared.bus import BusOutcomeUnknown, BusUnavailable

__all__ = ["WriteScript", "write"]

_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
_BACKOFF = 0.02
"""Seconds before the first retry, doubling: a stale connection or a brief stall, not an outage."""


async def write(redis: Redis, *command: EncodableT, idempotent: bool, attempts: int = 3) -> Any:
    """Run ``command`` and return Redis's reply; an error reply is raised as redis-py raises it.

    Up to ``attempts`` tries while the command could not be sent; after it was sent, more only
    when ``idempotent``. Raises :class:`BusOutcomeUnknown` when Redis may have applied it, else
    :class:`BusUnavailable`."""
    pool = redis.connection_pool
    sent = False
    error: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(_BACKOFF * 2 ** (attempt - 1))
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # unannotated
        except _DOWN as exc:
            error = exc
            continue
        try:
            sent = True
            await conn.send_command(*command)
            return await conn.read_response()
        except _DOWN as exc:
            error = exc
            await conn.disconnect()
            if not idempotent:
                break
        finally:
            await pool.release(conn)
    if sent:
        raise BusOutcomeUnknown(f"Redis did not confirm the write: {error}") from error
    raise BusUnavailable(f"Redis is unreachable: {error}") from error


class WriteScript:
    """A Lua script run through :func:`write`: EVALSHA, then EVAL if Redis lost its script cache
    (a ``NOSCRIPT`` reply means nothing ran)."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self,
        redis: Redis,
        keys: Sequence[EncodableT],
        args: Sequence[EncodableT],
        *,
        idempotent: bool,
    ) -> Any:
        try:
            return await write(
                redis, "EVALSHA", self._sha, len(keys), *keys, *args, idempotent=idempotent
            )
        except NoScriptError:
            return await write(
                redis, "EVAL", self._source, len(keys), *keys, *args, idempotent=idempotent
            )
