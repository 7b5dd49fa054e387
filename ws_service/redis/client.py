"""The Redis client of the history and presence backends, and how their failures are reported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError
from redis.typing import EncodableT, KeyT

from shared.bus import BusUnavailable
from shared.redis.connect import RedisClient, open_client

__all__ = ["NOW_MS", "Call", "open_redis", "run_pipelined", "unavailable_as_bus_error"]

NOW_MS = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""
"""Lua: ``now``, Redis's clock in milliseconds, which every replica shares (each one's own may
be seconds off): the scripts that expire entries and slots start with it."""

Call = tuple[list[KeyT], list[EncodableT]]
"""One script call of a pipelined batch: its keys and its arguments."""


def open_redis(
    url: str, *, timeout: float = 2.0, max_connections: int = 64, queue_timeout: float = 10.0
) -> RedisClient:
    """A bounded pool that makes callers queue for a connection (for up to ``queue_timeout``)
    rather than fail: thousands of clients reconnecting at once each read their history. Any
    ``REDIS_URL`` form (``shared.redis.connect``); on a Cluster the bound is per node.

    redis-py retries once after a broken connection or a timeout, which suits the reads. A
    history publish must not run twice, so it does not rely on this: it goes through
    ``shared.redis.write``, and its script recognises its own retry."""
    return open_client(
        url,
        timeout=timeout,
        retries=1,
        max_connections=max_connections,
        queue_timeout=queue_timeout,
    )


@contextlib.contextmanager
def unavailable_as_bus_error() -> Iterator[None]:
    """Redis failures become ``BusUnavailable``, the one error the domain knows for them."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BusUnavailable(f"Redis is unreachable: {exc}") from exc


async def run_pipelined(
    redis: RedisClient,
    script: AsyncScript,
    calls: Sequence[Call],
) -> list[Any]:
    """Run ``script`` once per ``(keys, args)`` in one pipeline (split by node on a Cluster): one
    round trip per node.

    The calls go out as ``EVALSHA``. redis-py's plain pipeline would first ask ``SCRIPT EXISTS``
    on every ``execute()`` (a second round trip per batch; its Cluster pipeline does not ask, 8.2).
    A server without the script (just started, or a master promoted by a failover, whose script
    cache starts empty) refuses every call with ``NOSCRIPT``; then the script is loaded (on every
    master) and the batch sent again: the scripts run here are idempotent, and a NOSCRIPT call
    ran nothing."""
    for attempt in range(2):
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                results: list[Any] = await pipe.execute()
            return results
        except NoScriptError:
            if attempt:
                raise
            await redis.script_load(script.script)
    raise AssertionError("unreachable")
