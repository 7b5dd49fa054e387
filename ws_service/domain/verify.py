"""Access-token verification: pyjwt does the crypto, this module pins every choice around it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
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
)
from ws_service.domain.errors import InvalidToken, KeyWithdrawn, SessionRevoked, TokenExpired
from ws_service.domain.namespaces import parse_grants

__all__ = ["KeySource", "RevocationCheck", "TokenVerifier", "VerifyingKey", "claims_from"]


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


class RevocationCheck(Protocol):
    def is_revoked(self, sub: str, sid: str, iat: int) -> bool: ...


class TokenVerifier:
    """Verifies RS256 access tokens from the issuer against the JWKS keys only."""

    def __init__(
        self,
        keys: KeySource,
        revocations: RevocationCheck,
        *,
        issuer: str,
        audience: str,
        leeway: int,
    ) -> None:
        self.keys = keys
        self._revocations = revocations
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    def accepted_until(self, exp: float) -> float:
        """Until when ``decode`` accepts a token or ticket expiring at ``exp``: whatever must
        outlive every use of it (a burnt ticket's record) lasts this long."""
        return exp + self._leeway

    async def verify(self, token: str) -> Claims:
        """Raise an ``AuthError`` subclass unless ``token`` is a valid, unrevoked access token."""
        payload, kid = await self.decode(
            token, ACCESS_TOKEN_TYP, REQUIRED_CLAIMS, "an access token"
        )
        return self.checked(claims_from(payload, kid))

    def checked(self, claims: Claims) -> Claims:
        """``claims`` unless a revocation or a key withdrawal this replica knows of covers them
        (checked again after every wait, as one may have arrived meanwhile)."""
        if self._revocations.is_revoked(claims.sub, claims.sid, claims.iat):
            raise SessionRevoked()
        if self.keys.is_withdrawn(claims.kid):
            raise KeyWithdrawn()
        return claims

    async def decode(
        self, token: str, typ: str, required: Sequence[str], kind: str
    ) -> tuple[dict[str, Any], str]:
        """The payload of an RS256 JWT of header ``typ`` (``kind`` names it in errors) from our
        issuer, signed by a JWKS key, and that key's id."""
        if not token.isascii():  # a JWS compact serialization is base64url and dots
            raise InvalidToken("the token is malformed")
        header = _header(token.partition(".")[0])
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"the token must be signed with {ALGORITHM}")
        if header.get("typ") != typ:
            raise InvalidToken(f"the token is not {kind}")
        if "crit" in header:  # pyjwt >= 2.10 already refuses unknown ones in get_unverified_header
            raise InvalidToken("critical header extensions are not supported")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token has no key id")
        key = await self.keys.get_key(kid)
        if ALGORITHM not in key.algorithms:
            raise InvalidToken(f"the signing key does not verify {ALGORITHM}")
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(required)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.InvalidTokenError:
            raise InvalidToken() from None
        return payload, kid


@lru_cache(maxsize=256)
def _header_or_none(segment: str) -> Mapping[str, Any] | None:
    try:
        return MappingProxyType(jwt.get_unverified_header(f"{segment}.e30."))
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


def claims_from(payload: Mapping[str, Any], kid: str) -> Claims:
    """What the gateway acts on, from a verified access token's (or ticket's) payload."""
    try:
        claims = Claims.from_payload(payload, kid)
        grants = parse_grants(payload.get("authorization_details"))
    except ValueError as exc:
        raise InvalidToken(str(exc)) from None
    return replace(claims, grants=grants) if grants else claims
