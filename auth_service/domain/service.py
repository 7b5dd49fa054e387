"""Registration, login, token exchange, refresh-token rotation and revocation: the issuer's rules
in one place."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, Protocol

from auth_service.domain.clients import TOKEN_EXCHANGE, ClientRegistry, client_of, subject
from auth_service.domain.dpop import DpopGate, DpopPolicy, Presented
from auth_service.domain.errors import (
    AccessDenied,
    InvalidClient,
    InvalidClientToken,
    InvalidCredentials,
    InvalidDpopProof,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidSubjectToken,
    IssuerUnavailable,
    RefreshReuse,
    RegistrationClosed,
    SessionEnded,
    StoreUnavailable,
    UnauthorizedClient,
    UnprovenKey,
)
from auth_service.domain.exchange import (
    APP_USER_ID_RE,
    SUBJECT_TOKEN_TYPE,
    Assertion,
    allowed_details,
    allowed_scope,
    kept_details,
    scope_tokens,
    verify_assertion,
)
from auth_service.domain.federation import (
    PROVIDER_TOKEN_TYPES,
    IssuerKeys,
    unverified_issuer,
    verify_provider_token,
)
from auth_service.domain.models import (
    Client,
    OutboxItem,
    RefreshToken,
    RefreshTokenView,
    Session,
    User,
)
from auth_service.domain.passwords import Passwords
from auth_service.domain.store import Announcement, Store
from auth_service.domain.throttle import LoginThrottle
from auth_service.domain.tokens import Ticket, TokenIssuer, bound_key
from realtime_gateway_protocol.access_token import AuthorizationDetail
from realtime_gateway_protocol.events import RevocationEvent, SessionRevoked, UserRevoked
from shared.dpop import ALGORITHMS
from shared.jsonlog import audit, fingerprint

__all__ = ["AuthService", "IssuerPolicy", "Publish", "TokenPair", "hash_refresh_token"]

USERNAME_RE = re.compile(r"[a-z0-9_.-]{3,64}")
PASSWORD_MIN, PASSWORD_MAX = 12, 256


class Publish(Protocol):
    """How revocations are announced (:class:`~auth_service.domain.outbox.EventPublisher`): the
    outbox rows of their events, written by the revoking transaction, then delivered."""

    def announcements(self, events: Sequence[RevocationEvent]) -> Sequence[Announcement]: ...

    async def deliver(self, kept: Sequence[OutboxItem]) -> None: ...


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
    authorization_details: list[AuthorizationDetail] | None = None
    """RFC 9396 section 7: the details granted, when the session has any."""
    jkt: str | None = None
    """The DPoP key the access token is bound to (its ``cnf.jkt``), if it is."""

    @property
    def token_type(self) -> str:
        """RFC 9449 section 5: ``DPoP`` for a bound access token."""
        return "Bearer" if self.jkt is None else "DPoP"


def _replay_owner(client: Client, assertion: Assertion) -> str:
    """Whose ``jti``s a subject token's is unique among: the client's own assertions', or (a
    client id holds no space) those of one provider's tokens exchanged by the client."""
    if assertion.issuer is None:
        return client.client_id
    return f"{client.client_id} {assertion.issuer}"


