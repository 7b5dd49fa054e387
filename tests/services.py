"""Find the machine's PostgreSQL and Redis; skip without them, but fail under CI=true."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

PG_CANDIDATES = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(what: str, why: str) -> None:
    """Skip, or fail when CI promised the service would be there."""
    message = f"{what} is not reachable ({why})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


async def find_postgres() -> str:
    import asyncpg

    configured = os.environ.get("TEST_POSTGRES_URL")
    errors = []
    for dsn in (configured,) if configured else PG_CANDIDATES:
        try:
            conn = await asyncpg.connect(dsn, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{dsn}: {exc}")
            continue
        await conn.close()
        return dsn
    unavailable("PostgreSQL", "; ".join(errors))
    raise AssertionError("unreachable")


def redis_reachable(url: str = REDIS_URL) -> None:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 2):
            pass
    except OSError as exc:
        unavailable("Redis", f"{url}: {exc}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def create_schema() -> tuple[str, str]:
    """A fresh schema on the machine's PostgreSQL: (DSN with it as search_path, schema name)."""
    import asyncpg

    base = await find_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return f"{base}?search_path={schema}", schema


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(await find_postgres())
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh schema, dropped on exit."""
    url, schema = await create_schema()
    try:
        yield url
    finally:
        await drop_schema(schema)
