"""The access-token contract between auth_service (the issuer) and ws_service (the verifier).

An access token is an RS256 JWT with header ``typ: at+jwt`` and the claims set of
:class:`AccessTokenPayload`. Its required keys are the claims a verifier insists on, so the issuer
(type-checked against the same TypedDict) can never leave one out.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypedDict

__all__ = [
    "ACCESS_TOKEN_TYP",
    "ALGORITHM",
    "REQUIRED_CLAIMS",
    "AccessTokenPayload",
    "Claims",
    "TokenRef",
    "scope_set",
]

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)
ALGORITHM = "RS256"


class _RequiredClaims(TypedDict):
    iss: str
    sub: str
    aud: str | list[str]
    exp: int
    iat: int
    jti: str
    sid: str


class AccessTokenPayload(_RequiredClaims, total=False):
    """The claims set the issuer signs: ``scope`` is space-separated, both optional claims may be
    absent."""

    scope: str
    preferred_username: str
    client_id: str
    """RFC 9068 section 2.2 (REQUIRED there): the client the token was issued to. Always issued;
    optional for this verifier, which acts on nothing client-specific."""


REQUIRED_CLAIMS: tuple[str, ...] = tuple(sorted(AccessTokenPayload.__required_keys__))
"""Every claim a verifier passes to pyjwt's ``options={"require": ...}``."""


@dataclass(frozen=True, slots=True)
class TokenRef:
    """What a revocation is about: a token's session, its user, and when it was issued."""

    sid: str
    sub: str
    iat: int


@dataclass(frozen=True, slots=True)
class Claims:
    """The parts of a verified access token a verifier acts on, kept for as long as its socket
    lives (``iss``/``aud`` are checked by pyjwt, ``jti`` is checked present; none is kept).
    ``kid`` names the key that signed it, so the sockets of a withdrawn key can be found; it is
    interned, so every socket of one key shares one string (a pointer per socket)."""

    sub: str
    sid: str
    iat: int
    exp: int
    scopes: frozenset[str]
    username: str | None
    kid: str
    grants: frozenset[tuple[str, str]] = frozenset()
    """``(action, channel)`` pairs the token's RFC 9396 ``authorization_details`` grant (a channel
    ending in ``*`` is a prefix). The verifier parses the claim (``from_payload`` leaves it
    empty) and shares one set per distinct value, as ``scope_set`` does for scopes."""

    @property
    def ref(self) -> TokenRef:
        return TokenRef(sid=self.sid, sub=self.sub, iat=self.iat)

    @classmethod
    def from_payload(
        cls, payload: Mapping[str, Any], kid: str, *, username_claim: str = "preferred_username"
    ) -> Claims:
        """Check the types pyjwt does not; raises ``ValueError`` with a reason a client may see.
        ``kid`` is the id of the key that verified it (the header's, a ticket's own included).
        Another identity provider's token may have no ``sid`` (then ``""``: no session) and
        name its user in another claim than ``preferred_username``."""
        sub, sid, jti = payload["sub"], payload.get("sid", ""), payload["jti"]
        scope = payload.get("scope", "")
        username = payload.get(username_claim)
        iat, exp = payload["iat"], payload["exp"]
        if (
            not all(isinstance(v, str) and v for v in (sub, jti))
            or not isinstance(sid, str)
            or not isinstance(scope, str)
        ):
            raise ValueError("the token's claims have the wrong types")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (iat, exp)):
            raise ValueError("the token's times are not numbers")
        return cls(
            sub=sub,
            sid=sid,
            iat=int(iat),
            exp=int(exp),
            scopes=scope_set(scope),
            username=username if isinstance(username, str) else None,
            kid=sys.intern(kid),
        )


@lru_cache(maxsize=1024)
def scope_set(scope: str) -> frozenset[str]:
    """One shared set per distinct scope string: a gateway holds a ``Claims`` per socket, and most
    users carry the same scope (a frozenset is 216 bytes; this keeps it once, not per socket)."""
    return frozenset(scope.split())
