"""The one reader of a JWS header before its signature is checked."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from shared.jose import STRING_PARAMETERS, unverified_header


def token(header: dict[str, object]) -> str:
    head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{head}.e30.c2ln"


def test_a_well_formed_header_is_read() -> None:
    header = {"alg": "RS256", "kid": "k1", "typ": "at+jwt", "x5t#S256": "abc", "ext": [1]}
    assert unverified_header(token(header)) == header


@pytest.mark.parametrize("name", STRING_PARAMETERS)
@pytest.mark.parametrize("value", [["RS256"], {"a": 1}, 7, None, True])
def test_a_string_parameter_of_another_type_refuses_the_header(name: str, value: object) -> None:
    """Callers look ``alg`` up in sets and ``typ`` in caches: a list there once raised
    ``TypeError`` (a failed handler) where an attacker's token must get a plain refusal."""
    with pytest.raises(jwt.InvalidTokenError):
        unverified_header(token({"alg": "RS256", name: value}))
