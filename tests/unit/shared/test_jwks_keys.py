"""Which JWKs the key-set cache uses, and the algorithms each may verify: pinned by the issuer's
configuration, RSA of 2048 bits or more and EC on the NIST curves, never a symmetric, private,
encryption or weak key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.http.jwks import parse_jwks, ttl_from_cache_control


@pytest.fixture(scope="module")
def rsa_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: RSAPrivateKey, **fields: Any) -> dict[str, Any]:
    base = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**base, "kid": "k", "use": "sig", "alg": "RS256", **fields}


def ec_jwk(curve: ec.EllipticCurve, **fields: Any) -> dict[str, Any]:
    base = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(curve).public_key()))
    return {**base, "kid": "e", "use": "sig", **fields}


def test_only_rsa_signing_keys_of_2048_bits_are_used(rsa_key: RSAPrivateKey) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    private = json.loads(RSAAlgorithm.to_jwk(rsa_key))
    keys = parse_jwks(
        {
            "keys": [
                jwk(rsa_key, kid="good"),
                jwk(rsa_key, kid="no-alg", alg=None),
                jwk(rsa_key, kid="enc", use="enc"),
                jwk(rsa_key, kid="rs512", alg="RS512"),
                jwk(weak, kid="weak"),
                {**private, "kid": "private", "use": "sig"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "use": "sig"},
                {"kty": "RSA", "kid": "broken", "use": "sig", "n": "!!", "e": "AQAB"},
                jwk(rsa_key, kid=None),
                "not a dict",
            ]
        },
        ["RS256"],
    )
    assert set(keys) == {"good"}


def test_a_key_without_alg_is_allowed_but_use_is_required(rsa_key: RSAPrivateKey) -> None:
    key = {k: v for k, v in jwk(rsa_key, kid="a").items() if k != "alg"}
    assert set(parse_jwks({"keys": [key]}, ["RS256"])) == {"a"}
    key.pop("use")
    assert parse_jwks({"keys": [key]}, ["RS256"]) == {}


def test_each_key_verifies_its_own_alg_or_every_pinned_one_of_its_type(
    rsa_key: RSAPrivateKey,
) -> None:
    pinned = ["RS256", "PS256", "ES256"]
    keys = parse_jwks(
        {
            "keys": [
                jwk(rsa_key, kid="rs", alg="RS256"),
                {k: v for k, v in jwk(rsa_key, kid="any-rsa").items() if k != "alg"},
                ec_jwk(ec.SECP256R1(), kid="p256"),
                ec_jwk(ec.SECP256R1(), kid="p256-es256", alg="ES256"),
                ec_jwk(ec.SECP256R1(), kid="p256-es384", alg="ES384"),
                ec_jwk(ec.SECP384R1(), kid="p384"),
                ec_jwk(ec.SECP256K1(), kid="k1"),
                ec_jwk(ec.SECP256R1(), kid="p256-rs256", alg="RS256"),
            ]
        },
        pinned,
    )
    assert {kid: sorted(key.algorithms) for kid, key in keys.items()} == {
        "rs": ["RS256"],
        "any-rsa": ["PS256", "RS256"],
        "p256": ["ES256"],
        "p256-es256": ["ES256"],
    }
    assert isinstance(keys["p256"].key, ec.EllipticCurvePublicKey)
    assert parse_jwks({"keys": [ec_jwk(ec.SECP384R1())]}, ["ES384"])["e"].algorithms == {"ES384"}


def test_an_ec_point_off_its_curve_is_skipped() -> None:
    key = ec_jwk(ec.SECP256R1())
    assert parse_jwks({"keys": [{**key, "y": key["x"]}]}, ["ES256"]) == {}


@pytest.mark.parametrize("document", [[], {"keys": {}}, "x", None])
def test_a_non_jwks_document_is_an_error(document: Any) -> None:
    with pytest.raises(ValueError):
        parse_jwks(document, ["RS256"])


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        ("public, max-age=300", 300.0),
        ("max-age=5", 60.0),
        ("public, max-age=999999", 3600.0),
        ("no-store", 60.0),
        (None, 60.0),
        ('max-age="120"', 120.0),
    ],
)
def test_ttl_comes_from_max_age_within_bounds(header: str | None, ttl: float) -> None:
    assert ttl_from_cache_control(header, 60.0, 3600.0) == ttl
