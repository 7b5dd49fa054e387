"""The storage the domain needs, as a protocol: SQLite, PostgreSQL and the tests' in-memory store
implement it, and one contract suite checks all three. Store errors surface as
:class:`~auth_service.domain.errors.StoreUnavailable`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
)

__all__ = ["Announce", "Announcement", "Revocation", "Store", "ThrottleUpdate", "no_announcement"]

ThrottleUpdate = Callable[[dict[str, ThrottleState]], dict[str, ThrottleState]]


@dataclass(frozen=True, slots=True)
class Announcement:
    """An event that announces a revocation, written to the outbox by the very transaction that
    revokes, so that no crash, outage or shutdown between the two loses it. ``due_at``: when a
    replica's outbox flush may take it (the request that made it delivers it first); ``keep``:
    the ledger record's key and expiry, kept in force for a ledger restore."""

    topic: str
    payload: str
    due_at: float
    keep: tuple[str, float] | None = None


Announce = Callable[[Sequence[tuple[str, str]]], Sequence[Announcement]]
"""The announcements of the families a transaction revokes, given their ``(sid, user_id)``."""


def no_announcement(ended: Sequence[tuple[str, str]]) -> Sequence[Announcement]:
    return ()


@dataclass(frozen=True, slots=True)
class Revocation:
    """What a revocation's transaction did: the families it ended (``(sid, user_id)``, by sid)
    and the announcements it wrote to the outbox, to deliver now and delete once delivered."""

    ended: list[tuple[str, str]] = field(default_factory=list)
    kept: list[OutboxItem] = field(default_factory=list)


