"""Fixtures every suite shares: real PostgreSQL and Redis, isolated per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.services import REDIS_URL, postgres_schema, redis_reachable


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh schema, dropped after the test."""
    async with postgres_schema() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    redis_reachable()
    return REDIS_URL
