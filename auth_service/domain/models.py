"""Records the store keeps. Times are float epoch seconds."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = [
    "Client",
    "OutboxBacklog",
    "OutboxItem",
    "RefreshToken",
    "RefreshTokenView",
    "Session",
    "StoredKey",
    "ThrottleState",
    "TrustedIssuer",
    "User",
    "WithdrawnKey",
    "trusted_columns",
]


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    password_hash: str
    scope: str
    created_at: float
    client_id: str | None = None
    """The confidential client this is an app user of (``id`` is ``<client_id>:<the app's user
    id>``, ``username`` the same, no password: made by its first token exchange); None for this
    issuer's own users."""


@dataclass(frozen=True, slots=True)
class Session:
    """A refresh-token family. ``expires_at`` is its absolute lifetime. An exchanged session keeps
    what every refresh carries again: its ``authorization_details`` (compact JSON) and the
    ``username`` the app asserted. ``jkt``: the DPoP key (RFC 7638 thumbprint) the family is
    bound to, set by the first request that proved one and never changed: every refresh token
    of the family then needs a proof of it. ``bound_at``: when that was (None for a session bound
    before it was recorded, taken as bound from its start); a token created before it is a bearer
    token, whose reuse ends the family whoever bound it since."""

    sid: str
    user_id: str
    scope: str
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    authorization_details: str | None = None
    username: str | None = None
    jkt: str | None = None
    bound_at: float | None = None

    def issued_unbound(self, token: RefreshToken) -> bool:
        """Whether ``token`` of this family was issued while the family was a bearer one."""
        return self.jkt is None or (self.bound_at is not None and token.created_at < self.bound_at)


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token_hash: str
    sid: str
    created_at: float
    expires_at: float
    rotated_at: float | None = None


@dataclass(frozen=True, slots=True)
class RefreshTokenView:
    token: RefreshToken
    session: Session
    user: User


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    """An identity provider whose ID and access tokens a client may exchange for its users'
    tokens: its exact ``iss``, where its keys are, the ``aud`` its tokens must name, and the
    asymmetric algorithms its tokens may be signed with (never the token's choice)."""

    issuer: str
    jwks_uri: str
    audience: str
    algorithms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Client:
    """A confidential client: an app backend that authenticates with a secret (kept encrypted like
    the signing keys) and may exchange its users' assertions for tokens. ``grant_types`` and
    ``namespaces`` are space-separated; ``scope`` or ``namespaces`` None means unlimited. A rotated
    secret's predecessor stays valid until ``previous_secret_expires_at`` (the grace). The
    ``trusted_*`` columns, all set or all None, are the identity provider whose tokens it may
    exchange too (:attr:`trusted`; ``trusted_algorithms`` space-separated)."""

    client_id: str
    secret_encrypted: bytes
    grant_types: str
    scope: str | None
    namespaces: str | None
    created_at: float
    secret_rotated_at: float | None = None
    previous_secret_encrypted: bytes | None = None
    previous_secret_expires_at: float | None = None
    trusted_issuer: str | None = None
    trusted_jwks_uri: str | None = None
    trusted_audience: str | None = None
    trusted_algorithms: str | None = None
    dpop: str | None = None
    """The DPoP policy of the tokens issued for this client's users (``off``, ``optional``,
    ``required``); None follows ``AUTH_DPOP``."""

    @property
    def trusted(self) -> TrustedIssuer | None:
        if (
            self.trusted_issuer is None
            or self.trusted_jwks_uri is None
            or self.trusted_audience is None
            or self.trusted_algorithms is None
        ):
            return None
        return TrustedIssuer(
            self.trusted_issuer,
            self.trusted_jwks_uri,
            self.trusted_audience,
            tuple(self.trusted_algorithms.split()),
        )

    def trusting(self, trusted: TrustedIssuer | None) -> Client:
        issuer, jwks_uri, audience, algorithms = trusted_columns(trusted)
        return replace(
            self,
            trusted_issuer=issuer,
            trusted_jwks_uri=jwks_uri,
            trusted_audience=audience,
            trusted_algorithms=algorithms,
        )


TrustedColumns = tuple[str | None, str | None, str | None, str | None]


def trusted_columns(trusted: TrustedIssuer | None) -> TrustedColumns:
    """The ``trusted_*`` columns, in order, of a client trusting ``trusted`` (None: none)."""
    if trusted is None:
        return (None, None, None, None)
    return (trusted.issuer, trusted.jwks_uri, trusted.audience, " ".join(trusted.algorithms))


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A signing key as stored: the private half encrypted, the public half as a JWK dict."""

    kid: str
    generation: int
    private_key_encrypted: bytes
    public_jwk: str
    created_at: float
    activate_at: float


@dataclass(frozen=True, slots=True)
class WithdrawnKey:
    """A signing key taken out of service before its time (it leaked): kept after its key row is
    deleted, so every replica, a restarted one included, knows it was withdrawn and not retired."""

    kid: str
    generation: int
    withdrawn_at: float


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """Attempts counted under one throttle key; the defaults are a key never seen."""

    failures: int = 0
    window_start: float = 0.0
    blocked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An event the bus has not taken yet. A failed attempt counts in ``attempts`` and waits until
    ``next_attempt_at``; once out of attempts, ``dead_at`` moves it aside (a dead letter)."""

    id: int
    topic: str
    payload: str
    created_at: float
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: float = 0.0
    dead_at: float | None = None


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """What the outbox holds: events still to deliver (the oldest created when) and dead letters."""

    waiting: int
    oldest_at: float | None
    dead: int
