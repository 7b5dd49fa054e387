"""WebSocket tickets: the contract between auth_service, which mints them from an access token, and
every ws replica, which redeems each one once (``shared/once.py``).

A ticket is a JWT signed with the issuer's keys but of its own ``typ``, so the gateway never takes a
ticket for an access token nor an access token for a ticket. It lives at most ``TICKET_TTL``
seconds and never past the access token it came from, whose ``iat`` and ``exp`` it carries: the
socket it opens is bound to the same user, session and scope, expires with that token, and is
covered by the same revocations, with the same permissions (``scope`` and
``authorization_details``) and the same DPoP key binding (``cnf``: renewals on its socket must
prove that key). Its ``jti`` is burnt on first use. Standard library only: the
issuer's domain mints tickets with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "TICKET_CLAIMS",
    "TICKET_TTL",
    "TICKET_TYP",
    "ticket_claims",
]

TICKET_TYP = "ws-ticket+jwt"
TICKET_TTL = 30
TOKEN_IAT, TOKEN_EXP = "token_iat", "token_exp"
TICKET_CLAIMS = ["iss", "aud", "sub", "sid", "jti", "iat", "exp", TOKEN_IAT, TOKEN_EXP]
"""Every claim a ticket must carry (the optional ones in ``_COPIED`` are copied when present: a
socket opened with a ticket is allowed no more than one opened with the token)."""
_COPIED = ("scope", "authorization_details", "preferred_username", "client_id", "cnf")


def ticket_claims(access: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The claims of a ticket minted at ``now`` from a verified access token's claims."""
    iat = int(now)
    claims = {
        "iss": access["iss"],
        "aud": access["aud"],
        "sub": access["sub"],
        "sid": access["sid"],
        "jti": uuid.uuid4().hex,
        "iat": iat,
        "exp": min(iat + TICKET_TTL, int(access["exp"])),
        TOKEN_IAT: int(access["iat"]),
        TOKEN_EXP: int(access["exp"]),
    }
    for optional in _COPIED:
        if optional in access:
            claims[optional] = access[optional]
    return claims
