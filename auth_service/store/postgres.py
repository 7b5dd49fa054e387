"""PostgreSQL backend: what several auth replicas share.

Migrations run under an advisory lock so replicas starting together apply them once.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

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

__all__ = ["PostgresStore"]

_MIGRATION_LOCK = 0x61757468  # "auth"

_REFRESH_VIEW_SQL = refresh_view_sql("$1")
_THROTTLE_UPSERT = THROTTLE_UPSERT.format(p=("$1", "$2", "$3", "$4"))


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        store = cls(pool)
        await store._migrate()
        return store

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            for version, sql in MIGRATIONS:
                if version <= current:
                    continue
                for stmt in render(sql, real="DOUBLE PRECISION", blob="BYTEA", serial="BIGSERIAL"):
                    await conn.execute(stmt)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)

    async def ping(self) -> None:
        try:
            await self._pool.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()

    async def create_user(self, user: User) -> None:
        try:
            await self._pool.execute(
                "INSERT INTO users VALUES ($1, $2, $3, $4, $5)",
                user.id,
                user.username,
                user.password_hash,
                user.scope,
                user.created_at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise UsernameTaken("that username is taken") from exc

    async def get_user(self, user_id: str) -> User | None:
        row = await self._pool.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
        return User(*row) if row else None

    async def get_user_by_username(self, username: str) -> User | None:
        row = await self._pool.fetchrow("SELECT * FROM users WHERE username = $1", username)
        return User(*row) if row else None

    async def create_session(self, session: Session, token: RefreshToken) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO sessions VALUES ($1, $2, $3, $4, $5, $6)",
                session.sid,
                session.user_id,
                session.scope,
                session.created_at,
                session.expires_at,
                session.revoked_at,
            )
            await _insert_token(conn, token)

    async def get_session(self, sid: str) -> Session | None:
        row = await self._pool.fetchrow("SELECT * FROM sessions WHERE sid = $1", sid)
        return Session(*row) if row else None

    async def find_refresh_token(self, token_hash: str) -> RefreshTokenView | None:
        row = await self._pool.fetchrow(_REFRESH_VIEW_SQL, token_hash)
        if row is None:
            return None
        return refresh_view(tuple(row))

    async def rotate_refresh_token(self, old_hash: str, new: RefreshToken, now: float) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE refresh_tokens SET rotated_at = $1 "
                "WHERE token_hash = $2 AND rotated_at IS NULL",
                now,
                old_hash,
            )
            if status != "UPDATE 1":
                return False
            await _insert_token(conn, new)
            return True

    async def revoke_session(self, sid: str, now: float) -> bool:
        status = await self._pool.execute(
            "UPDATE sessions SET revoked_at = $1 WHERE sid = $2 AND revoked_at IS NULL", now, sid
        )
        return bool(status == "UPDATE 1")

    async def revoke_user_sessions(self, user_id: str, now: float) -> list[str]:
        rows = await self._pool.fetch(
            "UPDATE sessions SET revoked_at = $1 "
            "WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 RETURNING sid",
            now,
            user_id,
        )
        return [row["sid"] for row in rows]

    async def list_signing_keys(self) -> list[StoredKey]:
        rows = await self._pool.fetch("SELECT * FROM signing_keys ORDER BY generation")
        return [StoredKey(*row) for row in rows]

    async def add_signing_key(self, key: StoredKey) -> bool:
        try:
            await self._pool.execute(
                "INSERT INTO signing_keys VALUES ($1, $2, $3, $4, $5, $6)",
                key.kid,
                key.generation,
                key.private_key_encrypted,
                key.public_jwk,
                key.created_at,
                key.activate_at,
            )
        except asyncpg.UniqueViolationError:
            return False
        return True

    async def delete_signing_key(self, kid: str) -> None:
        await self._pool.execute("DELETE FROM signing_keys WHERE kid = $1", kid)

    async def update_throttle(
        self, keys: Sequence[str], update: ThrottleUpdate
    ) -> dict[str, ThrottleState]:
        """Placeholder rows first, so there is a row to lock; rows locked in key order, so two
        replicas updating overlapping keys queue instead of deadlocking."""
        ordered = sorted(set(keys))
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO login_throttle (key, failures, window_start, blocked_until) "
                "VALUES ($1, 0, 0, 0) ON CONFLICT (key) DO NOTHING",
                [(key,) for key in ordered],
            )
            rows = await conn.fetch(
                "SELECT key, failures, window_start, blocked_until FROM login_throttle "
                "WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE",
                ordered,
            )
            written = update({row["key"]: ThrottleState(*tuple(row)[1:]) for row in rows})
            await conn.executemany(
                _THROTTLE_UPSERT,
                [(k, s.failures, s.window_start, s.blocked_until) for k, s in written.items()],
            )
            return written

    async def add_outbox(self, topic: str, payload: str, now: float) -> None:
        await self._pool.execute(
            "INSERT INTO outbox (topic, payload, created_at) VALUES ($1, $2, $3)",
            topic,
            payload,
            now,
        )

    async def outbox_batch(self, limit: int) -> list[OutboxItem]:
        rows = await self._pool.fetch(
            "SELECT id, topic, payload FROM outbox ORDER BY id LIMIT $1", limit
        )
        return [OutboxItem(*row) for row in rows]

    async def delete_outbox(self, ids: Sequence[int]) -> None:
        await self._pool.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))

    async def purge_expired(self, now: float) -> int:
        removed = 0
        async with self._pool.acquire() as conn, conn.transaction():
            for sql, params in (
                ("DELETE FROM refresh_tokens WHERE expires_at < $1", (now,)),
                ("DELETE FROM sessions WHERE expires_at < $1", (now,)),
                (
                    "DELETE FROM login_throttle WHERE blocked_until < $1 AND window_start < $2",
                    (now, now - 86400),
                ),
            ):
                status = await conn.execute(sql, *params)
                removed += int(status.rsplit(" ", 1)[-1])
        return removed


async def _insert_token(conn: asyncpg.Connection, token: RefreshToken) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens VALUES ($1, $2, $3, $4, $5)",
        token.token_hash,
        token.sid,
        token.created_at,
        token.expires_at,
        token.rotated_at,
    )
