"""The backends' :class:`~auth_service.store.sql.Database` below the store: what the store contract
reaches only on one backend each (the rotation is one statement on PostgreSQL, several on SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from auth_service.domain.errors import StoreUnavailable
from auth_service.domain.models import OutboxItem, Session, User
from auth_service.store import sqlite as sqlite_backend
from auth_service.store.migrations import MIGRATIONS, Migration
from auth_service.store.postgres import PostgresDatabase
from auth_service.store.sql import Database, SqlStore
from auth_service.store.sqlite import SqliteDatabase
from tests.services import postgres_schema

_INSERT = (
    "INSERT INTO users (id, username, password_hash, scope, created_at) VALUES ($1, $1, '', '', 0)"
)
_RENAME = "UPDATE users SET username = $2 WHERE id = $1"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with AsyncExitStack() as stack:
        opened: Database
        if request.param == "sqlite":
            opened = await SqliteDatabase.open(tmp_path / "auth.db")
        else:
            opened = await PostgresDatabase.open(await stack.enter_async_context(postgres_schema()))
        stack.push_async_callback(opened.close)
        yield opened


async def usernames(db: Database) -> list[str]:
    async with db.connection() as conn:
        return [
            row["username"] for row in await conn.fetch("SELECT username FROM users ORDER BY 1")
        ]


@pytest.mark.parametrize("count", [1, 3])
async def test_statements_that_all_change_a_row_commit(db: Database, count: int) -> None:
    statements = [(_INSERT, (f"u{i}",)) for i in range(count)]
    assert await db.execute_atomically(statements) is True
    assert await usernames(db) == [f"u{i}" for i in range(count)]


async def test_the_first_statement_changing_no_row_rolls_back_all_and_stops(db: Database) -> None:
    statements = [(_INSERT, ("a",)), (_RENAME, ("nobody", "x")), (_INSERT, ("b",))]
    assert await db.execute_atomically(statements) is False
    assert await db.execute_atomically([(_RENAME, ("nobody", "x"))]) is False
    assert await usernames(db) == []
    assert await db.execute_atomically([(_INSERT, ("a",)), (_RENAME, ("a", "renamed"))]) is True
    assert await usernames(db) == ["renamed"]


async def test_a_query_and_what_follows_commit_together_or_not_at_all(db: Database) -> None:
    assert await db.execute_atomically([(_INSERT, ("a",))]) is True
    select = "SELECT username FROM users WHERE id = $1"
    assert await db.fetch_atomically((select, ("a",)), [(_RENAME, ("a", "b"))]) == [
        {"username": "a"}
    ]
    assert await db.fetch_atomically((select, ("nobody",)), [(_INSERT, ("c",))]) == []
    assert (
        await db.fetch_atomically((select, ("a",)), [(_INSERT, ("d",)), (_RENAME, ("x", "y"))])
        == []
    )
    assert await usernames(db) == ["b"]
    assert await db.fetch_atomically((select, ("a",))) == [{"username": "b"}]


async def test_calls_at_once_each_commit_or_not_on_their_own(db: Database) -> None:
    """Calls made at the same moment (SQLite runs them in one transaction) each keep their own
    outcome: one that changes no row, finds nothing or fails rolls back alone."""
    select = "SELECT username FROM users WHERE id = $1"
    assert await db.execute_atomically([(_INSERT, ("a",))]) is True
    outcomes = await asyncio.gather(
        db.execute_atomically([(_INSERT, ("b",))]),
        db.execute_atomically([(_INSERT, ("c",)), (_RENAME, ("nobody", "x"))]),
        db.fetch_atomically((select, ("nobody",)), [(_INSERT, ("d",))]),
        db.execute_atomically([(_INSERT, ("e",)), (_INSERT, ("a",))]),  # a is taken
        db.fetch_atomically((select, ("a",)), [(_RENAME, ("a", "a2"))]),
        db.execute_atomically([(_INSERT, ("f",))]),
        return_exceptions=True,
    )
    assert outcomes[:3] == [True, False, []]
    assert isinstance(outcomes[3], StoreUnavailable)
    assert outcomes[4:] == [[{"username": "a"}], True]
    assert await usernames(db) == ["a2", "b", "f"]


async def test_sqlite_runs_the_calls_of_one_moment_in_one_transaction(tmp_path: Path) -> None:
    """A transaction's BEGIN and COMMIT (the commit writes the log) are most of what a short
    one costs: calls made while the event loop handled one batch of requests share one."""
    db = await SqliteDatabase.open(tmp_path / "auth.db")
    seen: list[str] = []
    db._at_once.set_trace_callback(seen.append)
    try:
        outcomes = await asyncio.gather(
            *(db.execute_atomically([(_INSERT, (f"u{i}",))]) for i in range(4)),
            db.execute_atomically([(_INSERT, (2**70,))]),  # raises alone, as it would alone
            *(db.execute_atomically([(_INSERT, (f"u{i}",))]) for i in range(4, 8)),
            return_exceptions=True,
        )
        assert isinstance(outcomes.pop(4), OverflowError)
        assert outcomes == [True] * 8
        assert seen.count("BEGIN IMMEDIATE") == 1 and seen.count("COMMIT") == 1
        assert await usernames(db) == [f"u{i}" for i in range(8)]
        assert await db.execute_atomically([(_INSERT, ("alone",))]) is True
        assert seen.count("BEGIN IMMEDIATE") == 2
    finally:
        await db.close()


async def test_a_call_cancelled_before_its_transaction_is_not_run(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "auth.db")
    try:
        cancelled = asyncio.create_task(db.execute_atomically([(_INSERT, ("gone",))]))
        kept = asyncio.create_task(db.execute_atomically([(_INSERT, ("kept",))]))
        await asyncio.sleep(0)  # both are waiting for the transaction they share
        cancelled.cancel()
        assert await kept is True
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await usernames(db) == ["kept"]
    finally:
        await db.close()


@pytest.mark.postgres
async def test_postgres_a_connection_in_a_broken_state_is_unavailable_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncpg's ``InternalClientError`` ("cannot switch to state ...; another operation is in
    progress", after the server terminated a connection mid-call) is outside its
    ``InterfaceError``: it answered 500 where a store failure answers 503 (an outside probe)."""
    async with postgres_schema() as url:
        db = await PostgresDatabase.open(url, max_size=1)
        try:

            async def broken(*args: object, **kwargs: object) -> None:
                raise asyncpg.exceptions._base.InternalClientError("cannot switch to state 11")

            with monkeypatch.context() as patched:
                patched.setattr(asyncpg.connection.Connection, "execute", broken)
                patched.setattr(asyncpg.connection.Connection, "fetch", broken)
                with pytest.raises(StoreUnavailable, match="cannot switch"):
                    await db.fetch_atomically(("SELECT 1", ()))
        finally:
            await db.close()


