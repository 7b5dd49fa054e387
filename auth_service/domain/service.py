"""Registration, login, refresh-token rotation and revocation: the issuer's rules in one place."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from auth_service.domain.errors import (
    InvalidClientToken,
    InvalidCredentials,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    RefreshReuse,
    RegistrationClosed,
)
from auth_service.domain.models import RefreshToken, Session, User
from auth_service.domain.passwords import Passwords
from auth_service.domain.store import Store
from auth_service.domain.throttle import LoginThrottle
from auth_service.domain.tokens import Ticket, TokenIssuer
from shared.events import RevocationEvent, SessionRevoked, UserRevoked
from shared.jsonlog import audit

__all__ = ["AuthService", "IssuerPolicy", "TokenPair", "hash_refresh_token"]

USERNAME_RE = re.compile(r"[a-z0-9_.-]{3,64}")
PASSWORD_MIN, PASSWORD_MAX = 12, 256

Publish = Callable[[RevocationEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    refresh_token_ttl: int
    session_lifetime: int
    refresh_reuse_grace: int
    default_scope: str
    allow_registration: bool


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    scope: str


def hash_refresh_token(token: str) -> str:
    """Refresh tokens carry 256 random bits, so a fast hash is enough (no guessing to slow down)."""
    return hashlib.sha256(token.encode()).hexdigest()


def validate_username(username: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise InvalidRequest("username must be 3-64 characters of a-z, 0-9, '_', '.' or '-'")


def validate_password(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise InvalidRequest(f"password must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InvalidRequest(f"password must be at most {PASSWORD_MAX} characters")


class AuthService:
    def __init__(
        self,
        store: Store,
        tokens: TokenIssuer,
        passwords: Passwords,
        throttle: LoginThrottle,
        policy: IssuerPolicy,
        publish: Publish,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._passwords = passwords
        self._throttle = throttle
        self.policy = policy
        self._publish = publish
        self._clock = clock

    async def register(self, username: str, password: str, *, scope: str | None = None) -> User:
        if not self.policy.allow_registration:
            raise RegistrationClosed("registration is disabled on this server")
        validate_username(username)
        validate_password(password)
        user = User(
            id=str(uuid.uuid4()),
            username=username,
            password_hash=await self._passwords.hash(password),
            scope=self.policy.default_scope if scope is None else scope,
            created_at=self._clock(),
        )
        await self._store.create_user(user)
        audit("user_registered", user_id=user.id, username=username)
        return user

    async def login(self, username: str, password: str, *, address: str) -> TokenPair:
        now = self._clock()
        reservation = await self._throttle.reserve(username, address, now)
        user = await self._store.get_user_by_username(username)
        ok = await self._passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok:
            audit("login_failed", username=username, address=address)
            raise InvalidCredentials("invalid username or password")
        await self._throttle.succeeded(reservation)
        sid = str(uuid.uuid4())
        session = Session(sid, user.id, user.scope, now, now + self.policy.session_lifetime)
        secret, record = self._new_refresh_token(session, now)
        pair = self._pair(user, session, secret, record, user.scope, now)
        await self._store.create_session(session, record)
        audit("login_ok", user_id=user.id, sid=sid, address=address)
        return pair

    async def refresh(self, refresh_token: str, *, scope: str | None = None) -> TokenPair:
        now = self._clock()
        view = await self._store.find_refresh_token(hash_refresh_token(refresh_token))
        if view is None:
            raise InvalidGrant("the refresh token is unknown")
        token, session = view.token, view.session
        if session.revoked_at is not None:
            audit("refresh_refused", sid=session.sid, reason="revoked")
            raise InvalidGrant("the session was revoked")
        if token.expires_at <= now or session.expires_at <= now:
            raise InvalidGrant("the refresh token has expired")
        if token.rotated_at is not None:
            await self._reused(session, now - token.rotated_at, now)
        granted = self._narrow_scope(session.scope, scope)
        user = view.user
        secret, record = self._new_refresh_token(session, now)
        pair = self._pair(user, session, secret, record, granted, now)
        if not await self._store.rotate_refresh_token(token.token_hash, record, now):
            audit("refresh_race_lost", sid=session.sid)
            raise RefreshReuse("the refresh token was already used", family_revoked=False)
        audit("refresh_ok", user_id=user.id, sid=session.sid)
        return pair

    async def _reused(self, session: Session, since_rotation: float, now: float) -> None:
        if since_rotation <= self.policy.refresh_reuse_grace:
            audit("refresh_reuse_in_grace", sid=session.sid, user_id=session.user_id)
            raise RefreshReuse("the refresh token was already used", family_revoked=False)
        await self._revoke_session(session.sid, session.user_id, now, reason="reuse_detected")
        audit("refresh_reuse_detected", sid=session.sid, user_id=session.user_id)
        raise RefreshReuse(
            "the refresh token was already used; the session is revoked", family_revoked=True
        )

    def ticket_for_access_token(self, access_token: str) -> Ticket:
        """A WebSocket ticket bound to a live access token (and expiring no later than it)."""
        return self._tokens.issue_ticket(self._tokens.verify(access_token), self._clock())

    async def ticket_for_refresh_token(self, refresh_token: str) -> Ticket:
        """A ticket for a browser holding only its session cookie: bound to that session, and as
        short-lived as an access token issued now would be. Nothing is rotated."""
        now = self._clock()
        view = await self._store.find_refresh_token(hash_refresh_token(refresh_token))
        if view is None or view.token.rotated_at is not None:
            raise InvalidGrant("the refresh token is not current")
        session = view.session
        if session.revoked_at is not None or min(view.token.expires_at, session.expires_at) <= now:
            raise InvalidGrant("the session has ended")
        access = self._tokens.access_claims(
            user=view.user, sid=session.sid, scope=session.scope, now=now
        )
        return self._tokens.issue_ticket(access, now)

    async def logout_with_access_token(self, access_token: str, *, everywhere: bool) -> None:
        claims = self._tokens.verify(access_token)
        await self._logout(str(claims["sid"]), str(claims["sub"]), everywhere=everywhere)

    async def logout_with_refresh_token(self, refresh_token: str, *, everywhere: bool) -> None:
        view = await self._store.find_refresh_token(hash_refresh_token(refresh_token))
        if view is None:
            raise InvalidGrant("the refresh token is unknown")
        await self._logout(view.session.sid, view.session.user_id, everywhere=everywhere)

    async def revoke(self, token: str) -> None:
        """RFC 7009: revoke the session behind a refresh or access token; unknown tokens are fine."""
        now = self._clock()
        view = await self._store.find_refresh_token(hash_refresh_token(token))
        if view is not None:
            await self._revoke_session(view.session.sid, view.session.user_id, now, reason="revoke")
            return
        try:
            claims = self._tokens.verify(token, verify_exp=False)
        except InvalidClientToken:
            return
        await self._revoke_session(str(claims["sid"]), str(claims["sub"]), now, reason="revoke")

    async def _logout(self, sid: str, user_id: str, *, everywhere: bool) -> None:
        now = self._clock()
        if not everywhere:
            await self._revoke_session(sid, user_id, now, reason="logout")
            return
        sids = set(await self._store.revoke_user_sessions(user_id, now)) | {sid}
        until = int(now) + self._tokens.ttl
        for revoked in sorted(sids):
            await self._publish(SessionRevoked(sid=revoked, sub=user_id, until=until))
        await self._publish(UserRevoked(sub=user_id, issued_before=int(now), until=until))
        audit("logout_all", user_id=user_id, sessions=len(sids))

    async def _revoke_session(self, sid: str, user_id: str, now: float, *, reason: str) -> None:
        await self._store.revoke_session(sid, now)
        await self._publish(SessionRevoked(sid=sid, sub=user_id, until=int(now) + self._tokens.ttl))
        audit("session_revoked", sid=sid, user_id=user_id, reason=reason)

    def _new_refresh_token(self, session: Session, now: float) -> tuple[str, RefreshToken]:
        secret = secrets.token_urlsafe(32)
        expires_at = min(now + self.policy.refresh_token_ttl, session.expires_at)
        return secret, RefreshToken(hash_refresh_token(secret), session.sid, now, expires_at)

    @staticmethod
    def _narrow_scope(granted: str, requested: str | None) -> str:
        if requested is None:
            return granted
        allowed, wanted = set(granted.split()), set(requested.split())
        if not wanted <= allowed:
            raise InvalidScope("the requested scope exceeds the session's scope")
        return " ".join(s for s in granted.split() if s in wanted)

    def _pair(
        self,
        user: User,
        session: Session,
        secret: str,
        record: RefreshToken,
        scope: str,
        now: float,
    ) -> TokenPair:
        """Sign before storing, so a failed signature never leaves a stored, unusable token."""
        access = self._tokens.issue(user=user, sid=session.sid, scope=scope, now=now)
        return TokenPair(
            access_token=access.token,
            expires_in=access.expires_at - int(now),
            refresh_token=secret,
            refresh_expires_in=int(record.expires_at - now),
            scope=scope,
        )
