"""The app's own database: users, their sessions here, documents and who they are shared with,
each document's chat, and the gateway's webhook events with who is online.

SQLite through the standard library: one connection, owned by one thread, and every operation a
plain function run there inside one transaction (``Database.run``), so the event loop never
waits on the disk and no two operations interleave.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

__all__ = ["Database", "Document", "User"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_sessions (
    session_hash TEXT PRIMARY KEY REFERENCES sessions(token_hash) ON DELETE CASCADE,
    refresh_token TEXT NOT NULL,
    channels TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS shares (
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (document_id, user_id)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    user TEXT,
    ts INTEGER NOT NULL,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS online (
    user_id INTEGER PRIMARY KEY,
    connections INTEGER NOT NULL
);
"""
"""``AUTOINCREMENT``: a deleted user's id is never given to another, so a late webhook about
them (or a token still in flight) can never name someone else."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str


@dataclass(frozen=True, slots=True)
class Document:
    id: int
    title: str
    owner: str
    shared_with: tuple[str, ...]


class Database:
    """One SQLite file; ``run(fn, *args)`` calls ``fn(connection, *args)`` on the database's own
    thread in a transaction (committed when it returns, rolled back when it raises)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notes-db")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._conn = await self._call(_connect, str(self._path))

    async def close(self) -> None:
        if self._conn is not None:
            await self._call(self._conn.close)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the database is not open")
        return await self._call(_transaction, conn, fn, *args)

    def _call(self, fn: Callable[[*Ts], T], *args: *Ts) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def _transaction(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts
) -> T:
    with conn:
        return fn(conn, *args)


# -- users and their sessions here -----------------------------------------------------------


def create_user(conn: sqlite3.Connection, username: str, password_hash: str) -> User | None:
    """The new user; None when the name is taken."""
    try:
        cursor = conn.execute(
            "INSERT INTO users (username, password_hash) VALUES (?, ?)", (username, password_hash)
        )
    except sqlite3.IntegrityError:
        return None
    assert cursor.lastrowid is not None
    return User(cursor.lastrowid, username)


def password_of(conn: sqlite3.Connection, username: str) -> tuple[User, str] | None:
    row = conn.execute(
        "SELECT id, username, password_hash FROM users WHERE username = ?", (username,)
    ).fetchone()
    return None if row is None else (User(row["id"], row["username"]), row["password_hash"])


def add_session(conn: sqlite3.Connection, token_hash: str, user_id: int, expires_at: float) -> None:
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
        (token_hash, user_id, expires_at),
    )


def session_user(conn: sqlite3.Connection, token_hash: str, now: float) -> User | None:
    row = conn.execute(
        "SELECT u.id, u.username FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE s.token_hash = ? AND s.expires_at > ?",
        (token_hash, now),
    ).fetchone()
    return None if row is None else User(row["id"], row["username"])


def end_session(conn: sqlite3.Connection, token_hash: str) -> str | None:
    """The gateway refresh token the session held, to revoke it; the session is gone."""
    held = gateway_session(conn, token_hash)
    conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
    return None if held is None else held[0]


def gateway_session(conn: sqlite3.Connection, token_hash: str) -> tuple[str, str] | None:
    """The gateway session this session of ours holds: its refresh token, and the channels its
    grant lists (JSON)."""
    row = conn.execute(
        "SELECT refresh_token, channels FROM gateway_sessions WHERE session_hash = ?",
        (token_hash,),
    ).fetchone()
    return None if row is None else (row["refresh_token"], row["channels"])


def keep_gateway_session(
    conn: sqlite3.Connection, token_hash: str, refresh_token: str, channels: str
) -> None:
    conn.execute(
        "INSERT INTO gateway_sessions (session_hash, refresh_token, channels) VALUES (?, ?, ?) "
        "ON CONFLICT (session_hash) DO UPDATE SET refresh_token = excluded.refresh_token, "
        "channels = excluded.channels",
        (token_hash, refresh_token, channels),
    )


def delete_user(conn: sqlite3.Connection, user_id: int) -> None:
    """With their sessions, documents (and those documents' shares and chat) and shares."""
    conn.execute("DELETE FROM users WHERE id = ?", (user_id,))


def user_id_of(conn: sqlite3.Connection, username: str) -> int | None:
    row = conn.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
    return None if row is None else int(row["id"])


# -- documents and sharing -------------------------------------------------------------------


