"""The Redis client of the history and presence backends, and how their failures are reported."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from shared.bus import BusUnavailable

__all__ = ["open_redis", "unavailable_as_bus_error"]


def open_redis(
    url: str, *, timeout: float = 2.0, max_connections: int = 64, queue_timeout: float = 10.0
) -> Redis:
    """A bounded pool that makes callers queue for a connection (for up to ``queue_timeout``)
    rather than fail: thousands of clients reconnecting at once each read their history.

    redis-py retries once after a broken connection or a timeout (its ``Retry`` covers both
    whatever ``retry_on_error`` says), which suits the reads. A history publish must not run
    twice, so it does not rely on this: it goes through ``shared.redis.write``, and its script
    recognises its own retry."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=queue_timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
        retry_on_error=[RedisConnectionError],
    )
    return Redis.from_pool(pool)


@contextlib.contextmanager
def unavailable_as_bus_error() -> Iterator[None]:
    """Redis failures become ``BusUnavailable``, the one error the domain knows for them."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BusUnavailable(f"Redis is unreachable: {exc}") from exc
