"""DPoP proofs (RFC 9449) for the client: its tokens are then bound to a key that never leaves
this process, and worthless to whoever copies them.

    from realtime_gateway_client import GatewayClient
    from realtime_gateway_client.dpop import DPoPKey

    client = GatewayClient(auth_url, ws_url, "alice", password, dpop=DPoPKey.generate())

This module needs the optional extra, ``pip install 'realtime-gateway-client[dpop]'`` (pyjwt
signs, cryptography holds the key); the rest of the client does not.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

try:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm
    from jwt.utils import base64url_encode
except ImportError as exc:  # the base install is aiohttp only
    raise ImportError(
        "DPoP needs the client's extra: pip install 'realtime-gateway-client[dpop]'"
    ) from exc

__all__ = ["DPoPKey", "token_hash"]


def token_hash(access_token: str) -> str:
    """A proof's ``ath``: base64url(SHA-256(the access token))."""
    return base64url_encode(hashlib.sha256(access_token.encode("ascii")).digest()).decode("ascii")


class DPoPKey:
    """One key pair and the proofs it signs: ES256 with a P-256 key (the default), or RS256 with
    an RSA key loaded from a PEM file. The private key stays in memory and is never exported."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if not isinstance(private_key.curve, ec.SECP256R1):
                raise ValueError("a DPoP EC key must be on P-256 (ES256)")
            self._alg = "ES256"
            self._jwk: dict[str, Any] = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < 2048:
                raise ValueError("a DPoP RSA key needs 2048 bits or more")
            self._alg = "RS256"
            self._jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        else:
            raise TypeError("a DPoP key is an EC (P-256) or RSA private key")
        self._key = private_key

    def __repr__(self) -> str:
        return f"DPoPKey({self._alg})"

    @classmethod
    def generate(cls) -> DPoPKey:
        """A fresh P-256 key, in memory only: the session dies with the process."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, path: str | Path, password: bytes | None = None) -> DPoPKey:
        """A key kept in a PEM file (PKCS#8 or traditional), so that a session outlives the
        process: keep the file as secret as the refresh token it protects."""
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=password)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError("a DPoP key is an EC (P-256) or RSA private key")
        return cls(key)

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self._jwk)

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """A proof for one request: ``url`` without query or fragment is its ``htu``; with
        ``access_token`` its ``ath``; ``nonce`` when the server asked for one."""
        claims: dict[str, Any] = {
            "jti": uuid.uuid4().hex,
            "htm": method,
            "htu": url.split("#", 1)[0].split("?", 1)[0],
            "iat": int(time.time()),
        }
        if access_token is not None:
            claims["ath"] = token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        headers = {"typ": "dpop+jwt", "jwk": self._jwk}
        return jwt.encode(claims, self._key, algorithm=self._alg, headers=headers)
