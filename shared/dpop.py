"""DPoP proofs (RFC 9449): the one verifier both services use, auth_service at its token and
resource endpoints, ws_service at the ``auth`` frame.

pyjwt does the JWS (the signature, with the proof's own ``jwk`` read by ``PyJWK``, under an
algorithm pinned here and never the proof's choice); this module pins everything around it: the
``typ``, a public asymmetric key only, the request's method and URL, the time window, the access
token's hash, the server nonce, and a ``jti`` that works once across replicas (``UsedOnce``). The
thumbprint a token is bound to (``cnf.jkt``) is RFC 7638's: SHA-256 over the key's required
members as canonical JSON, the key first re-exported by pyjwt so one key has one thumbprint.

docs/protocol.md ("DPoP") is the contract a client follows; docs/security.md says what it stops.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.exceptions import InvalidJTIError
from jwt.utils import base64url_encode
from yarl import URL

from realtime_gateway_protocol.access_token import same_media_type
from realtime_gateway_protocol.wire_json import WireJSONError, check
from shared.jose import unverified_header, wrong_jwk_member
from shared.once import UsedOnce
from shared.urls import web_origin

__all__ = [
    "ALGORITHMS",
    "MAX_AGE",
    "MAX_PROOF_LENGTH",
    "MAX_SKEW",
    "NONCE_WINDOW",
    "PROOF_TYP",
    "NonceRequired",
    "Nonces",
    "Presented",
    "Proof",
    "ProofError",
    "ProofVerifier",
    "normalized_url",
    "thumbprint",
    "token_hash",
]

PROOF_TYP = "dpop+jwt"
ALGORITHMS = ("ES256", "ES384", "ES512", "PS256", "RS256")
"""The signature algorithms a proof may use (``dpop_signing_alg_values_supported``): asymmetric
only; ``none`` and every HMAC are refused whatever the proof says."""
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_RSA_BITS = (2048, 8192)
"""RSA keys below 2048 bits are weak, above 8192 only cost the verifier."""
_RSA_EXPONENT_BITS = 32
"""65537, what every library makes, has 17."""
MAX_AGE = 60
"""Seconds a proof is accepted after its ``iat``."""
MAX_SKEW = 5
"""Seconds a proof's ``iat`` may be ahead of the server's clock."""
MAX_PROOF_LENGTH = 8192
"""Characters: a proof with an RSA-4096 key is about 2,500."""
MAX_JTI_LENGTH = 256
NONCE_WINDOW = 60
"""Seconds per server nonce: a nonce is accepted in its window and the next (60 to 120 s)."""
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
REPLAY_PREFIX = "dpop:"
"""A spent proof's key in the used-once store: ``dpop:{<jkt>}:<jti>`` (one key's proofs share a
hash tag)."""


class ProofError(Exception):
    """A proof that is missing, malformed, or does not prove what it must. ``code`` is RFC
    9449's; the description may be shown to the client (it never holds a token or key)."""

    code = "invalid_dpop_proof"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class NonceRequired(ProofError):
    """Nonces are on and the proof has no current one (RFC 9449 section 8): answer with a fresh
    nonce (``DPoP-Nonce``) so the client signs again with it."""

    code = "use_dpop_nonce"


@dataclass(frozen=True, slots=True)
class Presented:
    """A request's proof (its ``DPoP`` header, the values of several joined with commas) and the
    method and public URL (in :func:`normalized_url` form) it must name."""

    proof: str
    method: str
    url: str


@dataclass(frozen=True, slots=True)
class Proof:
    """What a verified proof establishes: the key it was made with (its RFC 7638 thumbprint)."""

    jkt: str
    jti: str
    iat: float


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: base64url(SHA-256(the required members, sorted, as compact JSON)). ``jwk`` is
    an ``EC`` or ``RSA`` key as pyjwt exports it."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64url_encode(hashlib.sha256(canonical.encode("ascii")).digest()).decode("ascii")


def token_hash(access_token: str) -> str:
    """A proof's ``ath``: base64url(SHA-256(the access token's ASCII))."""
    digest = hashlib.sha256(access_token.encode("ascii", "surrogateescape")).digest()
    return base64url_encode(digest).decode("ascii")


