"""An in-memory :class:`~auth_service.domain.store.Store` for the domain's fast unit tests.

It lives with the tests, not in ``auth_service``: it is neither durable nor shared between
replicas, so shipping it would only invite a deployment that silently loses its throttle and
revocations. The store contract suite runs it beside SQLite and PostgreSQL, so it behaves like them.
Each method runs without an ``await`` between its reads and writes, which makes it atomic on one loop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace

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
)
from auth_service.domain.store import Announce, Revocation, ThrottleUpdate, no_announcement

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        self.tokens: dict[str, RefreshToken] = {}
        self.keys: dict[str, StoredKey] = {}
        self.withdrawn: dict[str, WithdrawnKey] = {}
        self.throttle: dict[str, ThrottleState] = {}
        self.outbox: dict[int, OutboxItem] = {}
        self._outbox_ids = itertools.count(1)
        self.clients: dict[str, Client] = {}
        self.assertions: dict[tuple[str, str], float] = {}
        self.revocations: dict[str, tuple[str, float]] = {}

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def create_user(self, user: User) -> None:
        if any(u.username == user.username for u in self.users.values()):
            raise UsernameTaken("that username is taken")
        self.users[user.id] = user

    async def get_user_by_username(self, username: str) -> User | None:
        return next((u for u in self.users.values() if u.username == username), None)

    async def ensure_user(self, user: User) -> None:
        if user.id not in self.users and user.username not in self._usernames():
            self.users[user.id] = user

    def _usernames(self) -> set[str]:
        return {u.username for u in self.users.values()}

    async def create_session(self, session: Session, token: RefreshToken) -> None:
        self.sessions[session.sid] = session
        self.tokens[token.token_hash] = token

    async def find_refresh_token(self, token_hash: str) -> RefreshTokenView | None:
        return self._view(token_hash)

    def _view(self, token_hash: str) -> RefreshTokenView | None:
        token = self.tokens.get(token_hash)
        if token is None:
            return None
        session = self.sessions[token.sid]
        return RefreshTokenView(token, session, self.users[session.user_id])

    async def rotate_refresh_token(
        self, old_hash: str, new: RefreshToken, now: float, *, bind: str | None = None
    ) -> bool:
        old = self.tokens.get(old_hash)
        if old is None or old.rotated_at is not None:
            return False
        if bind is not None and self.sessions[new.sid].jkt is not None:
            return False
        if new.token_hash in self.tokens:
            raise StoreUnavailable("the new token's hash is taken (a primary key would refuse it)")
        if bind is not None:
            self.sessions[new.sid] = replace(self.sessions[new.sid], jkt=bind, bound_at=now)
        self.tokens[old_hash] = replace(old, rotated_at=now)
        self.tokens[new.token_hash] = new
        return True

    async def supersede_refresh_tokens(self, sid: str, new: RefreshToken, now: float) -> bool:
        live = [t for t in self.tokens.values() if t.sid == sid and t.rotated_at is None]
        if not live:
            return False
        if new.token_hash in self.tokens:
            raise StoreUnavailable("the new token's hash is taken (a primary key would refuse it)")
        for token in live:
            self.tokens[token.token_hash] = replace(token, rotated_at=now)
        self.tokens[new.token_hash] = new
        return True

    async def rotate_live_refresh_token(
        self, old_hash: str, new_hash: str, now: float, expires_at: float
    ) -> RefreshTokenView | None:
        view = self._view(old_hash)
        if view is None:
            return None
        old, session, user = view.token, view.session, view.user
        if (
            old.rotated_at is not None
            or old.expires_at <= now
            or session.revoked_at is not None
            or session.expires_at <= now
            or session.jkt is not None
            or user.client_id is not None
        ):
            return None
        if new_hash in self.tokens:
            raise StoreUnavailable("the new token's hash is taken (a primary key would refuse it)")
        rotated = replace(old, rotated_at=now)
        self.tokens[old_hash] = rotated
        self.tokens[new_hash] = RefreshToken(
            new_hash, session.sid, now, min(expires_at, session.expires_at)
        )
        return RefreshTokenView(rotated, session, user)

    async def session_is_live(self, sid: str, now: float) -> bool:
        session = self.sessions.get(sid)
        return session is not None and session.revoked_at is None and session.expires_at > now

    async def revoke_session(
        self, sid: str, now: float, announce: Announce = no_announcement
    ) -> Revocation:
        session = self.sessions.get(sid)
        if session is None or session.revoked_at is not None:
            return Revocation()
        ended = [(sid, session.user_id)]
        kept = self._announce(announce, ended, now)  # first: one that raises changes nothing
        self.sessions[sid] = replace(session, revoked_at=now)
        return Revocation(ended, kept)

    async def revoke_user_sessions(
        self, user_id: str, now: float, announce: Announce = no_announcement
    ) -> Revocation:
        revoked = [
            s.sid
            for s in self.sessions.values()
            if s.user_id == user_id and s.revoked_at is None and s.expires_at > now
        ]
        ended = [(sid, user_id) for sid in sorted(revoked)]
        kept = self._announce(announce, ended, now)  # first: one that raises changes nothing
        for sid in revoked:
            self.sessions[sid] = replace(self.sessions[sid], revoked_at=now)
        return Revocation(ended, kept)

    def _announce(
        self, announce: Announce, ended: Sequence[tuple[str, str]], now: float
    ) -> list[OutboxItem]:
        kept = []
        for item in list(announce(ended)):
            item_id = next(self._outbox_ids)
            kept.append(
                OutboxItem(item_id, item.topic, item.payload, now, next_attempt_at=item.due_at)
            )
            self.outbox[item_id] = kept[-1]
            if item.keep is not None:
                key, until = item.keep
                if key not in self.revocations or self.revocations[key][1] <= until:
                    self.revocations[key] = (item.payload, until)
        return kept

    async def create_client(self, client: Client) -> bool:
        if client.client_id in self.clients:
            return False
        self.clients[client.client_id] = client
        return True

    async def get_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    async def list_clients(self) -> list[Client]:
        return [self.clients[c] for c in sorted(self.clients)]

    async def rotate_client_secret(
        self, client_id: str, secret_encrypted: bytes, now: float, previous_expires_at: float
    ) -> bool:
        client = self.clients.get(client_id)
        if client is None:
            return False
        self.clients[client_id] = replace(
            client,
            secret_encrypted=secret_encrypted,
            secret_rotated_at=now,
            previous_secret_encrypted=client.secret_encrypted,
            previous_secret_expires_at=previous_expires_at,
        )
        return True

    async def set_trusted_issuer(self, client_id: str, trusted: TrustedIssuer | None) -> bool:
        client = self.clients.get(client_id)
        if client is None:
            return False
        self.clients[client_id] = client.trusting(trusted)
        return True

    async def delete_client(
        self, client_id: str, now: float, announce: Announce = no_announcement
    ) -> Revocation | None:
        if self.clients.pop(client_id, None) is None:
            return None
        users = {u.id for u in self.users.values() if u.client_id == client_id}
        gone = {sid for sid, s in self.sessions.items() if s.user_id in users}
        live = [
            self.sessions[sid]
            for sid in sorted(gone)
            if self.sessions[sid].revoked_at is None and self.sessions[sid].expires_at > now
        ]
        self.users = {i: u for i, u in self.users.items() if i not in users}
        self.sessions = {sid: s for sid, s in self.sessions.items() if sid not in gone}
        self.tokens = {h: t for h, t in self.tokens.items() if t.sid not in gone}
        ended = [(s.sid, s.user_id) for s in live]
        return Revocation(ended, self._announce(announce, ended, now) if ended else [])

    async def use_assertion(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        if self.assertions.get((client_id, jti), -math.inf) > now:
            return False
        self.assertions[client_id, jti] = expires_at
        return True

    async def list_signing_keys(self) -> list[StoredKey]:
        return sorted(self.keys.values(), key=lambda k: k.generation)

    async def add_signing_key(self, key: StoredKey) -> bool:
        if key.kid in self.keys or any(k.generation == key.generation for k in self.keys.values()):
            return False
        self.keys[key.kid] = key
        return True

    async def delete_signing_key(self, kid: str) -> None:
        self.keys.pop(kid, None)

    async def withdraw_signing_key(self, kid: str, now: float) -> bool:
        if kid not in self.keys or kid in self.withdrawn:
            return False
        self.withdrawn[kid] = WithdrawnKey(kid, self.keys.pop(kid).generation, now)
        return True

    async def list_withdrawn_keys(self) -> list[WithdrawnKey]:
        return sorted(self.withdrawn.values(), key=lambda k: (k.withdrawn_at, k.kid))

    async def read_throttle(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        return {key: self.throttle.get(key, ThrottleState()) for key in keys}

    async def update_throttle(
        self, keys: Sequence[str], update: ThrottleUpdate
    ) -> dict[str, ThrottleState]:
        written = update({key: self.throttle.get(key, ThrottleState()) for key in keys})
        self.throttle.update(written)
        return written

    async def add_outbox(self, topic: str, payload: str, now: float) -> None:
        item_id = next(self._outbox_ids)
        self.outbox[item_id] = OutboxItem(item_id, topic, payload, now)

    async def outbox_batch(self, limit: int, due_by: float = math.inf) -> list[OutboxItem]:
        due = [i for i in self._ordered() if i.dead_at is None and i.next_attempt_at <= due_by]
        return due[:limit]

    async def update_outbox(self, item: OutboxItem) -> None:
        stored = self.outbox.get(item.id)
        if stored is not None:
            self.outbox[item.id] = replace(
                stored,
                attempts=item.attempts,
                last_error=item.last_error,
                next_attempt_at=item.next_attempt_at,
                dead_at=item.dead_at,
            )

    async def outbox_dead_letters(self, limit: int) -> list[OutboxItem]:
        return [i for i in self._ordered() if i.dead_at is not None][:limit]

    async def outbox_backlog(self) -> OutboxBacklog:
        waiting = [i for i in self.outbox.values() if i.dead_at is None]
        return OutboxBacklog(
            waiting=len(waiting),
            oldest_at=min((i.created_at for i in waiting), default=None),
            dead=len(self.outbox) - len(waiting),
        )

    def _ordered(self) -> list[OutboxItem]:
        return [self.outbox[i] for i in sorted(self.outbox)]

    async def delete_outbox(self, ids: Sequence[int]) -> None:
        for item_id in ids:
            self.outbox.pop(item_id, None)

    async def keep_revocation(self, key: str, payload: str, until: float) -> None:
        kept = self.revocations.get(key)
        if kept is None or kept[1] <= until:
            self.revocations[key] = (payload, until)

    async def live_revocations(self, now: float) -> list[str]:
        live = sorted((until, payload) for payload, until in self.revocations.values())
        return [payload for until, payload in live if until > now]

    async def purge_expired(self, now: float) -> int:
        """Counts like SQL's row counts: tokens that go with their session are not counted."""
        tokens = [h for h, t in self.tokens.items() if t.expires_at < now]
        sessions = {sid for sid, s in self.sessions.items() if s.expires_at < now}
        throttle = [
            k
            for k, s in self.throttle.items()
            if s.blocked_until < now and s.window_start < now - 86400
        ]
        self.tokens = {
            h: t for h, t in self.tokens.items() if h not in tokens and t.sid not in sessions
        }
        self.sessions = {sid: s for sid, s in self.sessions.items() if sid not in sessions}
        for key in throttle:
            del self.throttle[key]
        assertions = [key for key, until in self.assertions.items() if until < now]
        for key in assertions:
            del self.assertions[key]
        ended = [key for key, (_, until) in self.revocations.items() if until < now]
        for key in ended:
            del self.revocations[key]
        return len(tokens) + len(sessions) + len(throttle) + len(assertions) + len(ended)
