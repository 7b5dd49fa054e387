"""PostgreSQL backend: what several auth replicas share.

Migrations run under an advisory lock so replicas starting together apply them once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from auth_service.domain.errors import StoreUnavailable
from auth_service.store.migrations import MIGRATIONS, Migration, apply_pending
from auth_service.store.sql import Committed, Row, SqlStore, Statement, unavailable

__all__ = ["PostgresDatabase", "open_postgres"]

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x61757468  # "auth"
_STILL_IN_IT = (
    "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND pid <> pg_backend_pid() AND state IN "
    "('active', 'idle in transaction', 'idle in transaction (aborted)')"
)
"""Whether a backend is still in a transaction (the pool may hand that very backend back once it
has come out of it: then it is this query's, and out of it)."""
SETTLE_POLL = 0.05
"""Seconds between two looks at a backend whose COMMIT went unanswered."""
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

    @property
    def backend(self) -> int:
        """The server process serving this connection (``pg_stat_activity.pid``)."""
        pid: int = self._conn.get_server_pid()
        return pid

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

    async def execute_atomically(
        self, statements: Sequence[Statement], *, committed: Statement | None = None
    ) -> bool:
        """In a transaction even for one statement: a statement sent alone commits whenever the
        server runs it, also after its call timed out and was answered 503 (a server stalled,
        then resumed, runs what it had received; a cancel reaching it while it waited is
        ignored), so a refresh the client was told to retry had rotated its token, and the
        retry ended the session as a reuse. A transaction whose COMMIT was never sent rolls
        back; one whose COMMIT went unanswered is settled by ``committed`` (:meth:`_settle`)."""
        first, *then = statements
        check = None if committed is None else lambda _: committed
        try:
            await self._atomically(first, then, check)
        except _NoRowChanged:
            return False
        return True

    async def fetch_atomically(
        self,
        query: Statement,
        then: Sequence[Statement] = (),
        *,
        committed: Committed | None = None,
    ) -> list[Row]:
        """In a transaction even for a lone query (see :meth:`execute_atomically`)."""
        try:
            return await self._atomically(query, then, committed, fetch=True)
        except _NoRowChanged:
            return []

    async def _atomically(
        self,
        first: Statement,
        then: Sequence[Statement],
        committed: Committed | None,
        *,
        fetch: bool = False,
    ) -> list[Row]:
        """``first`` (its rows when ``fetch``; none is a rollback) then ``then``, each changing a
        row, in one transaction. A failure once the COMMIT was sent leaves its outcome unknown:
        PostgreSQL stalled with it and ran it when it resumed, so a batch answered 503 had
        rotated every token in it and each client's retry read as a reuse (an outside probe,
        3 stalls in 5). With ``committed`` (a query that returns rows once the transaction's
        work is there) that outcome is found out before anything is answered."""
        rows: list[Row] = []
        backend, committing = 0, False
        try:
            async with self.transaction() as conn:
                backend = conn.backend
                if fetch:
                    rows = await conn.fetch(first[0], *first[1])
                    if not rows:
                        raise _NoRowChanged
                else:
                    then = [first, *then]
                await _each_changes_a_row(conn, then)
                committing = True  # what fails from here may have committed
        except StoreUnavailable:
            if (
                committing
                and committed is not None
                and await self._settle(backend, committed(rows))
            ):
                return rows
            raise
        return rows

    async def _settle(self, backend: int, committed: Statement) -> bool:
        """Whether the transaction whose COMMIT went unanswered on ``backend`` committed: once
        that backend has left it (ended, or idle), by ``committed``'s rows. False when that is not
        known within the call timeout (the 503 stands: a stall longer than that may still end in
        a commit)."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as raw:
                while await raw.fetch(_STILL_IN_IT, backend):  # noqa: ASYNC110 (another server's state)
                    await asyncio.sleep(SETTLE_POLL)
                settled = bool(await raw.fetch(committed[0], *committed[1]))
        except _DRIVER_ERRORS:
            return False
        log.warning("a COMMIT went unanswered; settled", extra={"committed": settled})
        return settled

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
