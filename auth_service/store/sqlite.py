"""SQLite backend: the zero-set-up default.

One connection per process in WAL mode; a lock serializes its users, ``BEGIN IMMEDIATE`` takes the
write lock up front, and SQLite's own locking (with a busy timeout) keeps several processes on one
file consistent, so no row locks are needed.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from auth_service.domain.errors import StoreUnavailable
from auth_service.store.migrations import MIGRATIONS, render
from auth_service.store.sql import Row, SqlStore

__all__ = ["SqliteDatabase", "open_sqlite"]

_DRIVER_ERRORS = (sqlite3.Error, ValueError, OSError)


@functools.lru_cache(maxsize=256)
def _render(sql: str) -> str:
    """``$n`` (PostgreSQL) to ``?n``: both are numbered, so a parameter may appear twice."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


class _Connection:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._conn.execute(_render(sql), args) as cur:
            return cur.rowcount

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(_render(sql), args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(_render(sql), args) as cur:
            return [dict(row) for row in await cur.fetchall()]

    async def insert(self, sql: str, *args: Any) -> bool:
        try:
            await self.execute(sql, *args)
        except sqlite3.IntegrityError:
            return False
        return True


class SqliteDatabase:
    lock_rows = ""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = _Connection(conn)
        self._raw = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> SqliteDatabase:
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(str(path), isolation_level=None)
            conn.row_factory = sqlite3.Row
            for pragma in (
                "journal_mode=WAL",
                "busy_timeout=5000",
                "foreign_keys=ON",
                "synchronous=NORMAL",
            ):
                await conn.execute(f"PRAGMA {pragma}")
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cannot open SQLite database {path}: {exc}") from exc
        db = cls(conn)
        await db._migrate()
        return db

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        """Statements run in autocommit mode, one at a time."""
        try:
            async with self._lock:
                yield self._conn
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Connection]:
        try:
            async with self._lock:
                await self._raw.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    await self._raw.execute("ROLLBACK")
                    raise
                await self._raw.execute("COMMIT")
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def close(self) -> None:
        await self._raw.close()

    async def _migrate(self) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            rows = await conn.fetch("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            for version, sql in MIGRATIONS:
                if version <= rows[0]["v"]:
                    continue
                for stmt in render(sql, real="REAL", blob="BLOB", serial="INTEGER"):
                    await conn.execute(stmt)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time()
                )


async def open_sqlite(path: str | Path) -> SqlStore:
    return SqlStore(await SqliteDatabase.open(path))
