"""Fixtures for the Redis bus: started buses that are always closed, and a private redis-server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
from redis.asyncio import Redis

from shared.redis.bus import RedisBus
from tests.integration.bus.support import BusMaker
from tests.support.delaying_proxy import DelayingProxy


@pytest.fixture
def topic() -> str:
    """A topic no other test (or concurrent run on the shared Redis) uses."""
    return f"test.bus.{uuid.uuid4().hex}"


@pytest.fixture
async def two_clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis, str]]:
    """Two connections to the shared Redis (two replicas) and a key prefix no other test uses;
    every key under the prefix is deleted afterwards."""
    one, two = Redis.from_url(redis_url), Redis.from_url(redis_url)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield one, two, prefix
    keys = [key async for key in one.scan_iter(f"{prefix}*")]
    if keys:
        await one.delete(*keys)
    await one.aclose()
    await two.aclose()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[DelayingProxy]:
    """A proxy to the shared Redis that can hold its replies back past a client's timeout."""
    started = DelayingProxy(urlparse(redis_url).port or 6379)
    await started.start()
    yield started
    await started.close()


@pytest.fixture
async def make_bus() -> AsyncIterator[BusMaker]:
    """Start RedisBus instances (one per simulated replica) with a quick backoff; close them all."""
    buses: list[RedisBus] = []

    async def make(url: str, **options: float) -> RedisBus:
        bus = RedisBus(url, **{"backoff_base": 0.05, "backoff_cap": 0.5, **options})
        buses.append(bus)
        await bus.start()
        return bus

    yield make
    for bus in buses:
        await bus.close()