class Store(Protocol):
    async def ping(self) -> None:
        """Raise :class:`~auth_service.domain.errors.StoreUnavailable` when the database cannot answer."""

    async def close(self) -> None: ...

    async def create_user(self, user: User) -> None:
        """Raise :class:`~auth_service.domain.errors.UsernameTaken` for a duplicate username."""

    async def get_user_by_username(self, username: str) -> User | None: ...

    async def ensure_user(self, user: User) -> None:
        """Insert ``user`` unless a user with its id exists (an app user's first exchange)."""

    async def create_session(self, session: Session, token: RefreshToken) -> None: ...

    async def find_refresh_token(self, token_hash: str) -> RefreshTokenView | None: ...

    async def rotate_refresh_token(
        self, old_hash: str, new: RefreshToken, now: float, *, bind: str | None = None
    ) -> bool:
        """Atomically mark ``old_hash`` rotated and store ``new``; with ``bind``, also bind the
        (unbound) session to that DPoP key.

        Returns False (and stores nothing) when ``old_hash`` was already rotated, or ``bind`` is
        given and the session is bound already: the compare-and-set that makes concurrent
        refreshes yield exactly one winner.
        """

    async def rotate_live_refresh_token(
        self, old_hash: str, new_hash: str, now: float, expires_at: float
    ) -> RefreshTokenView | None:
        """The optimistic refresh, atomically: when ``old_hash`` is live (not rotated, not
        expired, its session neither revoked nor past its lifetime) and asks nothing more (its
        session is not DPoP-bound, its user is this issuer's own: no client policy applies), mark
        it rotated and store ``new_hash`` for its session, expiring at ``expires_at`` or the
        session's end, whichever comes first. Returns the view (its token as rotated now), or
        None when any of that is not so: then nothing changed, and the caller looks up why.
        Concurrent calls on any replica have exactly one winner."""

    async def supersede_refresh_tokens(self, sid: str, new: RefreshToken, now: float) -> bool:
        """Mark every live token of family ``sid`` rotated and insert ``new``, atomically; False
        (nothing changed) when the family had no live token left (a concurrent rotation took it
        first). The refresh of a DPoP-bound family that proves its key with an earlier token: its
        holder's own client lost the answer to the rotation that made the live one."""

    async def session_is_live(self, sid: str, now: float) -> bool:
        """Whether the family is known, not revoked and within its lifetime (one query)."""

    async def revoke_session(
        self, sid: str, now: float, announce: Announce = no_announcement
    ) -> Revocation:
        """Revoke one family and write its announcements, in one transaction; nothing ended
        (and nothing written) when it was unknown or already revoked."""

    async def revoke_user_sessions(
        self, user_id: str, now: float, announce: Announce = no_announcement
    ) -> Revocation:
        """Revoke every live family of a user and write the announcements of all of them (asked
        for even when none was live: the user's own event), in one transaction."""

    async def create_client(self, client: Client) -> bool:
        """Insert a client; False when its ``client_id`` is taken."""

    async def get_client(self, client_id: str) -> Client | None: ...

    async def list_clients(self) -> list[Client]:
        """Every client, by ``client_id``."""

    async def rotate_client_secret(
        self, client_id: str, secret_encrypted: bytes, now: float, previous_expires_at: float
    ) -> bool:
        """Make ``secret_encrypted`` the client's secret and its current one the previous,
        valid until ``previous_expires_at``, in one statement; False for an unknown client."""

    async def set_trusted_issuer(self, client_id: str, trusted: TrustedIssuer | None) -> bool:
        """Make ``trusted`` the identity provider the client trusts (None: none), leaving every
        other column alone; False for an unknown client."""

    async def delete_client(
        self, client_id: str, now: float, announce: Announce = no_announcement
    ) -> Revocation | None:
        """Delete a client with its app users and their sessions, and write the announcements of
        the sessions that were live, atomically; None for an unknown client."""

    async def use_assertion(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        """Record a client's assertion ``jti`` as used until ``expires_at``; True only the first
        time while that record lasts, atomically on every replica (a unique key)."""

    async def list_signing_keys(self) -> list[StoredKey]: ...

    async def add_signing_key(self, key: StoredKey) -> bool:
        """Insert a key; False when its generation exists (another replica rotated first)."""

    async def delete_signing_key(self, kid: str) -> None: ...

    async def withdraw_signing_key(self, kid: str, now: float) -> bool:
        """Record ``kid`` as withdrawn and delete its key, atomically; False (and nothing changed)
        when no such key is stored (unknown, retired and deleted, or already withdrawn)."""

    async def list_withdrawn_keys(self) -> list[WithdrawnKey]:
        """Every withdrawn key, oldest withdrawal first."""

    async def read_throttle(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        """The throttle state of every key (an absent row as ``ThrottleState()``), read without
        a transaction or a lock: for a check that counts nothing."""

    async def update_throttle(
        self, keys: Sequence[str], update: ThrottleUpdate
    ) -> dict[str, ThrottleState]:
        """Read-modify-write the throttle rows of ``keys`` in one transaction, holding their locks.

        ``update`` gets every key's state (an absent row as ``ThrottleState()``) and returns the
        states to write, which are also returned (none: nothing is written). If it raises, nothing is written and the
        exception propagates. Concurrent calls on any replica never interleave on a key.
        """

    async def add_outbox(self, topic: str, payload: str, now: float) -> None:
        """Keep an event the bus could not take, to deliver it later."""

    async def keep_revocation(self, key: str, payload: str, until: float) -> None:
        """Keep a revocation in force until ``until`` (the ledger's record ``key``; of two for
        one key, the later), to write it to the ledger again if the ledger loses it."""

    async def live_revocations(self, now: float) -> list[str]:
        """The payloads of the revocations kept that are still in force at ``now``."""

    async def outbox_batch(self, limit: int, due_by: float = math.inf) -> list[OutboxItem]:
        """The oldest events still to deliver whose next attempt is due by ``due_by``, oldest
        first; dead letters are left out."""

    async def update_outbox(self, item: OutboxItem) -> None:
        """Write an event's delivery state: attempts, last error, next attempt, dead-letter time."""

    async def outbox_dead_letters(self, limit: int) -> list[OutboxItem]:
        """Events moved aside after their last attempt, oldest first."""

    async def outbox_backlog(self) -> OutboxBacklog: ...

    async def delete_outbox(self, ids: Sequence[int]) -> None: ...

    async def purge_expired(self, now: float) -> int:
        """Delete expired refresh tokens, families, used assertions and stale throttle rows;
        returns rows removed."""
