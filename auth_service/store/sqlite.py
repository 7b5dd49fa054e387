"""SQLite backend: the zero-set-up default.

One connection per process in WAL mode; a lock serializes transactions on it, and SQLite's own
locking (with a busy timeout) keeps several processes on one file consistent.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from auth_service.domain.models import (
    OutboxItem,
    RefreshToken,
    RefreshTokenView,
    Session,
    StoredKey,
    ThrottleState,
    User,
)
from auth_service.errors import StoreUnavailable, UsernameTaken
from auth_service.store.base import ThrottleUpdate
from auth_service.store.migrations import MIGRATIONS, render
from auth_service.store.rows import THROTTLE_UPSERT, refresh_view, refresh_view_sql

__all__ = ["SqliteStore"]

_REFRESH_VIEW_SQL = refresh_view_sql("?")
_THROTTLE_UPSERT = THROTTLE_UPSERT.format(p=("?", "?", "?", "?"))


class SqliteStore:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA synchronous=NORMAL")
        store = cls(conn)
        await store._migrate()
        return store

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self._lock, self._conn.execute(sql, params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> Iterable[sqlite3.Row]:
        async with self._lock, self._conn.execute(sql, params) as cur:
            rows: Iterable[sqlite3.Row] = await cur.fetchall()
            return rows

    async def _migrate(self) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            async with conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as c:
                row = await c.fetchone()
            current = row[0] if row else 0
            for version, sql in MIGRATIONS:
                if version <= current:
                    continue
                for stmt in render(sql, real="REAL", blob="BLOB", serial="INTEGER"):
                    await conn.execute(stmt)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, strftime('%s','now'))", (version,)
                )

    async def ping(self) -> None:
        try:
            await self._fetchone("SELECT 1")
        except (sqlite3.Error, ValueError) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def close(self) -> None:
        await self._conn.close()

    async def create_user(self, user: User) -> None:
        try:
            async with self._tx() as conn:
                await conn.execute(
                    "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                    (user.id, user.username, user.password_hash, user.scope, user.created_at),
                )
        except sqlite3.IntegrityError as exc:
            raise UsernameTaken("that username is taken") from exc

    async def get_user(self, user_id: str) -> User | None:
        row = await self._fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return User(*row) if row else None

    async def get_user_by_username(self, username: str) -> User | None:
        row = await self._fetchone("SELECT * FROM users WHERE username = ?", (username,))
        return User(*row) if row else None

    async def create_session(self, session: Session, token: RefreshToken) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.sid,
                    session.user_id,
                    session.scope,
                    session.created_at,
                    session.expires_at,
                    session.revoked_at,
                ),
            )
            await _insert_token(conn, token)

    async def get_session(self, sid: str) -> Session | None:
        row = await self._fetchone("SELECT * FROM sessions WHERE sid = ?", (sid,))
        return Session(*row) if row else None

    async def find_refresh_token(self, token_hash: str) -> RefreshTokenView | None:
        row = await self._fetchone(_REFRESH_VIEW_SQL, (token_hash,))
        if row is None:
            return None
        return refresh_view(tuple(row))

    async def rotate_refresh_token(self, old_hash: str, new: RefreshToken, now: float) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE refresh_tokens SET rotated_at = ? "
                "WHERE token_hash = ? AND rotated_at IS NULL",
                (now, old_hash),
            )
            if cur.rowcount != 1:
                return False
            await _insert_token(conn, new)
            return True

    async def revoke_session(self, sid: str, now: float) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE sessions SET revoked_at = ? WHERE sid = ? AND revoked_at IS NULL",
                (now, sid),
            )
            return cur.rowcount == 1

    async def revoke_user_sessions(self, user_id: str, now: float) -> list[str]:
        async with self._tx() as conn:
            async with conn.execute(
                "UPDATE sessions SET revoked_at = ? "
                "WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? RETURNING sid",
                (now, user_id, now),
            ) as cur:
                rows = await cur.fetchall()
            return [row[0] for row in rows]

    async def list_signing_keys(self) -> list[StoredKey]:
        rows = await self._fetchall("SELECT * FROM signing_keys ORDER BY generation")
        return [StoredKey(*row) for row in rows]

    async def add_signing_key(self, key: StoredKey) -> bool:
        try:
            async with self._tx() as conn:
                await conn.execute(
                    "INSERT INTO signing_keys VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key.kid,
                        key.generation,
                        key.private_key_encrypted,
                        key.public_jwk,
                        key.created_at,
                        key.activate_at,
                    ),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    async def delete_signing_key(self, kid: str) -> None:
        async with self._tx() as conn:
            await conn.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,))

    async def update_throttle(
        self, keys: Sequence[str], update: ThrottleUpdate
    ) -> dict[str, ThrottleState]:
        """``BEGIN IMMEDIATE`` takes the write lock first, so every process runs these one by one."""
        marks = ",".join("?" * len(keys))
        async with self._tx() as conn:
            async with conn.execute(
                "SELECT key, failures, window_start, blocked_until FROM login_throttle "  # noqa: S608
                f"WHERE key IN ({marks})",
                tuple(keys),
            ) as cur:
                rows = await cur.fetchall()
            states = {key: ThrottleState() for key in keys}
            states.update({row[0]: ThrottleState(*row[1:]) for row in rows})
            written = update(states)
            await conn.executemany(
                _THROTTLE_UPSERT,
                [(k, s.failures, s.window_start, s.blocked_until) for k, s in written.items()],
            )
            return written

    async def add_outbox(self, topic: str, payload: str, now: float) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO outbox (topic, payload, created_at) VALUES (?, ?, ?)",
                (topic, payload, now),
            )

    async def outbox_batch(self, limit: int) -> list[OutboxItem]:
        rows = await self._fetchall(
            "SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?", (limit,)
        )
        return [OutboxItem(*row) for row in rows]

    async def delete_outbox(self, ids: Sequence[int]) -> None:
        async with self._tx() as conn:
            await conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    async def purge_expired(self, now: float) -> int:
        async with self._tx() as conn:
            removed = 0
            for sql, params in (
                ("DELETE FROM refresh_tokens WHERE expires_at < ?", (now,)),
                ("DELETE FROM sessions WHERE expires_at < ?", (now,)),
                (
                    "DELETE FROM login_throttle WHERE blocked_until < ? AND window_start < ?",
                    (now, now - 86400),
                ),
            ):
                cur = await conn.execute(sql, params)
                removed += cur.rowcount
            return removed


async def _insert_token(conn: aiosqlite.Connection, token: RefreshToken) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, ?)",
        (token.token_hash, token.sid, token.created_at, token.expires_at, token.rotated_at),
    )
