"""Subject tokens of a trusted identity provider: a client registered with ``--trust-issuer``
exchanges its users' ID or access tokens from that provider as it exchanges its own assertions
(the "log in with our IdP, get realtime tokens" path).

pyjwt verifies the token with the provider's own keys (its key set, fetched through
:class:`IssuerKeys` from the registered ``jwks_uri`` and nowhere else), and the client's
registration pins every choice around it, never the token: an algorithm among the registered
asymmetric ones that the key itself may verify; ``iss`` exactly the registered issuer (compared
before any key is looked up, so a token of another issuer costs no fetch); ``aud`` the registered
audience; ``exp`` ahead and ``iat``/``nbf`` not, on the injected clock with the exchange's leeway;
a ``jti``, when the token has one, used once per client and issuer.

The provider's ``sub`` is the app's user id, in the client's namespace like an assertion's: see
:func:`verify_provider_token`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from auth_service.domain.errors import InvalidGrant, InvalidRequest
from auth_service.domain.exchange import (
    ISSUED_TOKEN_TYPE as ACCESS_TOKEN_TYPE,
)
from auth_service.domain.exchange import (
    Assertion,
    app_user_id,
    checked_times,
    strict_claims,
    valid_username,
)
from auth_service.domain.models import TrustedIssuer
from shared.jose import unverified_header

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "ID_TOKEN_TYPE",
    "PROVIDER_TOKEN_TYPES",
    "IssuerKeys",
    "VerifyingKey",
    "trusted_issuer",
    "unverified_issuer",
    "verify_provider_token",
]

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 (a URN)
PROVIDER_TOKEN_TYPES = frozenset({ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE})
"""RFC 8693's types for a provider's token; ``...:jwt`` names one too, told from the app's own
assertion by its ``iss``."""
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
"""The asymmetric JWS algorithms a provider may be pinned to (``shared.http.jwks.ALGORITHMS``,
which the key-set cache serves; a test keeps the two equal): never ``none`` nor an HMAC."""
DEFAULT_ALGORITHM = "RS256"
"""What a provider is pinned to unless registered otherwise: OpenID Connect's default for ID
tokens."""
MAX_NAME = 255
_NAME = re.compile(r"[\x21-\x7e]{1,255}")


class VerifyingKey(Protocol):
    """A key of a provider's key set and the algorithms it may verify."""

    @property
    def key(self) -> RSAPublicKey | EllipticCurvePublicKey: ...

    @property
    def algorithms(self) -> frozenset[str]: ...


class IssuerKeys(Protocol):
    async def get_key(self, issuer: TrustedIssuer, kid: str) -> VerifyingKey:
        """The key ``kid`` of ``issuer``'s key set, fetched from its ``jwks_uri`` only. Raises
        :class:`InvalidGrant` for a kid the set does not hold, and
        :class:`~auth_service.domain.errors.IssuerUnavailable` when it cannot be fetched."""


def trusted_issuer(
    issuer: str, jwks_uri: str, audience: str, algorithms: Iterable[str]
) -> TrustedIssuer:
    """A provider as registered, or :class:`InvalidRequest` saying what is wrong."""
    if not _NAME.fullmatch(issuer):
        raise InvalidRequest(f"an issuer is 1-{MAX_NAME} printable ASCII characters, no spaces")
    if not _NAME.fullmatch(audience):
        raise InvalidRequest(f"an audience is 1-{MAX_NAME} printable ASCII characters, no spaces")
    url = urlsplit(jwks_uri)
    if url.scheme not in ("http", "https") or not url.hostname or not _NAME.fullmatch(jwks_uri):
        raise InvalidRequest("the JWKS URI must be an http or https URL")
    pinned = tuple(dict.fromkeys(algorithms))
    if not pinned or not set(pinned) <= ALGORITHMS:
        raise InvalidRequest(
            f"the algorithms are some of {', '.join(sorted(ALGORITHMS))} (never none or an HMAC)"
        )
    return TrustedIssuer(issuer, jwks_uri, audience, pinned)


def unverified_issuer(token: str) -> str | None:
    """The token's ``iss``, unverified: it only says which way the token is verified."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


SENDER_CONSTRAINED = (
    "the subject token is sender-constrained (cnf): its key cannot be proven in an exchange"
)


async def verify_provider_token(
    token: str, trusted: TrustedIssuer, keys: IssuerKeys, *, now: float
) -> Assertion:
    """What the provider's token says about its user, or :class:`InvalidGrant` saying what is
    wrong with it.

    Its ``sub`` is the app's user id as an assertion's is: the user ``<client>:<sub>``, one
    namespace for both ways in. The client chose to trust this provider for its users, so a person
    who signs in there and whom the backend also vouches for by that id is one user here: one
    ``user:`` channel, one presence entry, one per-user cap, one ``/v1/sessions/revoke``. An app
    whose own user ids are another population must keep them apart from the provider's (a prefix
    of its own); it already speaks for its whole namespace, so trusting a provider widens no
    client's reach beyond it. A ``sub`` outside the app user id alphabet is refused, never mapped.
    The provider's ``preferred_username`` is shown when it would pass as an assertion's and left
    out otherwise (the provider, not the app, chose it)."""
    try:
        header = unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidGrant("the subject token is not a well-formed JWT") from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in trusted.algorithms:
        raise InvalidGrant(f"the subject token must be signed {' or '.join(trusted.algorithms)}")
    if not isinstance(kid, str) or not kid:
        raise InvalidGrant("the subject token has no kid")
    if unverified_issuer(token) != trusted.issuer:
        raise InvalidGrant(f"the subject token's iss must be {trusted.issuer}")
    key = await keys.get_key(trusted, kid)
    if alg not in key.algorithms:
        raise InvalidGrant("the subject token's algorithm is not one its key may verify")
    claims = _verified_claims(token, key, alg, trusted)
    if "cnf" in claims:
        # A sender-constrained token (RFC 7800: DPoP's jkt, mTLS's x5t#S256) is its holder's only
        # with its key, which an exchange cannot prove: taken as a bearer one, a stolen copy
        # would become tokens of ours without it (ws_service refuses a cnf it cannot check too).
        raise InvalidGrant(SENDER_CONSTRAINED)
    replayable_until = checked_times(claims, now, "subject token")
    user_id = app_user_id(claims, "subject token")
    jti = claims.get("jti")
    username = claims.get("preferred_username")
    return Assertion(
        user_id,
        None if jti is None else _jti_key(jti),
        replayable_until,
        username if valid_username(username) else None,
        trusted.issuer,
    )


def _verified_claims(
    token: str, key: VerifyingKey, alg: str, trusted: TrustedIssuer
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[alg],
            audience=trusted.audience,
            issuer=trusted.issuer,
            options={
                "require": ["iss", "aud", "sub", "exp"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidAudienceError:
        raise InvalidGrant(f"the subject token's aud must be {trusted.audience}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidGrant(f"the subject token has no {exc.claim} claim") from None
    except jwt.InvalidSignatureError:
        raise InvalidGrant("the subject token's signature does not verify") from None
    except jwt.PyJWTError:
        raise InvalidGrant("the subject token is not a valid JWT of its issuer") from None
    return strict_claims(claims, "subject token")


def _jti_key(jti: object) -> str:
    """A provider's ``jti`` as recorded: a digest, as long whatever the provider's ids are."""
    if not isinstance(jti, str) or not jti:
        raise InvalidGrant("the subject token's jti must be a non-empty string")
    return hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()
