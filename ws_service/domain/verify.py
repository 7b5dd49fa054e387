"""Access-token verification: pyjwt does the crypto, this module pins every choice around it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from realtime_gateway_protocol.access_token import (
    ACCESS_TOKEN_TYP,
    ALGORITHM,
    REQUIRED_CLAIMS,
    Claims,
    same_media_type,
)
from realtime_gateway_protocol.wire_json import WireJSONError, check
from shared.jose import unverified_header
from ws_service.domain.errors import (
    InvalidToken,
    KeysUnavailable,
    KeyWithdrawn,
    SessionRevoked,
    TokenExpired,
)
from ws_service.domain.namespaces import parse_grants

__all__ = [
    "DpopRules",
    "Issuer",
    "KeySource",
    "RevocationCheck",
    "TokenVerifier",
    "VerifyingKey",
    "claims_from",
]


class VerifyingKey(Protocol):
    """A key of the issuer's key set and the algorithms it may verify."""

    @property
    def key(self) -> RSAPublicKey | EllipticCurvePublicKey: ...

    @property
    def algorithms(self) -> frozenset[str]: ...


class KeySource(Protocol):
    async def get_key(self, kid: str) -> VerifyingKey:
        """Raise ``KeyWithdrawn`` for a withdrawn key, ``InvalidToken`` for an unknown one."""

    def is_withdrawn(self, kid: str) -> bool: ...

    def withdraw(self, kid: str) -> None:
        """Drop ``kid`` and never use it again, whatever a key set fetched later says."""

    async def refresh(self) -> None:
        """Fetch the key set now; raises ``KeysUnavailable``."""

    def fetched_since(self, when: float) -> bool:
        """Whether the key set held was fetched at or after ``when`` (epoch seconds)."""


