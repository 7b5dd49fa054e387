"""Every :class:`~auth_service.domain.store.Store` operation, its SQL written once for both backends.

Statements use PostgreSQL's numbered ``$n`` placeholders; the SQLite backend renders them as its
own numbered ``?n``. Rows are mapped to the domain's models by column name. A backend only supplies
a :class:`Database`: connections, transactions, and its driver's errors turned into
:class:`~auth_service.domain.errors.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import astuple, fields, replace
from typing import Any, Protocol, TypeVar

from auth_service.domain.errors import StoreUnavailable, UsernameTaken
from auth_service.domain.models import (
    Client,
    OutboxBacklog,
    OutboxItem,
    RefreshToken,
    RefreshTokenView,
    Session,
    StoredKey,
    ThrottleState,
    TrustedIssuer,
    User,
    WithdrawnKey,
    trusted_columns,
)
from auth_service.domain.store import Announce, Revocation, ThrottleUpdate, no_announcement

__all__ = ["Committed", "Connection", "Database", "SqlStore", "Statement", "unavailable"]

Row = Mapping[str, Any]
Statement = tuple[str, Sequence[Any]]
Committed = Callable[[list[Row]], Statement]
"""From a transaction's rows, the query whose rows say it committed (``fetch_atomically``)."""
Model = TypeVar("Model")


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The driver's failure for the operator's log line: its message, or its kind when it has
    none (a timeout's is empty, which logged ``database unavailable: `` and nothing more)."""
    return StoreUnavailable(f"database unavailable: {str(exc) or type(exc).__name__}")


class Connection(Protocol):
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns how many rows it changed."""

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def insert(self, sql: str, *args: Any) -> bool:
        """Run one INSERT; False when a unique constraint refused the row."""


class Database(Protocol):
    lock_rows: str
    """The clause that locks selected rows to the transaction's end (empty where writers queue)."""
    skip_locked_rows: str
    """The same, passing over rows another transaction holds instead of waiting for them: what a
    background purge takes, so it never waits in a cycle with a request's transaction."""
    writable_ctes: bool
    """Whether a ``WITH`` may hold an ``UPDATE ... RETURNING`` that the statement's ``INSERT``
    reads: two writes in one statement, atomic by itself (PostgreSQL; SQLite has no DML in CTEs)."""

    def connection(self) -> AbstractAsyncContextManager[Connection]: ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...

    async def execute_atomically(
        self, statements: Sequence[Statement], *, committed: Statement | None = None
    ) -> bool:
        """Run ``statements`` as one transaction, in one hand-off to the driver (one round trip
        when there is one statement). The first that changes no row rolls it back: False.
        ``committed``: a query that returns rows once the transaction's work is stored, which
        settles a COMMIT that went unanswered (a server's: PostgreSQL) before the caller is told
        ``StoreUnavailable`` for work that was done."""

    async def fetch_atomically(
        self,
        query: Statement,
        then: Sequence[Statement] = (),
        *,
        committed: Committed | None = None,
    ) -> list[Row]:
        """Run ``query`` and, when it returns rows, ``then``, as one transaction in one hand-off
        to the driver (one round trip when ``then`` is empty); returns the query's rows. No rows,
        or a statement of ``then`` that changes none, rolls it back: ``[]``. ``committed``, from
        the query's rows: as :meth:`execute_atomically`'s."""

    async def close(self) -> None: ...


async def _announce(
    conn: Connection, announce: Announce, ended: Sequence[tuple[str, str]], now: float
) -> list[OutboxItem]:
    """Write the announcements of the families ``ended`` to the outbox (and each revocation to
    keep for a ledger restore) in the revoking transaction; returns the outbox rows."""
    kept = []
    for item in announce(ended):
        (row,) = await conn.fetch(
            "INSERT INTO outbox (topic, payload, created_at, next_attempt_at) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            item.topic,
            item.payload,
            now,
            item.due_at,
        )
        kept.append(
            OutboxItem(row["id"], item.topic, item.payload, now, next_attempt_at=item.due_at)
        )
        if item.keep is not None:
            await conn.execute(_KEEP_REVOCATION, item.keep[0], item.payload, item.keep[1])
    return kept


def _names(model: type[Any]) -> str:
    return ", ".join(field.name for field in fields(model))


def _marks(model: type[Any], first: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(first, first + len(fields(model))))


def _insert_sql(table: str, model: type[Any]) -> str:
    return f"INSERT INTO {table} ({_names(model)}) VALUES ({_marks(model)})"  # noqa: S608


def _columns(alias: str, model: type[Any]) -> str:
    return ", ".join(f"{alias}.{field.name} AS {alias}_{field.name}" for field in fields(model))


@functools.cache
def _keys(model: type[Any], alias: str) -> tuple[tuple[str, str], ...]:
    """Each field of ``model`` and the column that holds it (``alias_field`` under an alias)."""
    prefix = f"{alias}_" if alias else ""
    return tuple((field.name, prefix + field.name) for field in fields(model))


def _model(model: type[Model], row: Row, alias: str = "") -> Model:
    return model(**{name: row[key] for name, key in _keys(model, alias)})  # type: ignore[arg-type]


def _view(row: Row) -> RefreshTokenView:
    return RefreshTokenView(
        _model(RefreshToken, row, "t"), _model(Session, row, "s"), _model(User, row, "u")
    )


_INSERT_USER = _insert_sql("users", User)
_INSERT_SESSION = _insert_sql("sessions", Session)
_INSERT_TOKEN = _insert_sql("refresh_tokens", RefreshToken)
_INSERT_KEY = _insert_sql("signing_keys", StoredKey)
_KEEP_REVOCATION = (
    "INSERT INTO revocations (key, payload, until) VALUES ($1, $2, $3) "
    "ON CONFLICT (key) DO UPDATE SET payload = excluded.payload, until = excluded.until "
    "WHERE revocations.until <= excluded.until"
)
_INSERT_CLIENT = _insert_sql("clients", Client)
_USE_ASSERTION = (
    "INSERT INTO used_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (client_id, jti) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE used_assertions.expires_at <= $4"
)
_ROTATE_CLIENT = (
    "UPDATE clients SET previous_secret_encrypted = secret_encrypted, "
    "previous_secret_expires_at = $4, secret_encrypted = $2, secret_rotated_at = $3 "
    "WHERE client_id = $1"
)
_TRUST_ISSUER = (
    "UPDATE clients SET trusted_issuer = $2, trusted_jwks_uri = $3, trusted_audience = $4, "
    "trusted_algorithms = $5 WHERE client_id = $1"
)
_CLIENT_LIVE_SESSIONS = f"""
    SELECT {_columns("s", Session)} FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE u.client_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 ORDER BY s.sid
"""  # noqa: S608
_RECORD_WITHDRAWN = (
    "INSERT INTO withdrawn_keys (kid, generation, withdrawn_at) "
    "SELECT kid, generation, $2 FROM signing_keys WHERE kid = $1 ON CONFLICT (kid) DO NOTHING"
)
_MARK_ROTATED = (
    "UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2 AND rotated_at IS NULL"
)
_SUPERSEDE_LIVE = "UPDATE refresh_tokens SET rotated_at = $1 WHERE sid = $2 AND rotated_at IS NULL"
_ROTATE_IN_ONE_STATEMENT = (
    f"WITH old AS ({_MARK_ROTATED} RETURNING 1) INSERT INTO refresh_tokens "  # noqa: S608
    f"({_names(RefreshToken)}) SELECT {_marks(RefreshToken, first=3)} FROM old"
)
_LIVE_BEARER = (
    "t.rotated_at IS NULL AND t.expires_at > $1 AND s.revoked_at IS NULL AND s.expires_at > $1 "
    "AND s.jkt IS NULL AND u.client_id IS NULL"
)
"""A refresh token that may be rotated with no more questions: not rotated, expired or revoked,
of an unbound session of this issuer's own user (no proof, no client policy to consult)."""
_VIEW_COLUMNS = f"{_columns('t', RefreshToken)}, {_columns('s', Session)}, {_columns('u', User)}"


def _next_expiry(session_end: str) -> str:
    """The new token's end: the one asked for (``$4``), or its session's when that comes first."""
    return f"CASE WHEN $4 < {session_end} THEN $4 ELSE {session_end} END"


_ROTATE_LIVE_TOGETHER = f"""
    WITH calls AS (
        SELECT * FROM unnest($1::double precision[], $2::text[], $3::text[],
                             $4::double precision[]) AS c(call_now, call_old, call_new, call_until)
        ORDER BY call_old
    ), old AS (
        UPDATE refresh_tokens t SET rotated_at = c.call_now
        FROM calls c, sessions s JOIN users u ON u.id = s.user_id
        WHERE t.token_hash = c.call_old AND s.sid = t.sid
            AND {_LIVE_BEARER.replace("$1", "c.call_now")}
        RETURNING c.call_now, c.call_new, c.call_until, {_VIEW_COLUMNS}
    ), new AS (
        INSERT INTO refresh_tokens (token_hash, sid, created_at, expires_at)
        SELECT call_new, t_sid, call_now,
            CASE WHEN call_until < s_expires_at THEN call_until ELSE s_expires_at END FROM old
    )
    SELECT * FROM old
"""  # noqa: S608
"""The live rotations of one turn (one or many), each ``(now, old, new, until)`` a row of the
arrays: the old token rotated if it is live, its successor inserted (expiring at ``until`` or
with its session), and the view read back. A token named twice is rotated once (an update's
row is updated once), for one of them. The calls come sorted by the old token's hash, so two replicas' batches meet
shared rows in one order as far as the plan keeps it; a deadlock PostgreSQL breaks fails that
batch (``StoreUnavailable``, a 503), and only refreshes of one token on two replicas at once
share rows."""
_BIND_SESSION = "UPDATE sessions SET jkt = $1, bound_at = $3 WHERE sid = $2 AND jkt IS NULL"
_VIEW = f"""
    SELECT {_VIEW_COLUMNS} FROM refresh_tokens t
    JOIN sessions s ON s.sid = t.sid
    JOIN users u ON u.id = s.user_id
"""  # noqa: S608
_REFRESH_VIEW = f"{_VIEW} WHERE t.token_hash = $1"
_LIVE_VIEW = f"{_VIEW} WHERE t.token_hash = $2 AND {_LIVE_BEARER}"
_INSERT_NEXT_TOKEN = f"""
    INSERT INTO refresh_tokens (token_hash, sid, created_at, expires_at)
    SELECT $3, s.sid, $1, {_next_expiry("s.expires_at")}
    FROM refresh_tokens t JOIN sessions s ON s.sid = t.sid WHERE t.token_hash = $2
"""  # noqa: S608


def _throttle_rows(count: int) -> str:
    """The throttle rows of ``count`` keys, given as ``$1``..``$count``."""
    marks = ", ".join(f"${i}" for i in range(1, count + 1))
    return f"SELECT * FROM login_throttle WHERE key IN ({marks})"  # noqa: S608


_THROTTLE_PLACEHOLDER = (
    "INSERT INTO login_throttle (key, failures, window_start, blocked_until) "
    "VALUES ($1, 0, 0, 0) ON CONFLICT (key) DO NOTHING"
)
_THROTTLE_UPSERT = (
    "INSERT INTO login_throttle (key, failures, window_start, blocked_until) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, "
    "window_start = excluded.window_start, blocked_until = excluded.blocked_until"
)


_SUCCESSOR_STORED = "SELECT 1 FROM refresh_tokens WHERE token_hash = $1"
"""Rows once a rotation's new token is stored: whether its transaction committed."""


def _stored_successor(rows: list[Row]) -> Statement:
    """Whether the rotations of one statement committed: the first one's new token is stored."""
    return (_SUCCESSOR_STORED, (rows[0]["call_new"],))


_Rotation = tuple[tuple[float, str, str, float], "asyncio.Future[list[Row]]"]


ROTATIONS_IN_FLIGHT = 2
"""Rotation statements (PostgreSQL) running at once. The live rotations asked for while as many
run wait for one to end and go in one statement together, so a surge takes a few connections and
statements, not one each. (Outside the service a statement's transaction cost the process 300 us
of round trips and pool work whatever it carried; under the bench's load no CPU saving showed
through the noise: docs/performance.md, "fifth pass".)"""


class SqlStore:
    def __init__(self, db: Database, wait_limit: float = 5.0) -> None:
        """``wait_limit``: the longest a live rotation waits for a statement to carry it
        (the database's call timeout), after which it is ``StoreUnavailable`` (try again)."""
        self._db = db
        self._rotations: list[_Rotation] | None = None
        """Live rotations gathering for the next statement, where one statement does many
        (PostgreSQL): the first asker runs them all."""
        self._rotation_slots = asyncio.Semaphore(ROTATIONS_IN_FLIGHT)
        self._wait_limit = wait_limit

    async def ping(self) -> None:
        async with self._db.connection() as conn:
            await conn.fetch("SELECT 1")

    async def close(self) -> None:
        await self._db.close()

    async def create_user(self, user: User) -> None:
        async with self._db.connection() as conn:
            if not await conn.insert(_INSERT_USER, *astuple(user)):
                raise UsernameTaken("that username is taken")

    async def get_user_by_username(self, username: str) -> User | None:
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT * FROM users WHERE username = $1", username)
        return _model(User, rows[0]) if rows else None

    async def ensure_user(self, user: User) -> None:
        async with self._db.connection() as conn:
            await conn.execute(f"{_INSERT_USER} ON CONFLICT DO NOTHING", *astuple(user))

    async def create_session(self, session: Session, token: RefreshToken) -> None:
        await self._db.execute_atomically(
            [(_INSERT_SESSION, astuple(session)), (_INSERT_TOKEN, astuple(token))]
        )

    async def find_refresh_token(self, token_hash: str) -> RefreshTokenView | None:
        async with self._db.connection() as conn:
            rows = await conn.fetch(_REFRESH_VIEW, token_hash)
        return _view(rows[0]) if rows else None

    async def rotate_refresh_token(
        self, old_hash: str, new: RefreshToken, now: float, *, bind: str | None = None
    ) -> bool:
        """The compare-and-set on ``rotated_at IS NULL`` and the new token's INSERT commit together,
        in one round trip (one statement) or one hand-off (one transaction); a binding, when
        asked, in the same transaction."""
        rotation: list[Statement]
        if self._db.writable_ctes:
            rotation = [(_ROTATE_IN_ONE_STATEMENT, (now, old_hash, *astuple(new)))]
        else:
            rotation = [(_MARK_ROTATED, (now, old_hash)), (_INSERT_TOKEN, astuple(new))]
        if bind is not None:
            rotation.append((_BIND_SESSION, (bind, new.sid, now)))
        return await self._db.execute_atomically(
            rotation, committed=(_SUCCESSOR_STORED, (new.token_hash,))
        )

    async def supersede_refresh_tokens(self, sid: str, new: RefreshToken, now: float) -> bool:
        """One transaction: the family's live tokens rotated (at least one), then ``new``.
        Where rows are locked (PostgreSQL), the session's row first: supersedes of one family
        then run one after the other, each reading after the last committed, where read
        committed's snapshot of an update racing several others could see no live token at all.
        (SQLite's write lock already runs them one after the other.)"""
        statements = [(_SUPERSEDE_LIVE, (now, sid)), (_INSERT_TOKEN, astuple(new))]
        if self._db.lock_rows:
            lock = f"SELECT 1 FROM sessions WHERE sid = $1{self._db.lock_rows}"  # noqa: S608
            statements.insert(0, (lock, (sid,)))
        return await self._db.execute_atomically(
            statements, committed=(_SUCCESSOR_STORED, (new.token_hash,))
        )

    async def rotate_live_refresh_token(
        self, old_hash: str, new_hash: str, now: float, expires_at: float
    ) -> RefreshTokenView | None:
        """One round trip (one statement) or one hand-off (one transaction: the guarded read, the
        compare-and-set and the new token's INSERT, under SQLite's write lock)."""
        args = (now, old_hash, new_hash, expires_at)
        if self._db.writable_ctes:
            rows = await self._rotate_together(args)
        else:  # SQLite runs the calls of one turn in one transaction itself
            rows = await self._db.fetch_atomically(
                (_LIVE_VIEW, (now, old_hash)),
                [(_MARK_ROTATED, (now, old_hash)), (_INSERT_NEXT_TOKEN, args)],
            )
        if not rows:
            return None
        view = _view(rows[0])
        return RefreshTokenView(replace(view.token, rotated_at=now), view.session, view.user)

    async def _rotate_together(self, args: tuple[float, str, str, float]) -> list[Row]:
        """The rotations asked for in one turn of the event loop, or while
        :data:`ROTATIONS_IN_FLIGHT` statements ran, in one statement: its round trips, the
        pool's connection and the driver's work were most of a refresh's store call (a refresh
        waits one turn more for it, or for a statement to end). The first asker runs them and
        answers the rest; if it fails, is cancelled or waits past ``wait_limit``, they fail
        alike (``StoreUnavailable``: try again)."""
        loop = asyncio.get_running_loop()
        if self._rotations is not None:
            waiter: asyncio.Future[list[Row]] = loop.create_future()
            self._rotations.append((args, waiter))
            return await waiter
        rotations: list[_Rotation] = []
        self._rotations = rotations
        try:
            await asyncio.sleep(0)  # one turn: the handlers that run in it ask too
            try:
                async with asyncio.timeout(self._wait_limit):
                    await self._rotation_slots.acquire()  # meanwhile, more join this statement
            except TimeoutError:
                raise StoreUnavailable("database unavailable: its rotations are stalled") from None
            try:
                if self._rotations is rotations:
                    self._rotations = None
                calls = sorted([args, *(asked for asked, _ in rotations)], key=lambda c: c[1])
                rows = await self._db.fetch_atomically(
                    (_ROTATE_LIVE_TOGETHER, tuple(list(col) for col in zip(*calls, strict=True))),
                    committed=_stored_successor,
                )
            finally:
                self._rotation_slots.release()
        except BaseException as exc:
            if self._rotations is rotations:
                self._rotations = None
            failed = exc if isinstance(exc, StoreUnavailable) else unavailable(exc)
            for _, waiter in rotations:
                if not waiter.done():
                    waiter.set_exception(failed)
            raise
        by_new_token = {row["call_new"]: [row] for row in rows}
        for (_, _, new_hash, _), waiter in rotations:
            if not waiter.done():
                waiter.set_result(by_new_token.get(new_hash, []))
        return by_new_token.get(args[2], [])

    async def session_is_live(self, sid: str, now: float) -> bool:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT 1 FROM sessions WHERE sid = $1 AND revoked_at IS NULL AND expires_at > $2",
                sid,
                now,
            )
        return bool(rows)

    async def revoke_session(
        self, sid: str, now: float, announce: Announce = no_announcement
    ) -> Revocation:
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                "UPDATE sessions SET revoked_at = $1 WHERE sid = $2 AND revoked_at IS NULL "
                "RETURNING sid, user_id",
                now,
                sid,
            )
            ended = [(row["sid"], row["user_id"]) for row in rows]
            return Revocation(ended, await _announce(conn, announce, ended, now) if ended else [])

    async def revoke_user_sessions(
        self, user_id: str, now: float, announce: Announce = no_announcement
    ) -> Revocation:
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                "UPDATE sessions SET revoked_at = $1 "
                "WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 RETURNING sid",
                now,
                user_id,
            )
            ended = sorted((row["sid"], user_id) for row in rows)
            return Revocation(ended, await _announce(conn, announce, ended, now))

    async def create_client(self, client: Client) -> bool:
        async with self._db.connection() as conn:
            return await conn.insert(_INSERT_CLIENT, *astuple(client))

    async def get_client(self, client_id: str) -> Client | None:
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT * FROM clients WHERE client_id = $1", client_id)
        return _model(Client, rows[0]) if rows else None

    async def list_clients(self) -> list[Client]:
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT * FROM clients ORDER BY client_id")
        return [_model(Client, row) for row in rows]

    async def rotate_client_secret(
        self, client_id: str, secret_encrypted: bytes, now: float, previous_expires_at: float
    ) -> bool:
        async with self._db.connection() as conn:
            changed = await conn.execute(
                _ROTATE_CLIENT, client_id, secret_encrypted, now, previous_expires_at
            )
        return changed == 1

    async def set_trusted_issuer(self, client_id: str, trusted: TrustedIssuer | None) -> bool:
        async with self._db.connection() as conn:
            changed = await conn.execute(_TRUST_ISSUER, client_id, *trusted_columns(trusted))
        return changed == 1

    async def delete_client(
        self, client_id: str, now: float, announce: Announce = no_announcement
    ) -> Revocation | None:
        """The client's row is locked first: an exchange that would add an app user waits on its
        foreign key, then finds the client gone."""
        async with self._db.transaction() as conn:
            if not await conn.fetch(
                f"SELECT 1 FROM clients WHERE client_id = $1{self._db.lock_rows}",  # noqa: S608
                client_id,
            ):
                return None
            rows = await conn.fetch(_CLIENT_LIVE_SESSIONS, client_id, now)
            await conn.execute("DELETE FROM clients WHERE client_id = $1", client_id)
            live = [_model(Session, row, "s") for row in rows]
            ended = [(session.sid, session.user_id) for session in live]
            return Revocation(ended, await _announce(conn, announce, ended, now) if ended else [])

    async def use_assertion(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        """One upsert: a live record refuses (no row changed); an expired one is taken over."""
        async with self._db.connection() as conn:
            return await conn.execute(_USE_ASSERTION, client_id, jti, expires_at, now) == 1

    async def list_signing_keys(self) -> list[StoredKey]:
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT * FROM signing_keys ORDER BY generation")
        return [_model(StoredKey, row) for row in rows]

    async def add_signing_key(self, key: StoredKey) -> bool:
        async with self._db.connection() as conn:
            return await conn.insert(_INSERT_KEY, *astuple(key))

    async def delete_signing_key(self, kid: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute("DELETE FROM signing_keys WHERE kid = $1", kid)

    async def withdraw_signing_key(self, kid: str, now: float) -> bool:
        return await self._db.execute_atomically(
            [
                (_RECORD_WITHDRAWN, (kid, now)),
                ("DELETE FROM signing_keys WHERE kid = $1", (kid,)),
            ]
        )

    async def list_withdrawn_keys(self) -> list[WithdrawnKey]:
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT * FROM withdrawn_keys ORDER BY withdrawn_at, kid")
        return [_model(WithdrawnKey, row) for row in rows]

    async def read_throttle(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        ordered = sorted(set(keys))
        async with self._db.connection() as conn:
            rows = await conn.fetch(_throttle_rows(len(ordered)), *ordered)
        found = {row["key"]: _model(ThrottleState, row) for row in rows}
        return {key: found.get(key, ThrottleState()) for key in keys}

    async def update_throttle(
        self, keys: Sequence[str], update: ThrottleUpdate
    ) -> dict[str, ThrottleState]:
        """Placeholder rows first, so there is a row to lock; rows locked in key order, so two
        replicas updating overlapping keys queue instead of deadlocking.

        A placeholder finds an existing row and leaves it; another replica's purge may delete that
        row before the locking read (PostgreSQL's read committed). Placing the placeholders again
        then inserts rows of this transaction's own, which no purge can see."""
        ordered = sorted(set(keys))
        locking = _throttle_rows(len(ordered)) + f" ORDER BY key{self._db.lock_rows}"
        async with self._db.transaction() as conn:
            rows: list[Row] = []
            while len(rows) < len(ordered):
                await conn.executemany(_THROTTLE_PLACEHOLDER, [(key,) for key in ordered])
                rows = await conn.fetch(locking, *ordered)
            written = update({row["key"]: _model(ThrottleState, row) for row in rows})
            if written:
                await conn.executemany(
                    _THROTTLE_UPSERT,
                    [(key, *astuple(state)) for key, state in written.items()],
                )
        return written

    async def add_outbox(self, topic: str, payload: str, now: float) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO outbox (topic, payload, created_at) VALUES ($1, $2, $3)",
                topic,
                payload,
                now,
            )

    async def outbox_batch(self, limit: int, due_by: float = math.inf) -> list[OutboxItem]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM outbox WHERE dead_at IS NULL AND next_attempt_at <= $1 "
                "ORDER BY id LIMIT $2",
                due_by,
                limit,
            )
        return [_model(OutboxItem, row) for row in rows]

    async def update_outbox(self, item: OutboxItem) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE outbox SET attempts = $2, last_error = $3, next_attempt_at = $4, "
                "dead_at = $5 WHERE id = $1",
                item.id,
                item.attempts,
                item.last_error,
                item.next_attempt_at,
                item.dead_at,
            )

    async def outbox_dead_letters(self, limit: int) -> list[OutboxItem]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT * FROM outbox WHERE dead_at IS NOT NULL ORDER BY id LIMIT $1", limit
            )
        return [_model(OutboxItem, row) for row in rows]

    async def outbox_backlog(self) -> OutboxBacklog:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT COUNT(CASE WHEN dead_at IS NULL THEN 1 END) AS waiting, "
                "MIN(CASE WHEN dead_at IS NULL THEN created_at END) AS oldest_at, "
                "COUNT(dead_at) AS dead FROM outbox"
            )
        return _model(OutboxBacklog, rows[0])

    async def delete_outbox(self, ids: Sequence[int]) -> None:
        async with self._db.transaction() as conn:
            await conn.executemany("DELETE FROM outbox WHERE id = $1", [(i,) for i in ids])

    async def keep_revocation(self, key: str, payload: str, until: float) -> None:
        async with self._db.connection() as conn:
            await conn.execute(_KEEP_REVOCATION, key, payload, until)

    async def live_revocations(self, now: float) -> list[str]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT payload FROM revocations WHERE until > $1 ORDER BY until", now
            )
        return [row["payload"] for row in rows]

    async def purge_expired(self, now: float) -> int:
        async with self._db.transaction() as conn:
            return (
                await conn.execute("DELETE FROM refresh_tokens WHERE expires_at < $1", now)
                + await conn.execute("DELETE FROM revocations WHERE until < $1", now)
                + await conn.execute("DELETE FROM sessions WHERE expires_at < $1", now)
                + await conn.execute("DELETE FROM used_assertions WHERE expires_at < $1", now)
                + await conn.execute(
                    # A login's update locks its rows in key order; a plain DELETE locks them in
                    # scan order and the two could deadlock (PostgreSQL aborts one: a 503). Rows
                    # held by a login are left for the next purge.
                    "DELETE FROM login_throttle WHERE key IN (SELECT key FROM login_throttle "  # noqa: S608
                    f"WHERE blocked_until < $1 AND window_start < $2{self._db.skip_locked_rows})",
                    now,
                    now - 86400,
                )
            )
