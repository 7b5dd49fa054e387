"""The backends' :class:`~auth_service.store.sql.Database` below the store: what the store contract
reaches only on one backend each (the rotation is one statement on PostgreSQL, several on SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from auth_service.store.migrations import MIGRATIONS, Migration
from auth_service.store.postgres import PostgresDatabase
from auth_service.store.sql import Database
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


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_migration_statement_with_semicolons_in_its_body_runs_whole(
    backend: str, tmp_path: Path
) -> None:
    """A trigger body (and PL/pgSQL's ``$$`` body) holds semicolons: the runner must not split."""
    migrations = (*MIGRATIONS, _LOWERCASE_USERNAMES[backend])
    async with AsyncExitStack() as stack:
        db: Database
        if backend == "sqlite":
            db = await SqliteDatabase.open(tmp_path / "auth.db", migrations=migrations)
        else:
            dsn = await stack.enter_async_context(postgres_schema())
            db = await PostgresDatabase.open(dsn, migrations=migrations)
        stack.push_async_callback(db.close)
        assert await db.execute_atomically([(_INSERT, ("ALICE",))]) is True
        assert await usernames(db) == ["alice"]
