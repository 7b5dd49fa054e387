"""SQLite backend: the zero-set-up default.

One connection per process in WAL mode, owned by one thread; a lock serializes its users,
``BEGIN IMMEDIATE`` takes the write lock up front, and SQLite's own locking (with a busy timeout)
keeps several processes on one file consistent, so no row locks are needed. Each call is one
hand-off to that thread: the hand-off, not SQLite, is what a short statement costs. So a whole
:meth:`SqliteDatabase.execute_atomically` transaction (a refresh's) is first tried on the event
loop's thread, on a second connection that never waits for the write lock, and handed off only
when another process holds it; the WAL is checkpointed on the database thread, never by a commit
on the loop's. The atomic calls made in one turn of the event loop share one transaction, each
in a savepoint of its own (group commit): ``BEGIN`` and the ``COMMIT`` that writes the log were
half of what a refresh's call cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from auth_service.domain.errors import StoreUnavailable
from auth_service.store.migrations import MIGRATIONS, Migration, apply_pending
from auth_service.store.sql import Committed, Row, SqlStore, Statement, unavailable

__all__ = ["SqliteDatabase", "open_sqlite"]

log = logging.getLogger(__name__)
_DRIVER_ERRORS = (sqlite3.Error, ValueError, OSError)
CHECKPOINT_EVERY = 1000
"""Calls between two WAL checkpoints, which SQLite would otherwise run in whichever commit finds the
log past 1,000 pages, one on the event loop's thread included."""
T = TypeVar("T")


@functools.lru_cache(maxsize=256)
def _render(sql: str) -> str:
    """``$n`` (PostgreSQL) to ``?n``: both are numbered, so a parameter may appear twice."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


class _DatabaseThread:
    """The one thread that owns the connection: a single-worker executor, so every call (a whole
    :meth:`SqliteDatabase.execute_atomically` transaction included) is one hand-off. aiosqlite,
    which this replaces, runs one sqlite3 call per public hand-off (its way to run a function on
    its thread is private), which made a refresh ten hand-offs."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self.stopped = False

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self.stopped:
            raise sqlite3.ProgrammingError("the database is closed")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def stop(self) -> None:
        """Let queued calls finish, then end the thread."""
        self.stopped = True
        self._executor.shutdown(wait=False)


