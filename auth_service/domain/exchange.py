"""RFC 8693 token exchange: what an app backend's assertion about its user must be, and what the
client may ask for with it.

The assertion (the ``subject_token``) is a JWT the backend signs HS256 with its client secret:
``iss`` its client id, ``aud`` this issuer, ``sub`` the app's user id, ``exp`` at most
:data:`MAX_ASSERTION_LIFETIME` ahead, a ``jti`` used once, and optionally ``preferred_username``.
Times are checked against the injected clock, with :data:`LEEWAY` for the two machines' clocks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from auth_service.domain.errors import InvalidAuthorizationDetails, InvalidGrant, InvalidScope
from auth_service.domain.models import Client
from realtime_gateway_protocol.access_token import (
    MAX_AUTHORIZATION_DETAILS_BYTES,
    AuthorizationDetailsError,
    parse_authorization_details,
)
from realtime_gateway_protocol.wire_json import WireJSONError, check, loads

__all__ = [
    "ASSERTION_ALGORITHM",
    "ISSUED_TOKEN_TYPE",
    "LEEWAY",
    "MAX_ASSERTION_LIFETIME",
    "SUBJECT_TOKEN_TYPE",
    "Assertion",
    "allowed_details",
    "allowed_scope",
    "app_user_id",
    "checked_times",
    "scope_tokens",
    "strict_claims",
    "valid_username",
    "verify_assertion",
]

SUBJECT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 (a URN)
ISSUED_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN)
ASSERTION_ALGORITHM = "HS256"
MAX_ASSERTION_LIFETIME = 300
LEEWAY = 30
APP_USER_ID_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,80}")
"""The channel-name alphabet, so that ``user:<client>:<app user>`` is the user's own channel."""
MAX_JTI, MAX_USERNAME = 128, 64
_SUB_RULE = "the {what}'s sub must be 1-80 characters of A-Z a-z 0-9 _ . : @ -"
_JTI_RULE = f"the assertion's jti must be a string of 1-{MAX_JTI} characters"
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_READ, _WRITE = "read", "write"
SCOPE_OF_ACTION = {"subscribe": _READ, "history": _READ, "presence": _READ, "publish": _WRITE}
"""Which namespace scope grants each action everywhere in a namespace (``ns:read``, ``ns:write``;
docs/protocol.md, "Channels"): what a client limited to a scope may hand out channel by channel."""


@dataclass(frozen=True, slots=True)
class Assertion:
    """What a verified subject token says: the app's assertion, or a trusted identity
    provider's token (``issuer`` set)."""

    user_id: str
    """The app's own id of its user (``sub``), not yet in the client's namespace."""
    jti: str | None
    """Kept used until ``replayable_until``; None for a provider's token without one."""
    replayable_until: float
    """The last moment the token verifies (``exp`` plus the leeway)."""
    username: str | None
    issuer: str | None = None
    """The identity provider that issued the token; None for the app's own assertion."""


def verify_assertion(
    token: str, *, client_id: str, secrets: Sequence[str], audience: str, now: float
) -> Assertion:
    """The assertion's claims, or :class:`InvalidGrant` saying what is wrong with it."""
    claims = _verified_claims(token, client_id, secrets, audience)
    replayable_until = checked_times(claims, now, "assertion", MAX_ASSERTION_LIFETIME)
    user_id = app_user_id(claims, "assertion")
    jti, username = claims["jti"], claims.get("preferred_username")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        raise InvalidGrant(_JTI_RULE)
    if username is not None and not valid_username(username):
        raise InvalidGrant(
            f"the assertion's preferred_username must be 1-{MAX_USERNAME} printable characters"
        )
    return Assertion(user_id, jti, replayable_until, username)


def checked_times(
    claims: dict[str, Any], now: float, what: str, max_lifetime: float | None = None
) -> float:
    """The last moment a token of these claims verifies (``exp`` plus the leeway), once ``exp``
    is ahead of ``now`` (by at most ``max_lifetime``) and ``iat``/``nbf`` are not: pyjwt's own
    checks read the machine's clock, these the injected one."""
    exp = claims["exp"]
    if not _is_time(exp):
        raise InvalidGrant(f"the {what}'s exp is not a number")
    if exp + LEEWAY <= now:
        raise InvalidGrant(f"the {what} has expired")
    if max_lifetime is not None and exp > now + max_lifetime + LEEWAY:
        raise InvalidGrant(f"the {what}'s exp is more than {max_lifetime} s ahead")
    for name in ("iat", "nbf"):
        if name in claims and (not _is_time(claims[name]) or claims[name] > now + LEEWAY):
            raise InvalidGrant(f"the {what}'s {name} is not a time in the past")
    return float(exp) + LEEWAY


def app_user_id(claims: dict[str, Any], what: str) -> str:
    """The ``sub``, if it can be the app's user id: the rest of a subject in the client's
    namespace, and of the user's own channel."""
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not APP_USER_ID_RE.fullmatch(user_id):
        raise InvalidGrant(_SUB_RULE.format(what=what))
    return user_id


