"""Confidential clients: app backends that authenticate with a secret, exchange their users'
assertions for tokens and end their users' sessions.

A client's secret is 256 random bits, shown once when it is made and kept sealed with the key
ring's :class:`~auth_service.domain.keyring.KeyCipher` (AES-GCM under
``AUTH_KEY_ENCRYPTION_SECRETS``, the client id bound as associated data): the client's assertions
are HMACs under the secret itself, so a hash of it could not verify them. A rotated secret's
predecessor keeps working for a grace period, so a backend can be redeployed with the new one.

The app's users live in their client's namespace: the subject ``acme:42`` is user ``42`` of client
``acme``. A client id holds no ``:`` and this issuer's own subjects none at all (they are UUIDs), so
no subject of one client can be another's or a local user's.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from auth_service.domain.dpop import DpopPolicy
from auth_service.domain.errors import InvalidClient, InvalidRequest
from auth_service.domain.keyring import KeyCipher
from auth_service.domain.models import Client, TrustedIssuer
from auth_service.domain.store import Store
from auth_service.domain.throttle import LoginThrottle
from shared.jsonlog import audit, fingerprint

__all__ = [
    "CLIENT_ID_RE",
    "DEFAULT_SECRET_GRACE",
    "GRANT_NAMES",
    "TOKEN_EXCHANGE",
    "ClientRegistry",
    "IssuedSecret",
    "client_of",
    "subject",
]

CLIENT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{2,31}")
"""3-32 characters: short enough that ``user:<client>:<app user>`` is a channel name."""
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN)
GRANT_NAMES = {"token-exchange": TOKEN_EXCHANGE}
"""The grants a client may be registered for, by the name the command line uses."""
DEFAULT_SECRET_GRACE = 86_400
"""How long a rotated secret keeps working: a day to redeploy the backends with the new one."""
_DUMMY = b"\0" * 43


def subject(client_id: str, user_id: str) -> str:
    """The ``sub`` of an app's user: the client's namespace, then the app's own id."""
    return f"{client_id}:{user_id}"


def client_of(sub: str) -> str | None:
    """The client whose app user ``sub`` is; None for this issuer's own users."""
    client_id, colon, _ = sub.partition(":")
    return client_id if colon else None


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """A client and its new secret, which exists in plain text only here, to be shown once."""

    client: Client
    secret: str = field(repr=False)