def _create_private(path: Path) -> None:
    """The database's directory (0700) and file (0600), when they are new: it holds password
    hashes and the sealed signing keys, and the umask left them readable by every local user (an
    outside probe). SQLite gives its ``-wal`` and ``-shm`` files the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _connect(path: str, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """A private in-memory database has one connection, used from both threads (every user holds
    :attr:`SqliteDatabase._lock`, so never from two at once)."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    for pragma in (
        "journal_mode=WAL",
        "foreign_keys=ON",
        "synchronous=NORMAL",
        "wal_autocheckpoint=0",
    ):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def _changed(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> int:
    return conn.execute(sql, args).rowcount


def _rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    return [dict(row) for row in conn.execute(sql, args)]


_Call = tuple["Statement | None", "Sequence[Statement]", "asyncio.Future[list[Row] | None]"]
"""One :meth:`SqliteDatabase.execute_atomically` or ``fetch_atomically`` waiting for its
transaction: its query, its statements, and the future its caller awaits."""


def _together(
    conn: sqlite3.Connection, calls: Sequence[_Call]
) -> list[list[Row] | Exception | None]:
    """Each call's query and statements, all in one transaction: each call in a savepoint of
    its own, rolled back alone when its query finds nothing, a statement changes no row or one
    fails (its outcome is then that error, as it would have been raised to it alone). A call
    whose caller stopped waiting is not run. A failure outside the calls (``SQLITE_BUSY``, the
    commit's) rolls back all and is raised."""
    outcomes: list[list[Row] | Exception | None] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for query, statements, waiter in calls:
            if waiter.done():
                outcomes.append(None)
                continue
            conn.execute("SAVEPOINT call")
            outcome: list[Row] | Exception | None
            try:
                outcome = _all_change_a_row(conn, query, statements)
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    raise  # another process's write lock: every call runs again, waiting
                outcome = exc
            except Exception as exc:  # the call's own (a constraint, a value): its alone
                outcome = exc
            if outcome is None or isinstance(outcome, Exception):
                conn.execute("ROLLBACK TO call")
            conn.execute("RELEASE call")
            outcomes.append(outcome)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _all_change_a_row(
    conn: sqlite3.Connection, query: Statement | None, statements: Sequence[Statement]
) -> list[Row] | None:
    """The query's rows (``[]`` without one), or None when it found none or a statement
    changed no row (the caller rolls back)."""
    rows = [] if query is None else _rows(conn, *query)
    if query is not None and not rows:
        return None
    for sql, args in statements:
        if conn.execute(sql, args).rowcount < 1:
            return None
    return rows


def _together_within(
    conn: sqlite3.Connection, calls: Sequence[_Call], seconds: float, busy_timeout: float
) -> list[list[Row] | Exception | None]:
    """:func:`_together`, waiting at most ``seconds`` for another process's write lock."""
    conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")
    try:
        return _together(conn, calls)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")


def _busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _settle(calls: Sequence[_Call], outcome: object) -> None:
    """Each caller's answer: its own of a list of outcomes, else the one error all share. A
    driver's error becomes the store's ``StoreUnavailable``, as :meth:`connection` makes it."""
    for index, (_, _, waiter) in enumerate(calls):
        if waiter.done():
            continue
        result = outcome[index] if isinstance(outcome, list) else outcome
        if isinstance(result, _DRIVER_ERRORS):
            waiter.set_exception(unavailable(result))
        elif isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(cast("list[Row] | None", result))


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


class _Connection:
    def __init__(self, conn: sqlite3.Connection, thread: _DatabaseThread) -> None:
        self._conn = conn
        self._thread = thread

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._thread.call(_changed, self._conn, _render(sql), args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._thread.call(self._conn.executemany, _render(sql), list(args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._thread.call(_rows, self._conn, _render(sql), args)

    async def insert(self, sql: str, *args: Any) -> bool:
        try:
            await self.execute(sql, *args)
        except sqlite3.IntegrityError:
            return False
        return True


class SqliteDatabase:
    lock_rows = ""
    skip_locked_rows = ""
    writable_ctes = False

    def __init__(
        self,
        conn: sqlite3.Connection,
        thread: _DatabaseThread,
        at_once: sqlite3.Connection,
        busy_timeout: float = 5.0,
    ) -> None:
        self._conn = _Connection(conn, thread)
        self._raw = conn
        self._at_once = at_once
        """The event loop's connection: no busy timeout, so another process's write lock refuses
        a transaction at once (``SQLITE_BUSY``, rolled back) instead of stalling the loop."""
        self._thread = thread
        self._busy_timeout = busy_timeout
        self._lock = asyncio.Lock()
        self._since_checkpoint = 0
        self._calls: list[_Call] | None = None
        """Atomic calls waiting for the loop's next turn, which runs them together."""
        self._waiting: set[asyncio.Future[None]] = set()
        self._checkpointing: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout: float = 5.0,
    ) -> SqliteDatabase:
        thread = _DatabaseThread()
        try:
            if str(path) != ":memory:":
                _create_private(Path(path))
            conn = await thread.call(_connect, str(path), busy_timeout)
            at_once = conn if str(path) == ":memory:" else await thread.call(_connect, str(path), 0)
        except _DRIVER_ERRORS as exc:
            thread.stop()
            raise StoreUnavailable(f"cannot open SQLite database {path}: {exc}") from exc
        db = cls(conn, thread, at_once, busy_timeout)
        try:
            await db._migrate(migrations)
        except BaseException:
            await db.close()
            raise
        return db

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        """Statements run in autocommit mode, one at a time."""
        try:
            async with self._lock:
                yield self._conn
                await self._checkpoint_now_and_then()
        except _DRIVER_ERRORS as exc:
            raise unavailable(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Connection]:
        try:
            async with self._lock:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    await self._conn.execute("ROLLBACK")
                    raise
                await self._conn.execute("COMMIT")
                await self._checkpoint_now_and_then()
        except _DRIVER_ERRORS as exc:
            raise unavailable(exc) from exc

    async def execute_atomically(
        self, statements: Sequence[Statement], *, committed: Statement | None = None
    ) -> bool:
        """``committed`` is not needed: a COMMIT here returns or fails before it commits."""
        return await self._atomically(None, statements) is not None

    async def fetch_atomically(
        self,
        query: Statement,
        then: Sequence[Statement] = (),
        *,
        committed: Committed | None = None,
    ) -> list[Row]:
        return await self._atomically(query, then) or []

    async def _atomically(
        self, query: Statement | None, statements: Sequence[Statement]
    ) -> list[Row] | None:
        """Waits for the transaction the calls made at this moment share (:meth:`_run`)."""
        rendered = [(_render(sql), args) for sql, args in statements]
        first = None if query is None else (_render(query[0]), query[1])
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[Row] | None] = loop.create_future()
        if self._calls is None:
            self._calls = []
            loop.call_soon(self._run)
        self._calls.append((first, rendered, waiter))
        return await waiter

    def _run(self) -> None:
        """The calls made since the event loop's last turn, in one transaction (group commit:
        its ``BEGIN`` and ``COMMIT``, which writes the log, were half of what a refresh's cost),
        on the loop's thread when nothing holds the connection and no other process the write
        lock; otherwise in a task that waits for both, as a lone call did."""
        calls, self._calls = self._calls or [], None
        if self._lock.locked() or self._thread.stopped:
            self._run_later(calls)
            return
        try:
            outcomes = _together(self._at_once, calls)
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                self._run_later(calls)
            else:
                _settle(calls, exc)
            return
        except Exception as exc:  # no caller is left waiting, whatever failed
            _settle(calls, exc)
            return
        _settle(calls, outcomes)
        self._since_checkpoint += len(calls)
        if self._since_checkpoint >= CHECKPOINT_EVERY and self._checkpointing is None:
            self._checkpointing = asyncio.ensure_future(self._checkpoint_soon())

    def _run_later(self, calls: list[_Call]) -> None:
        deadline = asyncio.get_running_loop().time() + self._busy_timeout
        task = asyncio.ensure_future(self._run_waiting(calls, deadline))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _run_waiting(self, calls: list[_Call], deadline: float) -> None:
        """The calls, once the connection is free, waiting for another process's write lock
        until ``deadline`` at most, the connection's wait included: calls queued behind a
        transaction that waits each waited the whole busy timeout again after it. They are
        answered as soon as their transaction has ended: a checkpoint failing after it does not
        turn a commit into an error."""
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._lock.acquire()
            except TimeoutError:
                raise StoreUnavailable("database unavailable: the database is locked") from None
            try:
                if self._thread.stopped:
                    raise sqlite3.ProgrammingError("the database is closed")
                try:
                    outcomes = _together(self._at_once, calls)
                except sqlite3.OperationalError as exc:
                    if not _busy(exc):
                        raise
                    left = deadline - asyncio.get_running_loop().time()
                    outcomes = await self._thread.call(
                        _together_within, self._raw, calls, left, self._busy_timeout
                    )
                _settle(calls, outcomes)
                self._since_checkpoint += len(calls) - 1  # the checkpoint's call counts one
                await self._checkpoint_now_and_then()
            except _DRIVER_ERRORS as exc:
                raise unavailable(exc) from exc
            finally:
                self._lock.release()
        except StoreUnavailable as exc:
            _settle(calls, exc)
        except BaseException:  # cancelled (the database closing): so are its callers
            for _, _, waiter in calls:
                waiter.cancel()
            raise

    async def _checkpoint_soon(self) -> None:
        """The checkpoint due after calls run on the loop's thread, once the connection is free."""
        try:
            async with self._lock:
                await self._checkpoint_now_and_then()
        finally:
            self._checkpointing = None

    async def _checkpoint_now_and_then(self) -> None:
        """A passive checkpoint on the database thread every :data:`CHECKPOINT_EVERY` calls (the
        caller holds the lock): its fsyncs never stall the event loop."""
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            try:
                await self._thread.call(_checkpoint, self._raw)
            except _DRIVER_ERRORS as exc:
                # After the call it follows, whose work is done (a commit): failing that call
                # would have its client retry what was done. The next checkpoint tries again.
                log.warning("SQLite checkpoint failed", extra={"error": str(exc)})

    async def close(self) -> None:
        await asyncio.gather(*self._waiting, return_exceptions=True)
        if self._checkpointing is not None:
            self._checkpointing.cancel()
        if not self._thread.stopped:
            self._at_once.close()
            await self._thread.call(self._raw.close)
            self._thread.stop()

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            await apply_pending(
                conn,
                migrations,
                {"real": "REAL", "blob": "BLOB", "serial": "INTEGER"},
                lambda version: (
                    "INSERT INTO schema_migrations VALUES ($1, $2)",
                    (version, time.time()),
                ),
            )


async def open_sqlite(path: str | Path, busy_timeout: float = 5.0) -> SqlStore:
    return SqlStore(await SqliteDatabase.open(path, busy_timeout=busy_timeout))
