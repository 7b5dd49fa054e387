"""DPoP proofs for tests, good and bad, made with pyjwt directly (the clients' own proof makers
are tested against the servers elsewhere; these can break every rule on purpose)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.dpop import thumbprint, token_hash

__all__ = ["PrivateKey", "es256_key", "jkt", "make_proof", "public_jwk", "rs256_key"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def es256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rs256_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_jwk(key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)


def private_jwk(key: PrivateKey) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECAlgorithm.to_jwk(key, as_dict=True)
    return RSAAlgorithm.to_jwk(key, as_dict=True)


def jkt(key: PrivateKey) -> str:
    return thumbprint(public_jwk(key))


def make_proof(
    key: PrivateKey,
    htm: str,
    htu: str,
    *,
    access_token: str | None = None,
    alg: str | None = None,
    iat: float | None = None,
    jti: str | None = None,
    nonce: str | None = None,
    typ: object = "dpop+jwt",
    jwk: dict[str, Any] | None = None,
    signing_key: Any = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A proof for ``htm`` ``htu``; every part can be overridden or dropped to break it."""
    if alg is None:
        alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    payload: dict[str, Any] = {
        "htm": htm,
        "htu": htu,
        "iat": int(time.time()) if iat is None else iat,
        "jti": uuid.uuid4().hex if jti is None else jti,
        **claims,
    }
    if access_token is not None:
        payload["ath"] = token_hash(access_token)
    if nonce is not None:
        payload["nonce"] = nonce
    for name in drop:
        payload.pop(name, None)
    headers = {"typ": typ, "jwk": public_jwk(key) if jwk is None else jwk}
    return jwt.encode(payload, key if signing_key is None else signing_key, alg, headers=headers)
