"""Find the machine's PostgreSQL and Redis; skip without them, but fail under CI=true."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, and SIGKILL when it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nobody listens on, taken below the kernel's ephemeral range.

    A port the kernel hands out for bind(0) comes from the range it also gives outgoing
    connections: between this check and the service's bind, any client socket on the machine (a
    load generator's thousands, another test run) could take it, and the service then fails with
    'already in use'. Below that range only listeners compete."""
    low = _ephemeral_low()
    if low > 12_000:
        for _ in range(500):
            port = random.randrange(10_000, low)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


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