async def test_sqlite_waits_for_another_writer_off_the_event_loop(tmp_path: Path) -> None:
    """A transaction runs on the event loop's thread only while no other process holds the write
    lock: then it waits on the database thread (busy timeout) and the loop keeps serving."""
    db = await SqliteDatabase.open(tmp_path / "auth.db")
    other = sqlite3.connect(tmp_path / "auth.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute(_INSERT.replace("$1", "'other'"))
        waiting = asyncio.gather(
            db.execute_atomically([(_INSERT, ("mine",))]),
            db.execute_atomically([(_INSERT, ("mine2",)), (_RENAME, ("nobody", "x"))]),
            db.execute_atomically([(_INSERT, ("mine3",))]),
        )
        await asyncio.sleep(0.2)  # the loop runs: the transaction is not blocking it
        assert not waiting.done()
        other.execute("COMMIT")
        assert await asyncio.wait_for(waiting, 5) == [True, False, True]
        assert await usernames(db) == ["mine", "mine3", "other"]
    finally:
        other.close()
        await db.close()


async def test_sqlite_calls_waiting_behind_another_writer_each_give_up_in_time(
    tmp_path: Path,
) -> None:
    """Each call waits at most the busy timeout for another process's write lock, however many
    wait: they queued for the connection and each then waited the whole timeout again, so the
    eighth of eight refreshes 0.2 s apart answered 503 after 34 s (an outside probe)."""
    db = await SqliteDatabase.open(tmp_path / "auth.db", busy_timeout=0.5)
    other = sqlite3.connect(tmp_path / "auth.db", isolation_level=None)
    loop = asyncio.get_running_loop()

    async def timed(i: int) -> float:
        await asyncio.sleep(0.1 * i)  # a transaction of its own each
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await db.execute_atomically([(_INSERT, (f"u{i}",))])
        return loop.time() - started

    try:
        other.execute("BEGIN IMMEDIATE")
        waited = await asyncio.gather(*(timed(i) for i in range(6)))
        assert max(waited) < 0.5 + 0.3, waited
        other.execute("ROLLBACK")
        assert await db.execute_atomically([(_INSERT, ("after",))]) is True
    finally:
        other.close()
        await db.close()


async def test_sqlite_a_checkpoint_failing_after_a_commit_leaves_the_commit_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that waited for another process's lock are answered by their transaction: a
    checkpoint run after it that fails (a disk error) made a committed call answer 503, so its
    client retried what was done (a refresh's retry reads as a reuse)."""

    def failing(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    db = await SqliteDatabase.open(tmp_path / "auth.db")
    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(sqlite_backend, "_checkpoint", failing)
    other = sqlite3.connect(tmp_path / "auth.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        waiting = asyncio.ensure_future(db.execute_atomically([(_INSERT, ("mine",))]))
        await asyncio.sleep(0.1)  # it waits on the database thread
        other.execute("ROLLBACK")
        assert await asyncio.wait_for(waiting, 5) is True
        assert await usernames(db) == ["mine"]
    finally:
        other.close()
        await db.close()


async def test_sqlite_checkpoints_the_log_on_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No commit checkpoints the log (one on the loop's thread would fsync there): the database
    thread does, every ``CHECKPOINT_EVERY`` calls."""
    threads: list[str] = []
    checkpoint = sqlite_backend._checkpoint

    def recorded(conn: sqlite3.Connection) -> None:
        threads.append(threading.current_thread().name)
        checkpoint(conn)

    monkeypatch.setattr(sqlite_backend, "CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(sqlite_backend, "_checkpoint", recorded)
    db = await SqliteDatabase.open(tmp_path / "auth.db")
    try:
        threads.clear()
        for i in range(10):
            await db.execute_atomically([(_INSERT, (f"u{i}",))])
        assert len(threads) == 2
        assert all(name.startswith("sqlite") for name in threads)
        async with db.connection() as conn:
            assert await conn.fetch("PRAGMA wal_autocheckpoint") == [{"wal_autocheckpoint": 0}]
    finally:
        await db.close()


_LOWERCASE_USERNAMES: dict[str, Migration] = {
    "sqlite": (
        100,
        (
            """
            CREATE TRIGGER users_lowercase AFTER INSERT ON users BEGIN
                UPDATE users SET username = lower(NEW.username) WHERE id = NEW.id;
            END
            """,
        ),
    ),
    "postgres": (
        100,
        (
            """
            CREATE FUNCTION users_lowercase() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.username := lower(NEW.username);
                RETURN NEW;
            END;
            $$
            """,
            """
            CREATE TRIGGER users_lowercase BEFORE INSERT ON users
            FOR EACH ROW EXECUTE FUNCTION users_lowercase()
            """,
        ),
    ),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def where(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Where a backend's database lives (a file, a fresh PostgreSQL schema), to open it more
    than once; the backend is the ``request.param``."""
    if request.param == "sqlite":
        yield str(tmp_path / "auth.db")
        return
    async with postgres_schema() as dsn:
        yield dsn


async def open_at(where: str, migrations: Sequence[Migration]) -> Database:
    if where.startswith("postgresql://"):
        return await PostgresDatabase.open(where, migrations=migrations)
    return await SqliteDatabase.open(where, migrations=migrations)


async def test_a_migration_statement_with_semicolons_in_its_body_runs_whole(where: str) -> None:
    """A trigger body (and PL/pgSQL's ``$$`` body) holds semicolons: the runner must not split."""
    backend = "postgres" if where.startswith("postgresql://") else "sqlite"
    db = await open_at(where, (*MIGRATIONS, _LOWERCASE_USERNAMES[backend]))
    try:
        assert await db.execute_atomically([(_INSERT, ("ALICE",))]) is True
        assert await usernames(db) == ["alice"]
    finally:
        await db.close()


async def test_the_outbox_migration_keeps_the_events_of_an_existing_database(where: str) -> None:
    """Migration 3 adds the delivery-state columns to an outbox that already holds events."""
    old = await open_at(where, MIGRATIONS[:2])
    try:
        async with old.connection() as conn:
            await conn.execute(
                "INSERT INTO outbox (topic, payload, created_at) VALUES ('t', 'kept', 1.5)"
            )
    finally:
        await old.close()
    store = SqlStore(await open_at(where, MIGRATIONS))
    try:
        (item,) = await store.outbox_batch(10)
        assert item == OutboxItem(item.id, "t", "kept", 1.5)
        await store.update_outbox(replace(item, attempts=1, last_error="e", dead_at=2.0))
        assert await store.outbox_dead_letters(10) == [
            replace(item, attempts=1, last_error="e", dead_at=2.0)
        ]
    finally:
        await store.close()


async def test_the_clients_migration_keeps_the_sessions_of_an_existing_database(where: str) -> None:
    """Migration 5 adds clients and the app users' columns beside live users and sessions, which
    read back as this issuer's own (no client, no details) and refresh as before."""
    old = await open_at(where, MIGRATIONS[:4])
    try:
        async with old.connection() as conn:
            await conn.execute(_INSERT, "u1")
            await conn.execute(
                "INSERT INTO sessions (sid, user_id, scope, created_at, expires_at) "
                "VALUES ('s1', 'u1', 'chat:read', 1, 9e9)"
            )
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, sid, created_at, expires_at) "
                "VALUES ('h1', 's1', 1, 9e9)"
            )
    finally:
        await old.close()
    store = SqlStore(await open_at(where, MIGRATIONS))
    try:
        view = await store.find_refresh_token("h1")
        assert view is not None
        assert view.user == User("u1", "u1", "", "", 0.0)
        assert view.session == Session("s1", "u1", "chat:read", 1.0, 9e9)
    finally:
        await store.close()


async def test_a_new_sqlite_database_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    """It holds password hashes and the sealed signing keys: the umask (022 here) left the
    directory 755 and the files 644, and any local user copied them (an outside probe)."""
    path = tmp_path / "data" / "auth.db"
    db = await SqliteDatabase.open(path)
    try:
        async with db.connection() as conn:
            await conn.execute("CREATE TABLE t (x INTEGER)")
            await conn.execute("INSERT INTO t VALUES (1)")
    finally:
        await db.close()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    for made in path.parent.iterdir():
        assert made.stat().st_mode & 0o777 == 0o600, made.name
    assert {p.name for p in path.parent.iterdir()} >= {"auth.db"}
