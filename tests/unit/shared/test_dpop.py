"""The one DPoP proof verifier (shared/dpop.py), on a clock the test sets: every rule of RFC 9449
section 4.3 it enforces, one test each, and the thumbprint against RFC 7638 and joserfc."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
import pytest
from joserfc.jwk import ECKey, RSAKey
from jwt.utils import base64url_encode
from jwt.warnings import InsecureKeyLengthWarning

from shared.dpop import (
    NonceRequired,
    Nonces,
    ProofError,
    ProofVerifier,
    normalized_url,
    thumbprint,
    token_hash,
)
from shared.once import LocalUsedOnce
from tests.support.dpop import es256_key, jkt, make_proof, private_jwk, public_jwk, rs256_key

URL = "https://gw.example/auth/v1/token"
NOW = 1_800_000_000.0


def b64(number: int) -> str:
    return base64url_encode(number.to_bytes((number.bit_length() + 7) // 8, "big")).decode()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(clock: Clock) -> ProofVerifier:
    return ProofVerifier(LocalUsedOnce(clock), clock)


async def refused(verifier: ProofVerifier, proof: str, **kwargs: Any) -> str:
    with pytest.raises(ProofError) as caught:
        await verifier.verify(proof, method=kwargs.pop("method", "POST"), url=URL, **kwargs)
    return caught.value.description


async def test_a_good_proof_names_its_key(verifier: ProofVerifier) -> None:
    key = es256_key()
    proof = await verifier.verify(
        make_proof(key, "POST", URL, iat=NOW), method="POST", url=normalized_url(URL) or ""
    )
    assert proof.jkt == jkt(key)


@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256"])
async def test_each_pinned_algorithm_verifies(verifier: ProofVerifier, alg: str) -> None:
    key = es256_key() if alg.startswith("ES") else rs256_key()
    proof = await verifier.verify(
        make_proof(key, "POST", URL, alg=alg, iat=NOW), method="POST", url=URL
    )
    assert proof.jkt == jkt(key)


async def test_a_replayed_proof_is_refused(verifier: ProofVerifier) -> None:
    proof = make_proof(es256_key(), "POST", URL, iat=NOW)
    await verifier.verify(proof, method="POST", url=URL)
    assert "used before" in await refused(verifier, proof)


async def test_the_same_jti_under_another_key_is_another_proof(verifier: ProofVerifier) -> None:
    first = await verifier.verify(
        make_proof(es256_key(), "POST", URL, iat=NOW, jti="j"), method="POST", url=URL
    )
    second = await verifier.verify(
        make_proof(es256_key(), "POST", URL, iat=NOW, jti="j"), method="POST", url=URL
    )
    assert (first.jti, second.jti) == ("j", "j") and first.jkt != second.jkt


async def test_the_jti_is_remembered_as_long_as_the_proof_is_accepted(
    verifier: ProofVerifier, clock: Clock
) -> None:
    proof = make_proof(es256_key(), "POST", URL, iat=NOW)
    await verifier.verify(proof, method="POST", url=URL)
    clock.now = NOW + 60
    assert "used before" in await refused(verifier, proof)
    clock.now = NOW + 61
    assert "older than 60 s" in await refused(verifier, proof)


async def test_wrong_method_url_and_hash_are_refused(verifier: ProofVerifier) -> None:
    key = es256_key()
    assert "htm" in await refused(verifier, make_proof(key, "GET", URL, iat=NOW))
    assert "htu" in await refused(verifier, make_proof(key, "POST", URL + "x", iat=NOW))
    other = "https://evil.example/auth/v1/token"
    assert "htu" in await refused(verifier, make_proof(key, "POST", other, iat=NOW))
    bad_ath = make_proof(key, "POST", URL, iat=NOW, access_token="another token")
    assert "ath" in await refused(verifier, bad_ath, access_token="the token")
    no_ath = make_proof(key, "POST", URL, iat=NOW)
    assert "ath" in await refused(verifier, no_ath, access_token="the token")


async def test_htu_ignores_query_fragment_case_and_default_port(verifier: ProofVerifier) -> None:
    for htu in (
        URL + "?a=1#f",
        "HTTPS://GW.example:443/auth/v1/token",
        # RFC 9449 section 4.3 asks for RFC 3986 section 6.2.2 normalization: percent-encoding
        # of unreserved characters and dot segments (these were refused).
        "https://gw.example/auth/v1/%74oken",
        "https://gw.example/auth/v1/./token",
        "https://gw.example/auth/x/../v1/token",
    ):
        await verifier.verify(make_proof(es256_key(), "POST", htu, iat=NOW), method="POST", url=URL)
    for other in ("https://gw.example/auth/v1%2Ftoken", "https://gw.example/auth/v1/token/"):
        assert "htu" in await refused(verifier, make_proof(es256_key(), "POST", other, iat=NOW))
    assert normalized_url("wss://gw.example/ws") == normalized_url("https://gw.example:443/ws")
    assert normalized_url("ws://[::1]:8082/ws") == "http://[::1]:8082/ws"
    for bad in ("ftp://gw.example/", "https://user@gw.example/", "https:///x", "http://h:99999/"):
        assert normalized_url(bad) is None


async def test_iat_outside_the_window_is_refused(verifier: ProofVerifier) -> None:
    key = es256_key()
    assert "older" in await refused(verifier, make_proof(key, "POST", URL, iat=NOW - 61))
    assert "future" in await refused(verifier, make_proof(key, "POST", URL, iat=NOW + 6))
    await verifier.verify(make_proof(key, "POST", URL, iat=NOW + 5), method="POST", url=URL)
    await verifier.verify(make_proof(key, "POST", URL, iat=NOW - 60), method="POST", url=URL)
    for bad in ("1800000000", True, [NOW]):
        assert "iat" in await refused(verifier, make_proof(key, "POST", URL, iat=bad))  # type: ignore[arg-type]


async def test_missing_claims_are_refused(verifier: ProofVerifier) -> None:
    for claim in ("htm", "htu", "iat", "jti"):
        proof = make_proof(es256_key(), "POST", URL, iat=NOW, drop=(claim,))
        assert claim in await refused(verifier, proof)


async def test_alg_none_and_hmac_are_refused(verifier: ProofVerifier) -> None:
    key = es256_key()
    unsigned = jwt.encode(
        {"htm": "POST", "htu": URL, "iat": NOW, "jti": "x"},
        None,
        "none",
        headers={"typ": "dpop+jwt", "jwk": public_jwk(key)},
    )
    assert "signed with one of" in await refused(verifier, unsigned)
    hmac_key = b"k" * 32
    hs256 = make_proof(key, "POST", URL, iat=NOW, alg="HS256", signing_key=hmac_key)
    assert "signed with one of" in await refused(verifier, hs256)
    oct_jwk = {"kty": "oct", "k": "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s"}
    hs_oct = make_proof(key, "POST", URL, iat=NOW, alg="HS256", signing_key=hmac_key, jwk=oct_jwk)
    assert "signed with one of" in await refused(verifier, hs_oct)


async def test_a_private_jwk_is_refused(verifier: ProofVerifier) -> None:
    for key in (es256_key(), rs256_key()):
        proof = make_proof(key, "POST", URL, iat=NOW, jwk=private_jwk(key))
        assert "private member" in await refused(verifier, proof)


async def test_a_jwk_member_that_is_not_a_string_is_refused(verifier: ProofVerifier) -> None:
    """``kty`` is looked up in a table: a list there raised TypeError (a 500 at /v1/login before
    any password was checked, a 1011 for a socket's auth; an outside probe)."""
    key = es256_key()
    for name in ("kty", "crv", "alg", "x"):
        for value in (["EC"], {"EC": 1}, 7):
            jwk = {**public_jwk(key), name: value}
            proof = make_proof(key, "POST", URL, iat=NOW, jwk=jwk)
            assert f"{name} that is not a string" in await refused(verifier, proof)


async def test_keys_that_do_not_fit_the_algorithm_are_refused(verifier: ProofVerifier) -> None:
    ec_key, rsa_key = es256_key(), rs256_key()
    lying = make_proof(ec_key, "POST", URL, iat=NOW, jwk=public_jwk(es256_key()))
    assert "signature" in await refused(verifier, lying)
    rsa_as_ec = make_proof(rsa_key, "POST", URL, iat=NOW, alg="RS256", jwk=public_jwk(ec_key))
    assert "RSA key" in await refused(verifier, rsa_as_ec)
    with pytest.warns(InsecureKeyLengthWarning):
        small = make_proof(rs256_key(1024), "POST", URL, iat=NOW)
    assert "2048" in await refused(verifier, small)
    p384 = {**public_jwk(ec_key), "crv": "P-384"}
    assert "P-256" in await refused(verifier, make_proof(ec_key, "POST", URL, iat=NOW, jwk=p384))
    garbage = {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}
    assert "usable key" in await refused(
        verifier, make_proof(ec_key, "POST", URL, iat=NOW, jwk=garbage)
    )


async def test_an_rsa_key_with_an_outsized_exponent_is_refused_before_any_signature_check(
    verifier: ProofVerifier,
) -> None:
    """A verification's cost grows with the exponent's bits: an exponent as long as a 3072-bit
    modulus made anyone's proof cost about ten ordinary ones (an outside probe: 6 to 8 ms of
    server CPU per refused login). 65537 and any exponent of up to 32 bits are kept."""
    key = rs256_key(3072)
    n = key.public_key().public_numbers().n
    huge = (1 << 3069) | secrets.randbits(3068) | 1
    jwk = {"kty": "RSA", "n": b64(n), "e": b64(huge)}
    message = await refused(verifier, make_proof(key, "POST", URL, iat=NOW, jwk=jwk))
    assert "exponent of at most 32 bits" in message
    within = {"kty": "RSA", "n": b64(n), "e": b64((1 << 31) + 1)}
    message = await refused(verifier, make_proof(key, "POST", URL, iat=NOW, jwk=within))
    assert "signature" in message  # taken as a key, and its (wrong) signature checked


async def test_a_proof_of_another_key_than_the_one_expected_is_refused_unverified(
    verifier: ProofVerifier,
) -> None:
    """ws_service names the token's key: a proof made with any other is refused before its
    signature costs anything (this one's signature would not even verify)."""
    key, other = es256_key(), es256_key()
    lying = make_proof(key, "POST", URL, iat=NOW, jwk=public_jwk(other))
    assert "another key" in await refused(verifier, lying, jkt=jkt(key))
    good = make_proof(key, "POST", URL, iat=NOW)
    assert "another key" in await refused(verifier, good, jkt=jkt(other))
    proof = await verifier.verify(good, method="POST", url=URL, jkt=jkt(key))
    assert proof.jkt == jkt(key)


async def test_a_jti_that_is_not_a_string_is_named(verifier: ProofVerifier) -> None:
    proof = make_proof(es256_key(), "POST", URL, iat=NOW, jti=12345)  # type: ignore[arg-type]
    assert "jti must be a string" in await refused(verifier, proof)


@pytest.mark.parametrize("claim", ["ath", "jti", "nonce", "extra"])
async def test_a_lone_surrogate_anywhere_in_a_proof_is_refused(
    verifier: ProofVerifier, clock: Clock, claim: str
) -> None:
    """Anyone signs a proof, and pyjwt's JSON takes a lone surrogate that then fails wherever it
    is encoded (the ath comparison, the jti's key in Redis): the proof is refused as JSON."""
    proof = make_proof(es256_key(), "POST", URL, iat=NOW, **{claim: "\ud800"})
    message = await refused(verifier, proof, access_token="t", nonces=Nonces(b"k" * 32, clock))
    assert "lone surrogates" in message
    header = jwt.get_unverified_header(proof)
    key = es256_key()
    forged = make_proof(key, "POST", URL, iat=NOW, jwk={**header["jwk"], "x5u": "\udcff"})
    assert "lone surrogates" in await refused(verifier, forged)


@pytest.mark.parametrize(
    "typ", ["dpop+jwt", "DPoP+JWT", "application/dpop+jwt", "Application/DPOP+jwt"]
)
async def test_typ_is_the_dpop_jwt_media_type_with_or_without_application(
    verifier: ProofVerifier, typ: str
) -> None:
    """RFC 7515 section 4.1.9: ``application/`` may be left out of a typ, and media types compare
    without case, as the gateway compares an access token's at+jwt. application/dpop+jwt was
    refused (an outside probe)."""
    key = es256_key()
    proof = make_proof(key, "POST", URL, iat=NOW, typ=typ)
    assert (await verifier.verify(proof, method="POST", url=URL)).jkt == jkt(key)


async def test_wrong_typ_and_malformed_proofs_are_refused(verifier: ProofVerifier) -> None:
    key = es256_key()
    for typ in ("JWT", "application/jwt", "text/dpop+jwt", "dpop+jwt; x=1", "at+jwt"):
        assert "typ" in await refused(verifier, make_proof(key, "POST", URL, iat=NOW, typ=typ))
    for odd in (["dpop+jwt"], {"dpop+jwt": 1}, 1):  # once a TypeError: a list was hashed
        assert "not a JWT" in await refused(
            verifier, make_proof(key, "POST", URL, iat=NOW, typ=odd)
        )
    for junk in ("", "a.b.c", "x" * 9000, "é.b.c"):
        await refused(verifier, junk)
    no_jwk = jwt.encode({"htm": "POST"}, key, "ES256", headers={"typ": "dpop+jwt"})
    assert "jwk" in await refused(verifier, no_jwk)


async def test_nonces_are_checked_when_asked_for(verifier: ProofVerifier, clock: Clock) -> None:
    nonces = Nonces(b"k" * 32, clock)
    key = es256_key()
    with pytest.raises(NonceRequired):
        await verifier.verify(
            make_proof(key, "POST", URL, iat=NOW), method="POST", url=URL, nonces=nonces
        )
    nonce = nonces.issue()
    await verifier.verify(
        make_proof(key, "POST", URL, iat=NOW, nonce=nonce), method="POST", url=URL, nonces=nonces
    )
    clock.now = NOW + 60
    assert nonces.valid(nonce)
    clock.now = NOW + 120
    assert not nonces.valid(nonce)
    assert not Nonces(b"j" * 32, clock).valid(nonces.issue())
    assert not nonces.valid("123") and not nonces.valid("x.y") and not nonces.valid("é")
    mac = nonce.partition(".")[2]
    for number in ("\u00b2", "\u0661" * 8, f"{nonce.partition('.')[0]}\u0661"):
        assert not nonces.valid(f"{number}.{mac}")  # digits to str.isdigit, not ASCII


def test_thumbprint_is_rfc_7638() -> None:
    """The example of RFC 7638 section 3.1, and joserfc's thumbprint of fresh keys."""
    example = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPeb"
        "WKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAt"
        "aSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksIN"
        "HaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    ec_key, rsa_key = es256_key(), rs256_key()
    assert jkt(ec_key) == ECKey.import_key(public_jwk(ec_key)).thumbprint()
    assert jkt(rsa_key) == RSAKey.import_key(public_jwk(rsa_key)).thumbprint()


def test_ath_is_the_base64url_sha256_of_the_token() -> None:
    # RFC 9449 section 7.1's example access token and its ath.
    assert token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_the_clock_is_the_verifiers() -> None:
    assert abs(time.time() - NOW) > 3600  # the tests above never depend on the real clock
