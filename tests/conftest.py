"""Fixtures every suite shares: real PostgreSQL and Redis, isolated per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.services import REDIS_URL, find_postgres, redis_reachable


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh schema, dropped after the test."""
    import asyncpg

    base = await find_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{base}?search_path={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture
def redis_url() -> str:
    redis_reachable()
    return REDIS_URL
