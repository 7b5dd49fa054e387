"""PostgreSQL backend: what several auth replicas share.

Migrations run under an advisory lock so replicas starting together apply them once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from auth_service.domain.errors import StoreUnavailable
from auth_service.store.migrations import MIGRATIONS, Migration, apply_pending
from auth_service.store.sql import Row, SqlStore, Statement, unavailable

__all__ = ["PostgresDatabase", "open_postgres"]

_MIGRATION_LOCK = 0x61757468  # "auth"
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,  # a connection left mid-call: not an InterfaceError
    OSError,
    TimeoutError,
)
MIGRATION_TIMEOUT = 600.0
"""Seconds one migration statement may take (an index on a large table): the replicas starting
beside it wait on the migration lock as long."""


class _NoRowChanged(Exception):
    """Rolls back a :meth:`PostgresDatabase.execute_atomically` (or ``fetch_atomically``)
    transaction."""


class _Connection:
    def __init__(self, conn: asyncpg.Connection, timeout: float | None = None) -> None:
        self._conn = conn
        self._timeout = timeout  # None: the pool's command_timeout

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(sql, *args, timeout=self._timeout)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isascii() and count.isdigit() else 0

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, args, timeout=self._timeout)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(row) for row in await self._conn.fetch(sql, *args, timeout=self._timeout)]

    async def insert(self, sql: str, *args: Any) -> bool:
        try:
            await self._conn.execute(sql, *args, timeout=self._timeout)
        except asyncpg.UniqueViolationError:
            return False
        return True


async def _each_changes_a_row(conn: _Connection, statements: Sequence[Statement]) -> None:
    for sql, args in statements:
        if await conn.execute(sql, *args) == 0:
            raise _NoRowChanged


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces the pool's reset on release (``RESET ALL``, ``UNLISTEN *``, ``CLOSE ALL``,
    ``pg_advisory_unlock_all()``): a round trip per store call for session state this store never
    leaves (no ``SET``, ``LISTEN``, cursors or session advisory locks; migrations take a
    transaction's). The pool still rolls back a transaction left open."""


class PostgresDatabase:
    lock_rows = " FOR UPDATE"
    skip_locked_rows = " FOR UPDATE SKIP LOCKED"
    writable_ctes = True

    def __init__(self, pool: asyncpg.Pool, timeout: float = 5.0) -> None:
        self._pool = pool
        self._timeout = timeout

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        migrations: Sequence[Migration] = MIGRATIONS,
        call_timeout: float = 5.0,
    ) -> PostgresDatabase:
        """A pool whose every statement is bounded by ``call_timeout`` (asyncpg cancels it on the
        server past it), as is the wait for a free connection: a stalled database (a lock held,
        a network partition) then answers 503, not a request that hangs and holds a
        connection. Migrations are bounded by :data:`MIGRATION_TIMEOUT` instead."""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                reset=_keep_session,
                command_timeout=call_timeout,
                timeout=call_timeout,
            )
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        db = cls(pool, call_timeout)
        try:
            await db._migrate(migrations)
        except BaseException:
            await db.close()
            raise
        return db

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                yield _Connection(conn)
        except _DRIVER_ERRORS as exc:
            raise unavailable(exc) from exc

    @asynccontextmanager
    async def transaction(
        self, statement_timeout: float | None = None
    ) -> AsyncIterator[_Connection]:
        """``statement_timeout``: each statement's bound, if not the pool's (migrations)."""
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn, conn.transaction():
                yield _Connection(conn, statement_timeout)
        except _DRIVER_ERRORS as exc:
            raise unavailable(exc) from exc

    async def execute_atomically(self, statements: Sequence[Statement]) -> bool:
        """In a transaction even for one statement: a statement sent alone commits whenever the
        server runs it, also after its call timed out and was answered 503 (a server stalled,
        then resumed, runs what it had received; a cancel reaching it while it waited is
        ignored), so a refresh the client was told to retry had rotated its token, and the
        retry ended the session as a reuse. A transaction whose COMMIT was never sent rolls
        back."""
        try:
            async with self.transaction() as conn:
                await _each_changes_a_row(conn, statements)
        except _NoRowChanged:
            return False
        return True

    async def fetch_atomically(self, query: Statement, then: Sequence[Statement] = ()) -> list[Row]:
        """In a transaction even for a lone query (see :meth:`execute_atomically`)."""
        try:
            async with self.transaction() as conn:
                rows = await conn.fetch(query[0], *query[1])
                if not rows:
                    return []
                await _each_changes_a_row(conn, then)
        except _NoRowChanged:
            return []
        return rows

    async def close(self) -> None:
        await self._pool.close()

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        async with self.transaction(MIGRATION_TIMEOUT) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            await apply_pending(
                conn,
                migrations,
                {"real": "DOUBLE PRECISION", "blob": "BYTEA", "serial": "BIGSERIAL"},
                lambda version: ("INSERT INTO schema_migrations (version) VALUES ($1)", (version,)),
            )


async def open_postgres(dsn: str, call_timeout: float = 5.0) -> SqlStore:
    return SqlStore(await PostgresDatabase.open(dsn, call_timeout=call_timeout), call_timeout)