class RevocationCheck(Protocol):
    def is_revoked(self, sub: str, sid: str, iat: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Issuer:
    """An issuer whose access tokens are accepted, and everything pinned for it: its key set, its
    audience, its algorithms (never the token's choice), the claim that names a user.

    ``trusted`` marks an identity provider beside auth_service (``WS_TRUSTED_ISSUERS``): its tokens
    need no ``sid``, and the key ids of its sockets are qualified with its name (``key_ref``), so
    that a key leaving one issuer's set never concerns another issuer's sockets."""

    name: str
    keys: KeySource
    audience: str
    algorithms: frozenset[str] = frozenset({ALGORITHM})
    username_claim: str = "preferred_username"
    trusted: bool = False

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(claim for claim in REQUIRED_CLAIMS if not (self.trusted and claim == "sid"))

    def key_ref(self, kid: str) -> str:
        """How ``Claims.kid`` names this issuer's key ``kid``."""
        return f"{self.name} {kid}" if self.trusted else kid


@dataclass(frozen=True, slots=True)
class DpopRules:
    """What a DPoP proof at the ``auth`` frame must name, and whether bearer tokens are refused:
    ``url`` is the gateway's public WebSocket URL (``WS_PUBLIC_URL``) in
    ``shared.dpop.normalized_url`` form; ``required`` is ``WS_DPOP=required``."""

    url: str = ""
    required: bool = False


class TokenVerifier:
    """Verifies access tokens against their issuer's key set only: auth_service's (``keys``,
    ``issuer``, ``audience``: RS256) and any ``trusted`` issuer's."""

    def __init__(
        self,
        keys: KeySource,
        revocations: RevocationCheck,
        *,
        issuer: str,
        audience: str,
        leeway: int,
        trusted: Iterable[Issuer] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: epoch seconds, as a token's ``iat``."""
        self.keys = keys
        self._clock = clock
        self._revocations = revocations
        self._own = Issuer(issuer, keys, audience)
        self._issuers = {self._own.name: self._own, **{i.name: i for i in trusted}}
        self._leeway = leeway

    def _may_be_newer_than_keys(self, token: str, issuer: Issuer) -> bool:
        """Whether ``token``'s kid may be a key newer than the key set held: it was issued (its
        unverified ``iat``) less than ``NEW_KEY_SETTLE`` before the set was fetched. An ``iat``
        from the future, beyond the leeway, could never verify: no (so a forged or foreign
        token is told to stop, not to retry). Compared before any arithmetic: an integer of 400
        digits overflowed ``float`` and closed the socket 1011 (an outside probe)."""
        issued = _unverified_claim(token, "iat")
        return (
            isinstance(issued, int | float)
            and not isinstance(issued, bool)
            and 0 <= issued <= self._clock() + self._leeway  # NaN compares false
            and not issuer.keys.fetched_since(issued + NEW_KEY_SETTLE)
        )

    def accepted_until(self, exp: float) -> float:
        """Until when ``decode`` accepts a token or ticket expiring at ``exp``: whatever must
        outlive every use of it (a burnt ticket's record) lasts this long."""
        return exp + self._leeway

    async def verify(self, token: str) -> Claims:
        """Raise an ``AuthError`` subclass unless ``token`` is a valid, unrevoked access token."""
        issuer = self._issuer_of(token)
        payload, kid = await self._decode(
            token, issuer, ACCESS_TOKEN_TYP, issuer.required, "an access token"
        )
        return self.checked(claims_from(payload, issuer.key_ref(kid), issuer.username_claim))

    def checked(self, claims: Claims) -> Claims:
        """``claims`` unless a revocation or a key withdrawal this replica knows of covers them
        (checked again after every wait, as one may have arrived meanwhile)."""
        if self._revocations.is_revoked(claims.sub, claims.sid, claims.iat):
            raise SessionRevoked(subject=claims.sub)
        if self.keys.is_withdrawn(claims.kid):
            raise KeyWithdrawn(subject=claims.sub)
        return claims

    async def decode(
        self, token: str, typ: str, required: Sequence[str], kind: str
    ) -> tuple[dict[str, Any], str]:
        """The payload of a JWT of header ``typ`` (``kind`` names it in errors) from auth_service,
        signed by one of its keys, and that key's id (tickets)."""
        return await self._decode(token, self._own, typ, required, kind)

    def _issuer_of(self, token: str) -> Issuer:
        """The issuer whose configuration checks ``token``: read from the unverified payload only
        to pick it (``jwt.decode`` then checks ``iss`` with the rest); without trusted issuers
        there is nothing to pick."""
        if len(self._issuers) == 1:
            return self._own
        issuer = self._issuers.get(_unverified_issuer(token))
        if issuer is None:
            raise InvalidToken("the token's issuer is not trusted")
        return issuer

    async def _decode(
        self, token: str, issuer: Issuer, typ: str, required: Sequence[str], kind: str
    ) -> tuple[dict[str, Any], str]:
        if not token.isascii():  # a JWS compact serialization is base64url and dots
            raise InvalidToken("the token is malformed")
        header = _header(token.partition(".")[0])
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in issuer.algorithms:
            raise InvalidToken(
                f"the token must be signed with {' or '.join(sorted(issuer.algorithms))}"
            )
        if not same_media_type(header.get("typ"), typ):
            raise InvalidToken(f"the token is not {kind}")
        if "crit" in header:  # pyjwt >= 2.10 already refuses unknown ones in get_unverified_header
            raise InvalidToken("critical header extensions are not supported")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token has no key id")
        try:
            key = await issuer.keys.get_key(kid)
        except InvalidToken:
            if self._may_be_newer_than_keys(token, issuer):
                raise KeysUnavailable(_NOT_YET) from None
            raise
        if alg not in key.algorithms:
            raise InvalidToken("the token's algorithm is not its signing key's")
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=issuer.audience,
                issuer=issuer.name,
                leeway=self._leeway,
                options={"require": list(required)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.InvalidTokenError:
            raise InvalidToken() from None
        if issuer.trusted:  # pyjwt's JSON takes lone surrogates and NaN; auth_service writes none
            try:
                check(payload)
            except WireJSONError as exc:
                raise InvalidToken(f"the token's claims are not valid JSON: {exc}") from None
        return payload, kid


NEW_KEY_SETTLE = 60.0
"""Seconds after a token's ``iat`` within which a key set may not hold its signing key yet: an
auth replica signs with a new key at once (``keys rotate --immediate``, ``keys revoke``) while
the others load it at their next reload (at most 30 s when the announcement cannot travel, Redis
down), and the key set fetched here may come from one of those. A kid unknown to a set fetched
that long after the token was issued is no key of the issuer's: ``invalid_token``. Before, it is
``keys_unavailable`` (retry): a valid token was answered "stop, log in again"."""

_NOT_YET = "the token's signing key is not in the key set here yet; try again"


def _unverified_claim(token: str, name: str) -> Any:
    """A claim of a token's payload, unverified (None if none or unreadable)."""
    segment = token.split(".", 2)[1] if token.count(".") == 2 else ""
    try:
        payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):  # binascii.Error is a ValueError
        return None
    return payload.get(name) if isinstance(payload, dict) else None


def _unverified_issuer(token: str) -> str:
    """``iss`` of a token's payload, unverified ("" if none): it picks the issuer whose keys and
    rules decide."""
    issuer = _unverified_claim(token, "iss")
    return issuer if isinstance(issuer, str) else ""


@lru_cache(maxsize=256)
def _header_or_none(segment: str) -> Mapping[str, Any] | None:
    try:
        return MappingProxyType(unverified_header(f"{segment}.e30."))
    except jwt.InvalidTokenError:
        return None


def _header(segment: str) -> Mapping[str, Any]:
    """The unverified header, parsed once per distinct header segment: every token of one key
    shares it (alg, typ, kid), and pyjwt's parse is a tenth of a handshake. It only picks the
    key; ``jwt.decode`` parses and verifies the real header again. An attacker's distinct headers
    cost what they cost before (the cache is a bounded LRU)."""
    header = _header_or_none(segment)
    if header is None:
        raise InvalidToken("the token is malformed")
    return header


def claims_from(
    payload: Mapping[str, Any], kid: str, username_claim: str = "preferred_username"
) -> Claims:
    """What the gateway acts on, from a verified access token's (or ticket's) payload."""
    try:
        claims = Claims.from_payload(payload, kid, username_claim=username_claim)
        grants = parse_grants(payload.get("authorization_details"))
    except ValueError as exc:
        raise InvalidToken(str(exc)) from None
    return replace(claims, grants=grants) if grants else claims