def create_document(conn: sqlite3.Connection, owner_id: int, title: str) -> int:
    cursor = conn.execute(
        "INSERT INTO documents (owner_id, title) VALUES (?, ?)", (owner_id, title)
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


_READABLE = """
    SELECT d.id FROM documents d WHERE d.owner_id = :user
    UNION SELECT s.document_id FROM shares s WHERE s.user_id = :user
"""


def documents_of(conn: sqlite3.Connection, user_id: int) -> list[Document]:
    """The documents the user owns or was given, newest first."""
    rows = conn.execute(
        f"""SELECT d.id, d.title, o.username AS owner,
                   (SELECT json_group_array(u.username) FROM shares s JOIN users u
                    ON u.id = s.user_id WHERE s.document_id = d.id) AS shared_with
            FROM documents d JOIN users o ON o.id = d.owner_id
            WHERE d.id IN ({_READABLE}) ORDER BY d.id DESC""",  # noqa: S608 (a constant)
        {"user": user_id},
    ).fetchall()
    return [
        Document(
            row["id"], row["title"], row["owner"], tuple(sorted(json.loads(row["shared_with"])))
        )
        for row in rows
    ]


def may_read(conn: sqlite3.Connection, user_id: int, document_id: int) -> bool:
    """The sharing rule, in one place: the owner, and whoever the owner shared it with."""
    row = conn.execute(
        f"SELECT 1 FROM ({_READABLE}) WHERE id = :document",  # noqa: S608 (a constant)
        {"user": user_id, "document": document_id},
    ).fetchone()
    return row is not None


def owns(conn: sqlite3.Connection, user_id: int, document_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM documents WHERE id = ? AND owner_id = ?", (document_id, user_id)
    ).fetchone()
    return row is not None


def share(conn: sqlite3.Connection, document_id: int, user_id: int) -> None:
    conn.execute(
        "INSERT INTO shares (document_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (document_id, user_id),
    )


def unshare(conn: sqlite3.Connection, document_id: int, user_id: int) -> None:
    conn.execute("DELETE FROM shares WHERE document_id = ? AND user_id = ?", (document_id, user_id))


# -- chat ------------------------------------------------------------------------------------


def publish_message(
    conn: sqlite3.Connection, user_id: int, document_id: int, text: str, now: float
) -> tuple[int, str] | None:
    """Keep a message of a user who may read the document: its id and author; None otherwise."""
    if not may_read(conn, user_id, document_id):
        return None
    author = conn.execute("SELECT username FROM users WHERE id = ?", (user_id,)).fetchone()
    cursor = conn.execute(
        "INSERT INTO messages (document_id, author, text, created_at) VALUES (?, ?, ?, ?)",
        (document_id, author["username"], text, now),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid, author["username"]


def messages_of(conn: sqlite3.Connection, document_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, author, text, created_at FROM messages WHERE document_id = ? ORDER BY id",
        (document_id,),
    ).fetchall()
    return [dict(row) for row in rows]


def all_messages(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    rows = conn.execute("SELECT document_id, author, text FROM messages ORDER BY id").fetchall()
    return [(row["document_id"], row["author"], row["text"]) for row in rows]


# -- webhooks: who is online -----------------------------------------------------------------

_ONLINE_DELTA = {"connect": 1, "disconnect": -1}


def record_events(
    conn: sqlite3.Connection,
    events: list[dict[str, Any]],
    user_id_of_sub: Callable[[str], int | None],
) -> int:
    """Keep each event once (delivery is at least once: a retried batch repeats its events, ids
    and all) and count its user's sockets on a first ``connect`` or ``disconnect``. The count is a
    sum, so events of several replicas arriving in any order add up to the same number."""
    new = 0
    for event in events:
        inserted = conn.execute(
            "INSERT INTO webhook_events (id, type, user, ts, event) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (event["id"], event["type"], event.get("user"), event["ts"], json.dumps(event)),
        ).rowcount
        new += inserted
        delta = _ONLINE_DELTA.get(event["type"])
        user_id = user_id_of_sub(event.get("user") or "")
        if inserted and delta is not None and user_id is not None:
            conn.execute(
                "INSERT INTO online (user_id, connections) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET connections = connections + excluded.connections",
                (user_id, delta),
            )
    return new


def online_usernames(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT u.username FROM online o JOIN users u ON u.id = o.user_id "
        "WHERE o.connections > 0 ORDER BY u.username"
    ).fetchall()
    return [row["username"] for row in rows]


def webhook_log(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT type, user, ts FROM webhook_events ORDER BY ts, id").fetchall()
    return [dict(row) for row in rows]
