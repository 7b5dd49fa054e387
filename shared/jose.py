"""The one reader of a JWS header before its signature is checked."""

from __future__ import annotations

from typing import Any

import jwt

STRING_PARAMETERS = ("alg", "kid", "typ", "cty", "jku", "x5u", "x5t", "x5t#S256")
"""RFC 7515 section 4.1: these header parameters are strings when present."""


JWK_STRING_MEMBERS = ("kty", "use", "alg", "kid", "crv", "x", "y", "n", "e")
"""RFC 7517 section 4 and RFC 7518 section 6: these key members are strings when present."""


def wrong_jwk_member(jwk: dict[str, Any]) -> str | None:
    """The first of a JWK's string members that is not a string, or None: a key from anyone's
    DPoP proof is looked up in tables by its ``kty`` and ``crv``."""
    return next((n for n in JWK_STRING_MEMBERS if n in jwk and not isinstance(jwk[n], str)), None)


def unverified_header(token: str) -> dict[str, Any]:
    """``jwt.get_unverified_header``, refusing a header whose string parameters are not strings
    (:class:`jwt.DecodeError`; pyjwt refuses a ``kid`` that is not itself). Every caller compares
    ``alg``, ``kid`` and ``typ`` with tables and sets, where a list or an object from anyone's
    token would raise ``TypeError`` (unhashable) instead of being refused."""
    header = jwt.get_unverified_header(token)
    for name in STRING_PARAMETERS:
        if name in header and not isinstance(header[name], str):
            raise jwt.DecodeError(f"the header's {name} is not a string")
    return header
