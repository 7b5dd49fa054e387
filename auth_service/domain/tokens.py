"""Access tokens (RS256 JWTs, ``typ: at+jwt``) and WebSocket tickets (``typ: ws-ticket+jwt``),
signed with the key ring's current key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from auth_service.domain.errors import InvalidClientToken, StoreUnavailable
from auth_service.domain.keyring import KeyRing
from auth_service.domain.models import Session, User
from realtime_gateway_protocol.access_token import (
    ACCESS_TOKEN_TYP,
    ALGORITHM,
    REQUIRED_CLAIMS,
    AccessTokenPayload,
)
from realtime_gateway_protocol.tickets import TICKET_TYP, ticket_claims
from shared.jose import unverified_header

__all__ = ["AccessToken", "Ticket", "TokenIssuer", "bound_key"]


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    claims: AccessTokenPayload

    @property
    def expires_at(self) -> int:
        return self.claims["exp"]


@dataclass(frozen=True, slots=True)
class Ticket:
    ticket: str
    expires_in: int


def bound_key(claims: Mapping[str, Any]) -> str | None:
    """The DPoP key one of our verified access tokens is bound to (``cnf.jkt``), if any."""
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) else None


class TokenIssuer:
    def __init__(
        self, ring: KeyRing, *, issuer: str, audience: str, ttl: int, client_id: str
    ) -> None:
        self._ring = ring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.client_id = client_id

    def issue(
        self, *, user: User, session: Session, scope: str, now: float, jkt: str | None = None
    ) -> AccessToken:
        claims = self.access_claims(user=user, session=session, scope=scope, now=now, jkt=jkt)
        return AccessToken(self._sign({**claims}, ACCESS_TOKEN_TYP, now), claims)

    def access_claims(
        self, *, user: User, session: Session, scope: str, now: float, jkt: str | None = None
    ) -> AccessTokenPayload:
        """An app user's token names the client that exchanged it and carries what its session
        keeps: the username the app asserted and the ``authorization_details``. ``jkt`` binds
        it to a DPoP key (``cnf``, RFC 9449 section 6.1)."""
        iat = int(now)
        claims: AccessTokenPayload = {
            "iss": self.issuer,
            "sub": user.id,
            "aud": self.audience,
            "iat": iat,
            "exp": iat + self.ttl,
            "jti": uuid.uuid4().hex,
            "sid": session.sid,
            "scope": scope,
            "client_id": user.client_id or self.client_id,
        }
        username = session.username if user.client_id else user.username
        if username:
            claims["preferred_username"] = username
        if session.authorization_details is not None:
            claims["authorization_details"] = json.loads(session.authorization_details)
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        return claims

    def issue_ticket(self, access: Mapping[str, Any], now: float, kid: str | None = None) -> Ticket:
        """A single-use WebSocket ticket bound to the access token whose claims are ``access``,
        signed by the key ``kid`` that signed that token (while this ring holds its private half;
        else by the current key)."""
        claims = ticket_claims(access, now)
        return Ticket(self._sign(claims, TICKET_TYP, now, kid), claims["exp"] - claims["iat"])

    def can_sign(self, now: float) -> bool:
        """Whether :meth:`issue` has a key to sign with now."""
        return self._ring.signing_key(now) is not None

    def _sign(self, claims: Mapping[str, Any], typ: str, now: float, kid: str | None = None) -> str:
        key = self._ring.key(kid) if kid else None
        if key is None or key.private_key is None or key.activate_at > now:
            key = self._ring.signing_key(now)
        if key is None or key.private_key is None:
            raise StoreUnavailable("no signing key is loaded yet")
        return jwt.encode(
            dict(claims), key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ}
        )

    def verify(self, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
        """Verify one of our own access tokens (for logout and revocation)."""
        return self.verified_with_kid(token, verify_exp=verify_exp)[0]

    def verified_with_kid(
        self, token: str, *, verify_exp: bool = True
    ) -> tuple[dict[str, Any], str]:
        """The claims of one of our own access tokens, and the kid of the key that signed it."""
        try:
            header = unverified_header(token)
            kid = str(header.get("kid", ""))
            key = self._ring.public_key(kid)
            if key is None or header.get("typ") != ACCESS_TOKEN_TYP:
                raise InvalidClientToken("the access token is not one of ours")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": verify_exp},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidClientToken("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidClientToken("the access token is invalid") from exc
        return claims, kid
