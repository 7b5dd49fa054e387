"""Versioned schema, written once for both dialects.

Each migration is a list of statements, applied in order inside one transaction and recorded in
``schema_migrations``. Each statement is sent to the driver whole: splitting a script on ``;``
would cut a PL/pgSQL function or a trigger body, whose semicolons are its own. ``{real}``,
``{blob}`` and ``{serial}`` become the dialect's float, bytes and auto-id types; no other text
changes (braces elsewhere, as in an array literal, stay).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from auth_service.store.sql import Connection, Statement

__all__ = ["MIGRATIONS", "Migration", "apply_pending", "render"]

Migration = tuple[int, tuple[str, ...]]
"""A version and its statements, one per entry."""

MIGRATIONS: tuple[Migration, ...] = (
    (
        1,
        (
            """
            CREATE TABLE users (
                id TEXT PRIMARY KEY,
                username TEXT NOT NULL UNIQUE,
                password_hash TEXT NOT NULL,
                scope TEXT NOT NULL,
                created_at {real} NOT NULL
            )
            """,
            """
            CREATE TABLE sessions (
                sid TEXT PRIMARY KEY,
                user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                scope TEXT NOT NULL,
                created_at {real} NOT NULL,
                expires_at {real} NOT NULL,
                revoked_at {real}
            )
            """,
            "CREATE INDEX sessions_user_id ON sessions(user_id)",
            """
            CREATE TABLE refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                sid TEXT NOT NULL REFERENCES sessions(sid) ON DELETE CASCADE,
                created_at {real} NOT NULL,
                expires_at {real} NOT NULL,
                rotated_at {real}
            )
            """,
            "CREATE INDEX refresh_tokens_sid ON refresh_tokens(sid)",
            """
            CREATE TABLE signing_keys (
                kid TEXT PRIMARY KEY,
                generation INTEGER NOT NULL UNIQUE,
                private_key_encrypted {blob} NOT NULL,
                public_jwk TEXT NOT NULL,
                created_at {real} NOT NULL,
                activate_at {real} NOT NULL
            )
            """,
            """
            CREATE TABLE login_throttle (
                key TEXT PRIMARY KEY,
                failures INTEGER NOT NULL,
                window_start {real} NOT NULL,
                blocked_until {real} NOT NULL DEFAULT 0
            )
            """,
        ),
    ),
    (
        2,
        (
            """
            CREATE TABLE outbox (
                id {serial} PRIMARY KEY,
                topic TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_at {real} NOT NULL
            )
            """,
        ),
    ),
    (
        3,
        (
            "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE outbox ADD COLUMN last_error TEXT",
            "ALTER TABLE outbox ADD COLUMN next_attempt_at {real} NOT NULL DEFAULT 0",
            "ALTER TABLE outbox ADD COLUMN dead_at {real}",
        ),
    ),
    (
        4,
        (
            """
            CREATE TABLE withdrawn_keys (
                kid TEXT PRIMARY KEY,
                generation INTEGER NOT NULL,
                withdrawn_at {real} NOT NULL
            )
            """,
        ),
    ),
    (
        5,
        (
            """
            CREATE TABLE clients (
                client_id TEXT PRIMARY KEY,
                secret_encrypted {blob} NOT NULL,
                grant_types TEXT NOT NULL,
                scope TEXT,
                namespaces TEXT,
                created_at {real} NOT NULL,
                secret_rotated_at {real},
                previous_secret_encrypted {blob},
                previous_secret_expires_at {real}
            )
            """,
            "ALTER TABLE users ADD COLUMN client_id TEXT "
            "REFERENCES clients(client_id) ON DELETE CASCADE",
            "CREATE INDEX users_client_id ON users(client_id)",
            "ALTER TABLE sessions ADD COLUMN authorization_details TEXT",
            "ALTER TABLE sessions ADD COLUMN username TEXT",
            """
            CREATE TABLE used_assertions (
                client_id TEXT NOT NULL,
                jti TEXT NOT NULL,
                expires_at {real} NOT NULL,
                PRIMARY KEY (client_id, jti)
            )
            """,
        ),
    ),
    (
        6,
        (
            "ALTER TABLE clients ADD COLUMN trusted_issuer TEXT",
            "ALTER TABLE clients ADD COLUMN trusted_jwks_uri TEXT",
            "ALTER TABLE clients ADD COLUMN trusted_audience TEXT",
            "ALTER TABLE clients ADD COLUMN trusted_algorithms TEXT",
        ),
    ),
    (
        7,
        (
            "ALTER TABLE sessions ADD COLUMN jkt TEXT",
            "ALTER TABLE clients ADD COLUMN dpop TEXT",
        ),
    ),
    (8, ("ALTER TABLE sessions ADD COLUMN bound_at {real}",)),
    (
        9,
        (
            """
            CREATE TABLE revocations (
                key TEXT PRIMARY KEY,
                payload TEXT NOT NULL,
                until {real} NOT NULL
            )
            """,
        ),
    ),
)

_TYPE = re.compile(r"\{(real|blob|serial)\}")


def render(statements: Sequence[str], *, real: str, blob: str, serial: str) -> list[str]:
    """A migration's statements with the dialect's types filled in."""
    types = {"real": real, "blob": blob, "serial": serial}
    return [_TYPE.sub(lambda m: types[m[1]], stmt).strip() for stmt in statements]


async def apply_pending(
    conn: Connection,
    migrations: Sequence[Migration],
    types: Mapping[str, str],
    record: Callable[[int], Statement],
) -> None:
    """Apply, in ``conn``'s transaction, each migration newer than ``schema_migrations`` says,
    with the dialect's ``types`` (``render``), recording each by the statement ``record`` makes
    of its version."""
    rows = await conn.fetch("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
    for version, statements in migrations:
        if version <= rows[0]["v"]:
            continue
        for stmt in render(statements, **types):
            await conn.execute(stmt)
        sql, args = record(version)
        await conn.execute(sql, *args)
