"""The one reader of a JWS header before its signature is checked."""

from __future__ import annotations

from typing import Any

import jwt

STRING_PARAMETERS = ("alg", "kid", "typ", "cty", "jku", "x5u", "x5t", "x5t#S256")
"""RFC 7515 section 4.1: these header parameters are strings when present."""


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