def normalized_url(url: str) -> str | None:
    """The form a proof's ``htu`` and the request's URL are compared in (RFC 9449 section 4.3:
    no query or fragment; RFC 3986 section 6.2.2-6.2.3: scheme and host without case, no
    default port, an empty path as ``/``, and the path's percent-encoding and dot segments
    normalized, by yarl: ``/v1/%6Cogin`` and ``/v1/./login`` are ``/v1/login``). ``ws``/``wss``
    are ``http``/``https``: a WebSocket URL names the same resource as its upgrade request. None
    for anything else (userinfo, no host, another scheme, a bad port)."""
    try:
        parts = urlsplit(url)
        path = URL(url).raw_path
    except ValueError:
        return None
    origin = web_origin(parts, _SCHEMES.get(parts.scheme.lower(), ""))
    return None if origin is None else f"{origin}{path or '/'}"


class Nonces:
    """Server nonces without server state (RFC 9449 section 8): a nonce is its window's number
    and an HMAC of it under a key every replica derives alike, so any replica checks what another
    issued, and no client can make tomorrow's. Accepted in its window and the next."""

    def __init__(
        self, key: bytes, clock: Callable[[], float] = time.time, window: int = NONCE_WINDOW
    ) -> None:
        self._key = key
        self._clock = clock
        self._window = window

    def _mac(self, number: int) -> str:
        digest = hmac.new(self._key, str(number).encode("ascii"), hashlib.sha256).digest()
        return base64url_encode(digest[:18]).decode("ascii")

    def issue(self) -> str:
        number = int(self._clock() // self._window)
        return f"{number}.{self._mac(number)}"

    def valid(self, nonce: str) -> bool:
        number_text, _, mac = nonce.partition(".")
        if not (number_text.isascii() and number_text.isdigit()) or len(number_text) > 20:
            return False
        number = int(number_text)
        if number not in (current := int(self._clock() // self._window), current - 1):
            return False
        return hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(number).encode())


@dataclass(frozen=True, slots=True)
class _Key:
    key: EllipticCurvePublicKey | RSAPublicKey
    jkt: str


@lru_cache(maxsize=512)
def _public_key(alg: str, jwk_json: str) -> _Key | str:
    """The proof's key, or why it is refused. Parsed once per distinct key (a client signs
    every proof with one key), keyed by the header's own JSON of it."""
    jwk = json.loads(jwk_json)
    if _PRIVATE_MEMBERS & jwk.keys():
        return "the proof's jwk must be a public key (it holds a private member)"
    wrong = wrong_jwk_member(jwk)
    if wrong is not None:
        return f"the proof's jwk has a {wrong} that is not a string"
    kty = jwk.get("kty")
    if kty not in _THUMBPRINT_MEMBERS or (kty == "EC") != alg.startswith("ES"):
        return f"the proof's jwk must be a public {'EC' if alg.startswith('ES') else 'RSA'} key"
    if "alg" in jwk and jwk["alg"] != alg:
        return "the proof's jwk is for another algorithm"
    if kty == "EC" and jwk.get("crv") != _CURVES[alg]:
        return f"{alg} needs a key on {_CURVES[alg]}"
    try:
        parsed = jwt.PyJWK(jwk, algorithm=alg)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        return f"the proof's jwk is not a usable key ({exc.__class__.__name__})"
    key = parsed.key
    if isinstance(key, RSAPublicKey):
        if not _RSA_BITS[0] <= key.key_size <= _RSA_BITS[1]:
            return f"RSA keys must have {_RSA_BITS[0]} to {_RSA_BITS[1]} bits"
        # A verification costs in proportion to the exponent's bits: anyone's proof, with an
        # exponent as long as its modulus, cost ten times an ordinary one before it was refused.
        if key.public_numbers().e.bit_length() > _RSA_EXPONENT_BITS:
            return f"RSA keys must have a public exponent of at most {_RSA_EXPONENT_BITS} bits"
    if not isinstance(key, EllipticCurvePublicKey | RSAPublicKey):
        return "the proof's jwk must be a public key"
    exported = parsed.Algorithm.to_jwk(key, as_dict=True)
    return _Key(key, thumbprint(exported))


def _unverified_header(proof: str) -> dict[str, Any]:
    try:
        header = unverified_header(proof)
    except jwt.PyJWTError:
        raise ProofError("the DPoP proof is not a JWT") from None
    return _strict(header, "header")


def _strict(part: dict[str, Any], name: str) -> dict[str, Any]:
    """A proof's header or claims under the wire's JSON rules: anyone signs a proof, with any
    JSON that pyjwt's parser takes (a lone surrogate, which no string of ours may hold)."""
    try:
        check(part)
    except WireJSONError as exc:
        raise ProofError(f"the DPoP proof is not valid JSON (its {name}): {exc}") from None
    return part


class ProofVerifier:
    """Checks one proof against one request; each proof's ``jti`` is spent in ``used`` (shared by
    the replicas), so a proof works once. ``clock`` is the server's notion of now."""

    def __init__(
        self,
        used: UsedOnce,
        clock: Callable[[], float] = time.time,
        *,
        max_age: float = MAX_AGE,
        max_skew: float = MAX_SKEW,
    ) -> None:
        self._used = used
        self._clock = clock
        self._max_age = max_age
        self._max_skew = max_skew

    async def verify(
        self,
        proof: str,
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        nonces: Nonces | None = None,
        jkt: str | None = None,
    ) -> Proof:
        """The key ``proof`` proves for a ``method`` request to ``url`` (already in
        :func:`normalized_url` form), presenting ``access_token`` when one is; raises
        :class:`ProofError` (or :class:`NonceRequired`), or ``BusUnavailable`` when the
        used-once store cannot be reached (nothing is accepted unchecked). With ``jkt``, a proof
        made with another key is refused before its signature is checked (the costly part)."""
        if not isinstance(proof, str) or not proof.isascii() or len(proof) > MAX_PROOF_LENGTH:
            raise ProofError(f"the DPoP proof must be a JWT of at most {MAX_PROOF_LENGTH} bytes")
        if "," in proof:  # no JWS holds one: several DPoP headers, joined
            raise ProofError("send one DPoP header with one proof (RFC 9449 section 4.3)")
        header = _unverified_header(proof)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise ProofError(f"the DPoP proof must be signed with one of {', '.join(ALGORITHMS)}")
        if not same_media_type(header.get("typ"), PROOF_TYP):
            raise ProofError(f"the DPoP proof's typ must be {PROOF_TYP}")
        if "crit" in header:
            raise ProofError("critical header extensions are not supported")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise ProofError("the DPoP proof's header must carry its public key as jwk")
        key = _public_key(alg, json.dumps(jwk, sort_keys=True))
        if isinstance(key, str):
            raise ProofError(key)
        if jkt is not None and key.jkt != jkt:
            raise ProofError("the DPoP proof is made with another key than the token's")
        try:
            claims: dict[str, Any] = jwt.decode(
                proof,
                key.key,
                algorithms=[alg],
                options={
                    "require": ["iat", "jti", "htm", "htu"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise ProofError(f"the DPoP proof has no {exc.claim}") from None
        except InvalidJTIError:
            raise ProofError(
                f"the DPoP proof's jti must be a string of 1 to {MAX_JTI_LENGTH}"
            ) from None
        except jwt.PyJWTError:
            raise ProofError("the DPoP proof's signature does not verify with its jwk") from None
        iat = self._check_claims(_strict(claims, "claims"), method, url, access_token)
        jti: str = claims["jti"]
        if nonces is not None:
            nonce = claims.get("nonce")
            if not isinstance(nonce, str) or not nonces.valid(nonce):
                raise NonceRequired("the DPoP proof must carry the server's current nonce")
        if not await self._used.burn(f"{REPLAY_PREFIX}{{{key.jkt}}}:{jti}", iat + self._max_age):
            raise ProofError("the DPoP proof was used before (its jti works once)")
        return Proof(key.jkt, jti, iat)

    def _check_claims(
        self, claims: Mapping[str, Any], method: str, url: str, access_token: str | None
    ) -> float:
        if claims["htm"] != method:
            raise ProofError(f"the DPoP proof's htm must be {method}")
        htu = claims["htu"]
        if not isinstance(htu, str) or normalized_url(htu) != url:
            raise ProofError(f"the DPoP proof's htu must be {url}")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
            raise ProofError(f"the DPoP proof's jti must be a string of 1 to {MAX_JTI_LENGTH}")
        iat = claims["iat"]
        if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
            raise ProofError("the DPoP proof's iat must be a number of seconds")
        now = self._clock()
        if iat > now + self._max_skew:
            raise ProofError("the DPoP proof's iat is in the future: check the client's clock")
        if iat < now - self._max_age:
            raise ProofError(f"the DPoP proof is older than {self._max_age:g} s: make a new one")
        if access_token is not None:
            ath = claims.get("ath")
            expected = token_hash(access_token)
            if not isinstance(ath, str) or not hmac.compare_digest(ath.encode(), expected.encode()):
                raise ProofError("the DPoP proof's ath must be the hash of the access token")
        return float(iat)
