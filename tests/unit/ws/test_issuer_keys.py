"""The gateway's key source over the shared key-set cache: the cache's errors become the
gateway's, each with the auth code a client sees."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm

from shared.http.jwks import JwksCache
from ws_service.domain.errors import InvalidToken, KeysUnavailable, KeyWithdrawn
from ws_service.jwks import IssuerKeys


class Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.headers, self._body = status, {}, body
        self.content_length, self.content = len(body), self

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield self._body


class Session:
    def __init__(self, jwk: dict[str, Any]) -> None:
        self.jwk, self.up = jwk, True

    def get(self, url: str, **options: Any) -> Response:
        if not self.up:
            return Response(503, b"")
        return Response(200, json.dumps({"keys": [self.jwk]}).encode())


async def test_the_caches_errors_become_the_gateways(unit_rsa_key: RSAPrivateKey) -> None:
    jwk = {**json.loads(RSAAlgorithm.to_jwk(unit_rsa_key.public_key())), "kid": "k1", "use": "sig"}
    session = Session(jwk)
    cache = JwksCache(session, "http://issuer.test/jwks", algorithms=["RS256"], refetch_interval=0)  # type: ignore[arg-type]
    keys = IssuerKeys(cache)
    await keys.refresh()
    assert (await keys.get_key("k1")).algorithms == {"RS256"}
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await keys.get_key("k2")
    keys.withdraw("k1")
    assert keys.is_withdrawn("k1")
    with pytest.raises(KeyWithdrawn):
        await keys.get_key("k1")
    session.up = False
    with pytest.raises(KeysUnavailable):
        await keys.refresh()
