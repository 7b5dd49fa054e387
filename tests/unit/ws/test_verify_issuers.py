"""Which issuer's rules check a token, picked from its unverified ``iss`` only when there is a
choice; the ``typ`` header read as the media type it names."""

from __future__ import annotations

import base64
import json

import pytest

from tests.unit.ws.fakes import NoKeys
from ws_service.domain.errors import InvalidToken
from ws_service.domain.revocations import RevocationRegistry
from ws_service.domain.verify import Issuer, TokenVerifier


def segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = segment(json.dumps({"alg": "ES256", "kid": "k", "typ": "at+jwt"}).encode())


def verifier(*trusted: Issuer) -> TokenVerifier:
    return TokenVerifier(
        NoKeys(),
        RevocationRegistry(),
        issuer="http://auth",
        audience="ws",
        leeway=0,
        trusted=trusted,
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 5000 + b"]" * 5000,
        b"\xff\xfe",
        b"[]",
        b'{"iss": 7}',
        b'{"iss": "https://elsewhere"}',
    ],
)
async def test_a_payload_that_names_no_trusted_issuer_is_refused(payload: bytes) -> None:
    gateway = verifier(Issuer("https://idp", NoKeys(), "api", frozenset({"ES256"}), trusted=True))
    with pytest.raises(InvalidToken, match="issuer is not trusted"):
        await gateway.verify(f"{HEADER}.{segment(payload)}.sig")
    with pytest.raises(InvalidToken, match="issuer is not trusted"):
        await gateway.verify(f"{HEADER}.{segment(payload)}")


@pytest.mark.parametrize(
    ("typ", "accepted"),
    [
        ("at+jwt", True),
        ("application/at+jwt", True),
        ("AT+JWT", True),
        ("Application/At+Jwt", True),
        ("jwt", False),
        ("application/jwt", False),
        ("text/at+jwt", False),
        (None, False),
    ],
)
async def test_typ_is_the_at_jwt_media_type_with_or_without_application(
    typ: str | None, accepted: bool
) -> None:
    header = segment(json.dumps({"alg": "RS256", "kid": "k", "typ": typ}).encode())
    with pytest.raises(InvalidToken) as refused:
        await verifier().verify(f"{header}.{segment(b'{}')}.sig")
    # NoKeys refuses every kid: a typ that passes reaches the key lookup.
    assert (refused.value.message == "no keys here") is accepted