def valid_username(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_USERNAME and value.isprintable()


def _verified_claims(
    token: str, client_id: str, secrets: Sequence[str], audience: str
) -> dict[str, Any]:
    """Decode with each of the client's secrets in turn (two while a rotation's grace lasts).
    The algorithm is pinned; times are left to the caller, who has the clock."""
    for secret in secrets:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[ASSERTION_ALGORITHM],
                audience=audience,
                issuer=client_id,
                options={
                    "require": ["iss", "aud", "sub", "exp", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidAudienceError:
            raise InvalidGrant(f"the assertion's aud must be this issuer, {audience}") from None
        except jwt.InvalidIssuerError:
            raise InvalidGrant("the assertion's iss must be the client's id") from None
        except jwt.exceptions.InvalidSubjectError:
            raise InvalidGrant(_SUB_RULE.format(what="assertion")) from None
        except jwt.exceptions.InvalidJTIError:
            raise InvalidGrant(_JTI_RULE) from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidGrant(f"the assertion has no {exc.claim} claim") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidGrant(f"the assertion must be signed {ASSERTION_ALGORITHM}") from None
        except jwt.PyJWTError:
            raise InvalidGrant("the assertion is not a well-formed JWT") from None
        return strict_claims(claims, "assertion")
    raise InvalidGrant("the assertion's signature does not verify with the client's secret")


def strict_claims(claims: dict[str, Any], what: str) -> dict[str, Any]:
    """``claims`` that pyjwt decoded, held to the wire's JSON rules: its parser takes lone
    surrogates, NaN and integers past a double, which would fail later (a Redis key, a frame)."""
    try:
        check(claims)
    except WireJSONError as exc:
        raise InvalidGrant(f"the {what}'s claims are not valid JSON: {exc}") from None
    return claims


def _is_time(value: object) -> bool:
    """A number of seconds: not a bool, not NaN or infinite (pyjwt's JSON takes ``NaN``, which
    compares false with everything and so would pass every window)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scope_tokens(requested: str) -> list[str]:
    """A requested ``scope`` as its tokens (RFC 6749 section 3.3): separated by spaces (0x20; a
    run of them, or one at either end, is let pass), each printable ASCII other than ``"`` and
    ``\\``. ``str.split()`` would also split on tabs, line breaks and Unicode spaces (U+00A0,
    U+3000), which are none."""
    wanted = [token for token in requested.split(" ") if token]
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in wanted):
        raise InvalidScope(
            "a scope is space-separated printable ASCII other than the double quote and the "
            "backslash"
        )
    return wanted


def allowed_scope(client: Client, requested: str | None, default: str) -> str:
    """The scope granted: what was asked for, within the client's registered scope (any scope
    when it has none); nothing asked, the client's scope or else the server's default."""
    if requested is None:
        return default if client.scope is None else client.scope
    wanted = scope_tokens(requested)
    if client.scope is not None:
        extra = sorted(set(wanted) - set(client.scope.split()))
        if extra:
            raise InvalidScope(f"the client may not grant the scope {extra[0]!r}")
    return " ".join(dict.fromkeys(wanted))


def kept_details(kept: str | None, requested: object) -> None:
    """A refresh may send ``authorization_details`` (RFC 9396 section 6), but only the ones its
    session was granted (``kept``, compact JSON), in any key order or spacing: a token of fewer
    rights comes from a token exchange asking for fewer, not from a refresh, so a client asking
    for less is refused rather than handed the session's whole grant."""
    if requested is None:
        return
    if kept is None or _canonical(_decoded(requested)) != _canonical(json.loads(kept)):
        raise InvalidAuthorizationDetails(
            "a refresh may only repeat the session's authorization_details: it cannot change them"
        )


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _decoded(requested: object) -> object:
    """``authorization_details`` as asked for: a form sends them as a JSON string, a JSON body
    may send the array itself."""
    if not isinstance(requested, str):
        return requested
    if len(requested) > 4 * MAX_AUTHORIZATION_DETAILS_BYTES:
        raise InvalidAuthorizationDetails("authorization_details is too large")
    try:
        return loads(requested, unique_keys=True)
    except WireJSONError as exc:
        raise InvalidAuthorizationDetails(f"authorization_details is not JSON: {exc}") from None


def allowed_details(client: Client, requested: object) -> str | None:
    """The ``authorization_details`` granted, as compact JSON to keep with the session: None when
    none were asked for. A form sends them as a JSON string, a JSON body may send the array.
    A client limited to namespaces may name no channel outside them; one limited to a scope may
    grant an action on a channel only where its scope grants it on the whole namespace."""
    if requested is None:
        return None
    requested = _decoded(requested)
    try:
        grants = parse_authorization_details(requested)
    except AuthorizationDetailsError as exc:
        raise InvalidAuthorizationDetails(str(exc)) from None
    spaces = None if client.namespaces is None else set(client.namespaces.split())
    scope = None if client.scope is None else set(client.scope.split())
    for grant in grants:
        for namespace in sorted(grant.namespaces):
            if spaces is not None and namespace not in spaces:
                raise InvalidAuthorizationDetails(
                    f"the client may not grant channels of the namespace {namespace!r}"
                )
            for action in sorted(grant.actions):
                needed = f"{namespace}:{SCOPE_OF_ACTION[action]}"
                if scope is not None and needed not in scope:
                    raise InvalidAuthorizationDetails(
                        f"the client may not grant {action} in {namespace!r} (its scope has no "
                        f"{needed})"
                    )
    return json.dumps(requested, separators=(",", ":"))