@contextmanager
def _challenged(dpop_scheme: bool) -> Iterator[None]:
    """A token refused that came as ``Authorization: DPoP`` is answered with the DPoP challenge
    (RFC 9449 section 7.1), whatever was wrong with it: it read ``Bearer`` for a token that was
    not ours, had expired, or whose session had ended."""
    try:
        yield
    except InvalidClientToken as exc:
        if not dpop_scheme or exc.dpop:
            raise
        raise InvalidClientToken(exc.description, code=exc.code, dpop=True) from None


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
        *,
        clients: ClientRegistry,
        issuer_keys: IssuerKeys | None = None,
        dpop: DpopGate,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._passwords = passwords
        self._throttle = throttle
        self.policy = policy
        self._publish = publish
        self._clock = clock
        self.clients = clients
        self._issuer_keys = issuer_keys
        """Trusted identity providers' keys; None where nothing is exchanged (the CLI)."""
        self.dpop = dpop

    async def register(self, username: str, password: str, *, scope: str | None = None) -> User:
        if not self.policy.allow_registration:
            raise RegistrationClosed("registration is disabled on this server")
        validate_username(username)
        validate_password(password)
        user = User(
            id=str(uuid.uuid4()),
            username=username,
            password_hash=await self._passwords.hash(password),
            scope=self.policy.default_scope if scope is None else " ".join(scope_tokens(scope)),
            created_at=self._clock(),
        )
        await self._store.create_user(user)
        audit("user_registered", user_id=user.id, username=username)
        return user

    async def login(
        self, username: str, password: str, *, address: str, proof: Presented | None = None
    ) -> TokenPair:
        """A new session, bound to the key ``proof`` proves when it counts (``AUTH_DPOP``). The
        proof is checked before the password, so a nonce round trip costs no password check."""
        jkt = await self.dpop.key(proof)
        now = self._clock()
        reservation = await self._throttle.reserve(username, address, now)
        user = await self._store.get_user_by_username(username)
        ok = await self._passwords.verify(user.password_hash if user else None, password)
        if user is None:
            # What was typed may be a password typed into the wrong field: log a fingerprint.
            audit(
                "login_failed",
                username_hash=fingerprint(username),
                address=address,
                reason="unknown_user",
            )
            raise InvalidCredentials("invalid username or password")
        if not ok:
            audit(
                "login_failed",
                user_id=user.id,
                username=user.username,
                address=address,
                reason="wrong_password",
            )
            raise InvalidCredentials("invalid username or password")
        await self._throttle.succeeded(reservation)
        pair, sid = await self._start_session(user, user.scope, now, jkt=jkt)
        audit("login_ok", user_id=user.id, sid=sid, address=address)
        return pair

    async def exchange(
        self,
        client: Client,
        subject_token: str,
        subject_token_type: str = SUBJECT_TOKEN_TYPE,
        *,
        scope: str | None = None,
        authorization_details: object = None,
        proof: Presented | None = None,
    ) -> TokenPair:
        """RFC 8693: a session for the app user the subject token names, as a password login makes
        one for a local user, bound to the key ``proof`` proves when the client's policy lets it
        count. The token is the client's own assertion or, for a client that trusts an identity
        provider, that provider's token. Everything is checked before the token's ``jti`` is
        spent, so a request refused for its scope (or a nonce), or answered 503 because this
        replica cannot sign, can be sent again with the same token. (A database failure after
        the jti is spent still spends it.)"""
        now = self._clock()
        if TOKEN_EXCHANGE not in client.grant_types.split():
            raise UnauthorizedClient("this client is not registered for token exchange")
        jkt = await self.dpop.key(proof, policy=_client_policy(client))
        assertion = await self._verified_subject(client, subject_token, subject_token_type, now)
        granted = allowed_scope(client, scope, self.policy.default_scope)
        details = allowed_details(client, authorization_details)
        if not self._tokens.can_sign(now):
            # Before the jti is spent: the 503 asks for a retry, which a spent jti refuses as a
            # replay (and a provider's token cannot be made again by the backend).
            raise StoreUnavailable("no signing key this replica can use")
        if assertion.jti is not None and not await self._store.use_assertion(
            _replay_owner(client, assertion), assertion.jti, assertion.replayable_until, now
        ):
            audit("assertion_refused", client_id=client.client_id, reason="replayed")
            what = "assertion" if assertion.issuer is None else "subject token"
            raise InvalidSubjectToken(f"the {what} was used before (its jti works once)")
        sub = subject(client.client_id, assertion.user_id)
        user = User(sub, sub, "", "", now, client.client_id)
        try:
            await self._store.ensure_user(user)
            pair, sid = await self._start_session(
                user, granted, now, details, assertion.username, jkt=jkt
            )
        except StoreUnavailable:
            # `clients delete` committed since the client authenticated: the user's row (or the
            # session's) now names a client or user that is gone, which the database refuses.
            # That is this client failing to authenticate, not a database to retry.
            if await self._store.get_client(client.client_id) is None:
                raise InvalidClient("the client was deleted") from None
            raise
        audit(
            "token_exchanged",
            client_id=client.client_id,
            user_id=sub,
            sid=sid,
            issuer=assertion.issuer or client.client_id,
        )
        return pair

    async def _verified_subject(
        self, client: Client, token: str, token_type: str, now: float
    ) -> Assertion:
        """The client's assertion (``...:jwt`` whose ``iss`` is the client), or its trusted
        provider's token (``...:id_token``, ``...:access_token``, or ``...:jwt`` from it)."""
        trusted = client.trusted
        from_provider = token_type in PROVIDER_TOKEN_TYPES or (
            trusted is not None and unverified_issuer(token) == trusted.issuer
        )
        try:
            if not from_provider:
                return verify_assertion(
                    token,
                    client_id=client.client_id,
                    secrets=self.clients.secrets(client, now),
                    audience=self._tokens.issuer,
                    now=now,
                )
            if trusted is None:
                raise InvalidRequest(
                    f"a subject_token of type {token_type} is an identity provider's: this "
                    "client trusts none (`clients update --trust-issuer`)"
                )
            if self._issuer_keys is None:
                raise IssuerUnavailable("this process fetches no identity provider's keys")
            return await verify_provider_token(token, trusted, self._issuer_keys, now=now)
        except InvalidGrant as exc:
            audit("assertion_refused", client_id=client.client_id, reason=exc.description)
            raise InvalidSubjectToken(exc.description) from None

    async def _start_session(
        self,
        user: User,
        scope: str,
        now: float,
        details: str | None = None,
        username: str | None = None,
        *,
        jkt: str | None = None,
    ) -> tuple[TokenPair, str]:
        sid = str(uuid.uuid4())
        expires_at = now + self.policy.session_lifetime
        bound_at = None if jkt is None else now
        session = Session(
            sid, user.id, scope, now, expires_at, None, details, username, jkt, bound_at
        )
        secret, record = self._new_refresh_token(session, now)
        pair = self._pair(user, session, secret, record, scope, now, jkt)
        await self._store.create_session(session, record)
        return pair, sid

    async def refresh(
        self,
        refresh_token: str,
        *,
        scope: str | None = None,
        client: Client | None = None,
        proof: Presented | None = None,
        authorization_details: object = None,
    ) -> TokenPair:
        """Rotate a refresh token. Anyone holding it may (an exchanged session's tokens are
        handed to the app's browser, a public client); a confidential client that does
        authenticate may only refresh its own users' sessions. A bound session's token needs a
        proof of its key, checked before anything else happens to the family (a stolen token
        replayed from elsewhere revokes nothing); an unbound session is bound by the first
        refresh that proves a key where the policy lets it count.

        A request with nothing to check beyond the token (no client, proof, scope or
        ``authorization_details``, which may only repeat the session's) is first
        tried in one store call that rotates the token only if it is live and asks for nothing
        more (:meth:`Store.rotate_live_refresh_token`); anything else, a refusal included, takes
        the lookup below, which explains it."""
        now = self._clock()
        token_hash = hash_refresh_token(refresh_token)
        if client is None and proof is None and scope is None and authorization_details is None:
            pair = await self._rotate_live(token_hash, now)
            if pair is not None:
                return pair
        view = await self._store.find_refresh_token(token_hash)
        if view is None:
            raise SessionEnded("the refresh token is unknown")
        token, session = view.token, view.session
        try:
            if client is not None and client_of(view.user.id) != client.client_id:
                raise InvalidGrant("the refresh token was not issued to this client")
            self._check_session(view, now)
        except InvalidGrant as exc:
            audit("refresh_refused", sid=session.sid, reason=exc.description)
            raise
        if token.rotated_at is not None and session.issued_unbound(token):
            # A bearer token's reuse: judged before any key, or a thief who bound the family to
            # a key of his own since would have turned its owner's replay into a key refusal.
            await self._reused(session, now - token.rotated_at, now)
        jkt = await self._proven_key(view, proof, "refresh")
        # From here a token issued bound comes with a proof of the session's key, which only its
        # holder can make (the browser's key cannot even be exported): an earlier token of such a
        # family is its holder's own client, which lost a rotation's answer (a tab closed while
        # its refresh was out, a connection cut), never a thief. It supersedes the live token
        # rather than revoking the family, which logged every tab out as a theft.
        by_key_holder = not session.issued_unbound(token)
        granted = self._narrow_scope(session.scope, scope)
        kept_details(session.authorization_details, authorization_details)
        user = view.user
        secret, record = self._new_refresh_token(session, now)
        pair = self._pair(user, session, secret, record, granted, now, jkt)
        if token.rotated_at is not None:  # issued bound: a bearer one's reuse was judged above
            return await self._supersede(session, user, record, pair, now)
        bind = jkt if session.jkt is None else None
        if not await self._store.rotate_refresh_token(token.token_hash, record, now, bind=bind):
            audit("refresh_race_lost", sid=session.sid)
            if by_key_holder:
                return await self._supersede(session, user, record, pair, now)
            await self._reused(session, 0.0, now)  # revokes under a strict grace
        audit("refresh_ok", user_id=user.id, sid=session.sid)
        return pair

    async def _supersede(
        self, session: Session, user: User, record: RefreshToken, pair: TokenPair, now: float
    ) -> TokenPair:
        """The refresh of a bound family from an earlier token, proven with its key: ``record``
        takes the place of every live token of the family, whose answer its holder never got.
        Tried twice: a rotation committing meanwhile on another connection leaves no live token
        this transaction's snapshot can see (PostgreSQL), and the next one sees its successor."""
        for _ in range(2):
            if await self._store.supersede_refresh_tokens(session.sid, record, now):
                audit("refresh_superseded", user_id=user.id, sid=session.sid)
                return pair
        audit("refresh_race_lost", sid=session.sid)
        raise RefreshReuse("the refresh token was already used", family_revoked=False)

    async def _rotate_live(self, token_hash: str, now: float) -> TokenPair | None:
        """The common refresh in one store call, or None (nothing changed) when it is not that.
        Under ``AUTH_DPOP=required`` a bearer refresh is refused, so it never is. The token is
        rotated before the access token is signed, so this is not tried without a signing key
        (the lookup then refuses as before, signing before it stores anything)."""
        if self.dpop.policy is DpopPolicy.REQUIRED or not self._tokens.can_sign(now):
            return None
        secret = secrets.token_urlsafe(32)
        new_hash = hash_refresh_token(secret)
        view = await self._store.rotate_live_refresh_token(
            token_hash, new_hash, now, now + self.policy.refresh_token_ttl
        )
        if view is None:
            return None
        session, user = view.session, view.user
        record = RefreshToken(new_hash, session.sid, now, self._refresh_expiry(session, now))
        pair = self._pair(user, session, secret, record, session.scope, now)
        audit("refresh_ok", user_id=user.id, sid=session.sid)
        return pair

    async def _proven_key(
        self, view: RefreshTokenView, proof: Presented | None, use: str
    ) -> str | None:
        """The key the request proves for this refresh token: the session's own when it is bound
        (a missing proof or another key is ``invalid_grant`` and audited as an attack, RFC 9449
        section 5), else whatever the applicable policy lets count."""
        bound = view.session.jkt
        policy = await self._policy_of(view.user)
        jkt = await self.dpop.key(proof, policy=policy, bound=bound)
        if bound is not None and jkt != bound:
            reason = "no DPoP proof" if jkt is None else "a proof of another key"
            audit(
                "refresh_token_key_refused",
                sid=view.session.sid,
                user_id=view.user.id,
                use=use,
                reason=reason,
            )
            raise UnprovenKey(f"this refresh token is DPoP-bound: {reason} is not enough")
        return jkt

    async def dpop_algorithms(self) -> list[str]:
        """RFC 9449 section 5.1's ``dpop_signing_alg_values_supported``: the proof algorithms
        while any token may be bound, under ``AUTH_DPOP`` or a client's own policy (with
        ``AUTH_DPOP=off`` a client that requires DPoP still gets bound tokens, and its backend
        discovers the algorithms here). Empty when no token can be."""
        if self.dpop.algorithms:
            return self.dpop.algorithms
        clients = await self._store.list_clients()
        if any(_client_policy(c) not in (None, DpopPolicy.OFF) for c in clients):
            return list(ALGORITHMS)
        return []

    async def _policy_of(self, user: User) -> DpopPolicy:
        """The DPoP policy of a user's tokens: their client's own, else ``AUTH_DPOP``."""
        client = await self._store.get_client(user.client_id) if user.client_id else None
        return (_client_policy(client) if client else None) or self.dpop.policy

    async def _reused(self, session: Session, since_rotation: float, now: float) -> NoReturn:
        grace = self.policy.refresh_reuse_grace
        # Strict (0) is strict: a reuse racing the rotation on another replica read its clock
        # before the winner wrote rotated_at, and its negative age is no grace.
        if grace > 0 and since_rotation <= grace:
            audit("refresh_reuse_in_grace", sid=session.sid, user_id=session.user_id)
            raise RefreshReuse("the refresh token was already used", family_revoked=False)
        await self._revoke_session(session.sid, session.user_id, now, reason="reuse_detected")
        audit("refresh_reuse_detected", sid=session.sid, user_id=session.user_id)
        raise RefreshReuse(
            "the refresh token was already used; the session is revoked", family_revoked=True
        )

    async def ticket_for_access_token(
        self, access_token: str, *, dpop_scheme: bool = False, proof: Presented | None = None
    ) -> Ticket:
        """A WebSocket ticket bound to a live access token (and expiring no later than it) of a
        live session (the gateway would refuse the ticket of a logged-out one), signed by the key
        that signed the token: the socket it opens is found by that key's withdrawal, as a socket
        opened with the token itself is. A DPoP-bound token must come with a proof of its key;
        the ticket carries the binding (``cnf``) to its socket."""
        now = self._clock()
        with _challenged(dpop_scheme):
            claims, kid = self._tokens.verified_with_kid(access_token)
            await self._check_presentation(claims, access_token, dpop_scheme, proof)
            if not await self._store.session_is_live(str(claims["sid"]), now):
                raise InvalidClientToken("the session was logged out or has ended")
        return self._tokens.issue_ticket(claims, now, kid)

    async def ticket_for_refresh_token(
        self, refresh_token: str, *, proof: Presented | None = None
    ) -> Ticket:
        """A ticket for a browser holding only its session cookie: bound to that session (and its
        DPoP key, which the request must prove), and as short-lived as an access token issued
        now would be. Nothing is rotated."""
        now = self._clock()
        view = await self._live_refresh_token(refresh_token, now)
        jkt = await self._proven_key(view, proof, "ws_ticket") if view.session.jkt else None
        access = self._tokens.access_claims(
            user=view.user, session=view.session, scope=view.session.scope, now=now, jkt=jkt
        )
        return self._tokens.issue_ticket(access, now)

    async def _check_presentation(
        self,
        claims: dict[str, object],
        access_token: str,
        dpop_scheme: bool,
        proof: Presented | None,
    ) -> None:
        """RFC 9449 section 7: a bound access token comes as ``Authorization: DPoP`` with a proof
        of its key whose ``ath`` is its hash; an unbound one as ``Bearer``. Refusals are 401 with
        a ``DPoP`` challenge."""
        bound = bound_key(claims)
        if bound is None:
            if dpop_scheme:
                raise InvalidClientToken(
                    "this access token is not DPoP-bound: send it as 'Authorization: Bearer'",
                    dpop=True,
                )
            return
        if not dpop_scheme:
            raise InvalidClientToken(
                "this access token is DPoP-bound: send it as 'Authorization: DPoP' with a "
                "DPoP proof",
                dpop=True,
            )
        try:
            jkt = await self.dpop.key(proof, bound=bound, access_token=access_token)
        except InvalidDpopProof as exc:
            raise InvalidClientToken(exc.description, code=exc.code, dpop=True) from None
        if jkt != bound:
            audit("access_token_key_refused", sid=claims.get("sid"), user_id=claims.get("sub"))
            raise InvalidClientToken(
                "the access token is DPoP-bound: the request needs a proof of its key",
                code=InvalidDpopProof.code,
                dpop=True,
            )

    def _check_session(self, view: RefreshTokenView, now: float) -> None:
        """Refuse a refresh token whose session is revoked or which has expired."""
        if view.session.revoked_at is not None:
            raise SessionEnded("the session was revoked")
        if view.token.expires_at <= now or view.session.expires_at <= now:
            raise SessionEnded("the refresh token has expired")

    async def _live_refresh_token(self, refresh_token: str, now: float) -> RefreshTokenView:
        """The refresh token's view, if it could still be exchanged: anything else is dead. A
        bound family's rotated token counts, as it does for a refresh: every caller then asks for
        a proof of the session's key (:meth:`_proven_key`), which only its holder can make, whose
        cookie may hold a token whose rotation's answer never arrived."""
        view = await self._store.find_refresh_token(hash_refresh_token(refresh_token))
        if view is None:
            raise SessionEnded("the refresh token is unknown")
        self._check_session(view, now)
        if view.token.rotated_at is not None and view.session.issued_unbound(view.token):
            raise InvalidGrant("the refresh token was already used")
        return view

    async def logout_with_access_token(
        self,
        access_token: str,
        *,
        everywhere: bool,
        dpop_scheme: bool = False,
        proof: Presented | None = None,
    ) -> None:
        """Log out the token's session (``everywhere``: and every other one of its user) while
        that session is live: the access token of a logged-out session ends nothing, nor does a
        bound one without a proof of its key."""
        with _challenged(dpop_scheme):
            claims = self._tokens.verify(access_token)
            await self._check_presentation(claims, access_token, dpop_scheme, proof)
            sid, user_id = str(claims["sid"]), str(claims["sub"])
            if not await self._revoke_session(sid, user_id, self._clock(), reason="logout"):
                raise InvalidClientToken("the session was already logged out")
        if everywhere:
            await self._logout_everywhere(user_id)

    async def logout_with_refresh_token(
        self, refresh_token: str, *, everywhere: bool, proof: Presented | None = None
    ) -> None:
        """The same with a refresh token, which must be live (not rotated, expired or revoked)
        and, when its session is bound, come with a proof of the session's key."""
        now = self._clock()
        view = await self._live_refresh_token(refresh_token, now)
        await self._proven_key(view, proof, "logout")
        session = view.session
        if not await self._revoke_session(session.sid, session.user_id, now, reason="logout"):
            raise InvalidGrant("the session was revoked")
        if everywhere:
            await self._logout_everywhere(session.user_id)

    async def revoke(
        self, token: str, *, client: Client | None = None, proof: Presented | None = None
    ) -> None:
        """RFC 7009: revoke the session behind a live refresh or access token. Unknown, expired,
        rotated or already revoked tokens are fine and change nothing (no new event either), and
        so is a token of another client's users when a confidential client asks (section 2.1),
        and a DPoP-bound token without a proof of its key (unless its own confidential client
        asks): holding a bound token is not enough to end its session."""
        now = self._clock()
        try:
            session = (await self._live_refresh_token(token, now)).session
            sid, user_id, bound = session.sid, session.user_id, session.jkt
        except InvalidGrant:
            try:
                claims = self._tokens.verify(token)
            except InvalidClientToken:
                return
            sid, user_id, bound = str(claims["sid"]), str(claims["sub"]), bound_key(claims)
        if client is not None:
            if client_of(user_id) == client.client_id:
                await self._revoke_session(sid, user_id, now, reason="revoke")
            return
        if bound is not None and await self.dpop.key(proof, bound=bound) != bound:
            audit("revoke_key_refused", sid=sid, user_id=user_id)
            return
        await self._revoke_session(sid, user_id, now, reason="revoke")

    async def revoke_app_user(self, client: Client, sub: str) -> int:
        """End every session of one of the client's users, as a logout everywhere would; returns
        how many were live (0 for a user never seen)."""
        if client_of(sub) != client.client_id:
            raise AccessDenied(
                f"sub is not a user of client {client.client_id!r} (theirs look like "
                f"'{subject(client.client_id, '<user id>')}')"
            )
        if not APP_USER_ID_RE.fullmatch(sub.partition(":")[2]):
            # No such user can exist: answering 0 would tell the app its call did its work.
            raise InvalidRequest(
                "sub's user id must be 1-80 characters of A-Z a-z 0-9 _ . : @ - (as assertions')"
            )
        ended = await self._revoke_user(sub)
        audit("app_user_revoked", client_id=client.client_id, user_id=sub, sessions=ended)
        return ended

    async def delete_client(self, client_id: str) -> int:
        """Delete a client with its users; their live sessions end and are announced, so their
        sockets close. Returns how many sessions ended."""
        now = self._clock()
        revocation = await self._store.delete_client(client_id, now, self._announce(now))
        if revocation is None:
            raise InvalidRequest(f"no client {client_id!r} (see `clients list`)")
        await self._publish.deliver(revocation.kept)
        audit("client_deleted", client_id=client_id, sessions=len(revocation.ended))
        return len(revocation.ended)

    async def _logout_everywhere(self, user_id: str) -> None:
        others = await self._revoke_user(user_id)
        audit("logout_all", user_id=user_id, sessions=others + 1)

    async def _revoke_user(self, user_id: str) -> int:
        """Revoke every live session of a user and announce it: each session, then the user (which
        also covers tokens issued before now whose session ended otherwise)."""
        now = self._clock()
        revocation = await self._store.revoke_user_sessions(
            user_id, now, self._announce(now, user_id)
        )
        await self._publish.deliver(revocation.kept)
        return len(revocation.ended)

    async def _revoke_session(self, sid: str, user_id: str, now: float, *, reason: str) -> bool:
        """Revoke and announce one session; False (and no event) when it was not live."""
        revocation = await self._store.revoke_session(sid, now, self._announce(now))
        if not revocation.ended:
            return False
        await self._publish.deliver(revocation.kept)
        audit("session_revoked", sid=sid, user_id=user_id, reason=reason)
        return True

    def _announce(
        self, now: float, user_id: str | None = None
    ) -> Callable[[Sequence[tuple[str, str]]], Sequence[Announcement]]:
        """The events of the sessions a transaction ends, for it to keep in the outbox: each
        session's and, for a user's every session (``user_id``), the user's, last."""
        until = int(now) + self._tokens.ttl

        def announcements(ended: Sequence[tuple[str, str]]) -> Sequence[Announcement]:
            events: list[RevocationEvent] = [
                SessionRevoked(sid=sid, sub=sub, until=until) for sid, sub in ended
            ]
            if user_id is not None:
                events.append(UserRevoked(sub=user_id, issued_before=int(now), until=until))
            return self._publish.announcements(events)

        return announcements

    def _new_refresh_token(self, session: Session, now: float) -> tuple[str, RefreshToken]:
        secret = secrets.token_urlsafe(32)
        expires_at = self._refresh_expiry(session, now)
        return secret, RefreshToken(hash_refresh_token(secret), session.sid, now, expires_at)

    def _refresh_expiry(self, session: Session, now: float) -> float:
        return min(now + self.policy.refresh_token_ttl, session.expires_at)

    @staticmethod
    def _narrow_scope(granted: str, requested: str | None) -> str:
        if requested is None:
            return granted
        allowed, wanted = set(granted.split()), set(scope_tokens(requested))
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
        jkt: str | None = None,
    ) -> TokenPair:
        """Sign before storing (a failed signature leaves no stored, unusable token), except in
        :meth:`_rotate_live`, which makes sure of the signing key first."""
        access = self._tokens.issue(user=user, session=session, scope=scope, now=now, jkt=jkt)
        return TokenPair(
            access_token=access.token,
            expires_in=access.expires_at - int(now),
            refresh_token=secret,
            refresh_expires_in=int(record.expires_at - now),
            scope=scope,
            authorization_details=access.claims.get("authorization_details"),
            jkt=jkt,
        )


def _client_policy(client: Client) -> DpopPolicy | None:
    """A confidential client's own DPoP policy for its users' tokens, if it has one."""
    return None if client.dpop is None else DpopPolicy(client.dpop)
