"""The bench's own RS256 issuer key: access tokens minted without auth_service.

ws_service and the peers verify against a JWKS served by ``tests.bench.issuer``, so the generator
can mint thousands of distinct users, short expiries and unknown-``kid`` tokens without argon2
logins. The claims are the ones auth_service issues (docs/protocol.md, "What a token must be").
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["AUDIENCE", "KID", "BenchKey"]

KID = "bench-1"
AUDIENCE = "ws"
SCOPE = "chat:read chat:write"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class BenchKey:
    """A private key kept in ``directory`` so every bench process signs or verifies with it."""

    def __init__(self, directory: Path, issuer: str) -> None:
        self.issuer = issuer
        private_path = directory / "bench-key.pem"
        if not private_path.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            private_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        loaded = serialization.load_pem_private_key(private_path.read_bytes(), None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        self.private = loaded
        self.public_path = directory / "bench-key.pub.pem"
        if not self.public_path.exists():
            self.public_path.write_bytes(
                loaded.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def jwks(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID}
        return {"keys": [{**jwk, "n": _b64(numbers.n), "e": _b64(numbers.e)}]}

    def mint(
        self, sub: str, exp: float | None = None, kid: str = KID, jkt: str | None = None
    ) -> str:
        """An access token for ``sub``, valid for an hour unless ``exp`` (epoch seconds) is given;
        DPoP-bound to the key of thumbprint ``jkt`` when given."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": AUDIENCE,
            "iat": now,
            "exp": int(exp) if exp is not None else now + 3600,
            "jti": uuid.uuid4().hex,
            "sid": uuid.uuid4().hex,
            "scope": SCOPE,
            "preferred_username": sub,
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        return jwt.encode(
            claims, self.private, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"}
        )