class ClientRegistry:
    def __init__(
        self,
        store: Store,
        cipher: KeyCipher,
        throttle: LoginThrottle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._throttle = throttle
        self._clock = clock

    async def create(
        self,
        client_id: str,
        *,
        grant_types: Iterable[str] = (),
        scope: str | None = None,
        namespaces: Iterable[str] | None = None,
        reserved: Iterable[str] = (),
        trusted: TrustedIssuer | None = None,
        dpop: DpopPolicy | None = None,
    ) -> IssuedSecret:
        """Register a client; ``reserved`` names are taken already (the public client's).
        ``trusted``: the identity provider whose tokens it may exchange too; ``dpop`` is the DPoP
        policy of its users' tokens (None: ``AUTH_DPOP``'s)."""
        if not CLIENT_ID_RE.fullmatch(client_id):
            raise InvalidRequest(
                "a client id is 3-32 characters of a-z, 0-9, '_', '.' or '-', starting with a "
                "letter or digit"
            )
        if client_id in reserved:
            raise InvalidRequest(f"{client_id!r} is the public client's id (AUTH_CLIENT_ID)")
        grants = " ".join(sorted(set(grant_types)))
        _may_trust(grants, trusted)
        spaces = None if namespaces is None else sorted(set(namespaces))
        if spaces is not None and not all(NAMESPACE_RE.fullmatch(ns) for ns in spaces):
            raise InvalidRequest("a namespace is 1-64 characters of A-Z, a-z, 0-9, '_.@-'")
        secret = secrets.token_urlsafe(32)
        client = Client(
            client_id=client_id,
            secret_encrypted=self._seal(client_id, secret),
            grant_types=grants,
            scope=None if scope is None else " ".join(scope.split()),
            namespaces=None if spaces is None else " ".join(spaces),
            created_at=self._clock(),
            dpop=None if dpop is None else dpop.value,
        ).trusting(trusted)
        if not await self._store.create_client(client):
            raise InvalidRequest(f"a client {client_id!r} exists")
        audit("client_created", client_id=client_id, grant_types=client.grant_types)
        return IssuedSecret(client, secret)

    async def trust(self, client_id: str, trusted: TrustedIssuer | None) -> Client:
        """Make ``trusted`` the one identity provider whose tokens the client may exchange (None:
        none). A running service reads it with the client on the next request."""
        client = await self._store.get_client(client_id)
        if client is not None:
            _may_trust(client.grant_types, trusted)
        if client is None or not await self._store.set_trusted_issuer(client_id, trusted):
            raise InvalidRequest(f"no client {client_id!r} (see `clients list`)")
        audit(
            "client_issuer_trusted",
            client_id=client_id,
            issuer=None if trusted is None else trusted.issuer,
        )
        updated = await self._store.get_client(client_id)
        if updated is None:
            raise InvalidRequest(f"no client {client_id!r} (see `clients list`)")
        return updated

    async def rotate_secret(
        self, client_id: str, grace: float = DEFAULT_SECRET_GRACE
    ) -> IssuedSecret:
        """A new secret now; the current one keeps working for ``grace`` seconds (0: not at all,
        for a leaked one). A secret still in the grace of an earlier rotation ends now."""
        now = self._clock()
        secret = secrets.token_urlsafe(32)
        sealed = self._seal(client_id, secret)
        rotated = await self._store.rotate_client_secret(client_id, sealed, now, now + grace)
        client = await self._store.get_client(client_id) if rotated else None
        if client is None:
            raise InvalidRequest(f"no client {client_id!r} (see `clients list`)")
        audit("client_secret_rotated", client_id=client_id, grace=int(grace))
        return IssuedSecret(client, secret)

    async def authenticate(self, client_id: str, secret: str, *, address: str) -> Client:
        """The client whose id and secret these are, or :class:`InvalidClient`. The secret is
        compared, in constant time, with each secret the client has now, once the login throttle
        (per client and address, and per address) finds no block; a failure is counted there (see
        :mod:`auth_service.domain.throttle` for why a client's attempts are not reserved)."""
        now = self._clock()
        throttled_as = f"client:{client_id}"
        await self._throttle.check(throttled_as, address, now)
        client = (
            await self._store.get_client(client_id) if CLIENT_ID_RE.fullmatch(client_id) else None
        )
        presented = secret.encode("utf-8", "surrogatepass")
        candidates = [s.encode() for s in self.secrets(client, now)] if client else [_DUMMY]
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(presented, candidate)
        if client is None or not matched:
            who = {"client_id": client_id} if client else {"client_hash": fingerprint(client_id)}
            audit("client_auth_failed", address=address, **who)
            await self._throttle.failed(throttled_as, address, now)
            raise InvalidClient("unknown client or wrong client secret")
        return client

    def secrets(self, client: Client, now: float) -> list[str]:
        """The secrets that work now: the current one, and its predecessor during the grace."""
        sealed = [client.secret_encrypted]
        previous, until = client.previous_secret_encrypted, client.previous_secret_expires_at
        if previous is not None and until is not None and now < until:
            sealed.append(previous)
        return [self._cipher.decrypt(_bound(client.client_id), s).decode() for s in sealed]

    def _seal(self, client_id: str, secret: str) -> bytes:
        return self._cipher.encrypt(_bound(client_id), secret.encode())


def _may_trust(grant_types: str, trusted: TrustedIssuer | None) -> None:
    if trusted is not None and TOKEN_EXCHANGE not in grant_types.split():
        raise InvalidRequest(
            "only a client with the token-exchange grant exchanges a provider's tokens"
        )


def _bound(client_id: str) -> str:
    """The associated data a client's secret is sealed with: its id, marked apart from a signing
    key's id, so a sealed secret can be neither moved to another client nor read as a key."""
    return f"client {client_id}"
