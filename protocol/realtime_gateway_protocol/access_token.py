"""The access-token contract between auth_service (the issuer) and ws_service (the verifier).

An access token is an RS256 JWT with header ``typ: at+jwt`` and the claims set of
:class:`AccessTokenPayload`. A DPoP-bound token (RFC 9449) carries ``cnf: {"jkt": <the RFC 7638
thumbprint of the client's key>}``: whoever presents it must prove that key. Its required keys are the claims a verifier insists on, so the issuer
(type-checked against the same TypedDict) can never leave one out.

A token may carry per-channel permissions, RFC 9396 ``authorization_details`` of the one type
``realtime_channels``. :func:`parse_authorization_details` is their one strict parser: the issuer
runs it on what a client asks for, and a verifier on what it finds in a token.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypedDict

__all__ = [
    "ACCESS_TOKEN_TYP",
    "ALGORITHM",
    "AUTHORIZATION_DETAILS_TYPE",
    "CHANNEL_ACTIONS",
    "MAX_AUTHORIZATION_DETAILS",
    "MAX_AUTHORIZATION_DETAILS_BYTES",
    "MAX_CHANNEL_ACTIONS",
    "MAX_DETAIL_CHANNELS",
    "REQUIRED_CLAIMS",
    "AccessTokenPayload",
    "AuthorizationDetail",
    "AuthorizationDetailsError",
    "ChannelGrant",
    "Claims",
    "Confirmation",
    "TokenRef",
    "parse_authorization_details",
    "parse_channel_actions",
    "same_media_type",
    "scope_set",
]

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)
ALGORITHM = "RS256"


class _RequiredClaims(TypedDict):
    iss: str
    sub: str
    aud: str | list[str]
    exp: int
    iat: int
    jti: str
    sid: str


class AuthorizationDetail(TypedDict):
    """One RFC 9396 entry: ``actions`` on ``channels`` (exact names, or prefixes ending in ``*``)."""

    type: str
    channels: list[str]
    actions: list[str]


class Confirmation(TypedDict):
    """RFC 9449 section 6.1: the key a DPoP-bound token is bound to, by its RFC 7638 thumbprint
    (base64url SHA-256)."""

    jkt: str


class AccessTokenPayload(_RequiredClaims, total=False):
    """The claims set the issuer signs: ``scope`` is space-separated, the optional claims may be
    absent."""

    scope: str
    preferred_username: str
    client_id: str
    """RFC 9068 section 2.2 (REQUIRED there): the client the token was issued to (``AUTH_CLIENT_ID``,
    or the app backend that exchanged it). Always issued; optional for this verifier."""
    authorization_details: list[AuthorizationDetail]
    """RFC 9396: per-channel permissions, when the token was exchanged with them; read it with
    :func:`parse_authorization_details`."""
    cnf: Confirmation
    """RFC 9449: present when the token is DPoP-bound; a verifier then demands a proof of
    ``cnf.jkt`` with every presentation."""


REQUIRED_CLAIMS: tuple[str, ...] = tuple(sorted(AccessTokenPayload.__required_keys__))
"""Every claim a verifier passes to pyjwt's ``options={"require": ...}``."""


@dataclass(frozen=True, slots=True)
class TokenRef:
    """What a revocation is about: a token's session, its user, and when it was issued."""

    sid: str
    sub: str
    iat: int


@dataclass(frozen=True, slots=True)
class Claims:
    """The parts of a verified access token a verifier acts on, kept for as long as its socket
    lives (``iss``/``aud`` are checked by pyjwt, ``jti`` is checked present; none is kept).
    ``kid`` names the key that signed it, so the sockets of a withdrawn key can be found; it is
    interned, so every socket of one key shares one string (a pointer per socket)."""

    sub: str
    sid: str
    iat: int
    exp: int
    scopes: frozenset[str]
    username: str | None
    kid: str
    grants: frozenset[tuple[str, str]] = frozenset()
    """``(action, channel)`` pairs the token's RFC 9396 ``authorization_details`` grant (a channel
    ending in ``*`` is a prefix). The verifier parses the claim (``from_payload`` leaves it
    empty) and shares one set per distinct value, as ``scope_set`` does for scopes."""
    jkt: str | None = None
    """The thumbprint of the key a DPoP-bound token is bound to (its ``cnf.jkt``), interned like
    ``kid`` (a socket's renewals must prove the same key); None for a bearer token."""

    @property
    def ref(self) -> TokenRef:
        return TokenRef(sid=self.sid, sub=self.sub, iat=self.iat)

    @classmethod
    def from_payload(
        cls, payload: Mapping[str, Any], kid: str, *, username_claim: str = "preferred_username"
    ) -> Claims:
        """Check the types pyjwt does not; raises ``ValueError`` with a reason a client may see.
        ``kid`` is the id of the key that verified it (the header's, a ticket's own included).
        Another identity provider's token may have no ``sid`` (then ``""``: no session) and
        name its user in another claim than ``preferred_username``."""
        sub, sid, jti = payload["sub"], payload.get("sid", ""), payload["jti"]
        scope = payload.get("scope", "")
        username = payload.get(username_claim)
        iat, exp = payload["iat"], payload["exp"]
        if (
            not all(isinstance(v, str) and v for v in (sub, jti))
            or not isinstance(sid, str)
            or not isinstance(scope, str)
        ):
            raise ValueError("the token's claims have the wrong types")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (iat, exp)):
            raise ValueError("the token's times are not numbers")
        return cls(
            jkt=_bound_key(payload.get("cnf")),
            sub=sub,
            sid=sid,
            iat=int(iat),
            exp=int(exp),
            scopes=scope_set(scope),
            username=username if isinstance(username, str) else None,
            kid=sys.intern(kid),
        )


def _bound_key(cnf: object) -> str | None:
    """``cnf.jkt``, interned; a ``cnf`` that binds the token some other way (mTLS, a raw key) is
    one this verifier cannot check, so the token is refused rather than taken as a bearer."""
    if cnf is None:
        return None
    if not isinstance(cnf, dict) or cnf.keys() != {"jkt"}:
        raise ValueError("the token's cnf is not a DPoP key binding (cnf.jkt only)")
    jkt = cnf["jkt"]
    if not isinstance(jkt, str) or not jkt:
        raise ValueError("the token's cnf.jkt must be a key thumbprint")
    return sys.intern(jkt)


def same_media_type(typ: object, expected: str) -> bool:
    """Whether a JOSE ``typ`` header names the media type ``expected`` (``at+jwt``,
    ``dpop+jwt``): RFC 7515 section 4.1.9 lets ``application/`` be left out, and media types
    compare without case, so ``AT+JWT`` and ``application/at+jwt`` name it too. ``typ`` comes
    from an unverified header: anything but a string (a list, an object) names no media type."""
    return isinstance(typ, str) and _media_type(typ) == _media_type(expected)


def _media_type(typ: str) -> str:
    typ = typ.lower()
    return typ if "/" in typ else f"application/{typ}"


@lru_cache(maxsize=1024)
def scope_set(scope: str) -> frozenset[str]:
    """One shared set per distinct scope string: a gateway holds a ``Claims`` per socket, and most
    users carry the same scope (a frozenset is 216 bytes; this keeps it once, not per socket)."""
    return frozenset(scope.split())


AUTHORIZATION_DETAILS_TYPE = "realtime_channels"
CHANNEL_ACTIONS = frozenset({"subscribe", "publish", "history", "presence"})
MAX_AUTHORIZATION_DETAILS = 16
"""Entries in one list."""
MAX_DETAIL_CHANNELS = 64
"""Channels (names and prefixes) in one entry."""
MAX_CHANNEL_ACTIONS = 256
"""Distinct (action, channel or prefix) pairs the whole list grants: the gateway may scan them
all on a check, and every socket keeps them."""
MAX_AUTHORIZATION_DETAILS_BYTES = 4096
"""The list as compact JSON: what it adds to every access token, ticket and ``Authorization``
header that carries it."""
MAX_CHANNEL_LENGTH = 128
_CHANNEL = re.compile(r"[A-Za-z0-9_.@-]+:(?:[A-Za-z0-9_.:@-]+|[A-Za-z0-9_.:@-]*\*)")
"""The gateway's channel syntax (``namespace:name``), or a prefix of it that names the whole
namespace and ends in ``*``: ``doc:123``, ``team:7.*``, ``doc:*``. A bare ``*`` is not a channel."""
_FIELDS = frozenset(AuthorizationDetail.__required_keys__)


class AuthorizationDetailsError(ValueError):
    """``authorization_details`` that are not a well-formed ``realtime_channels`` list (RFC 9396
    ``invalid_authorization_details``); the message says where, and may be shown to a client."""


@dataclass(frozen=True, slots=True)
class ChannelGrant:
    """One parsed entry: ``actions`` are allowed on the channels named in ``exact`` and on every
    channel that starts with one of ``prefixes`` (the entries' ``*`` removed)."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]
    actions: frozenset[str]

    def allows(self, action: str, channel: str) -> bool:
        return action in self.actions and (
            channel in self.exact or channel.startswith(self.prefixes)
        )

    @property
    def namespaces(self) -> frozenset[str]:
        """The namespaces (before the first ``:``) this entry reaches."""
        return frozenset(c.partition(":")[0] for c in (*self.exact, *self.prefixes))


def parse_authorization_details(value: object) -> tuple[ChannelGrant, ...]:
    """Parse a decoded ``authorization_details`` value, or raise
    :class:`AuthorizationDetailsError`: a non-empty list of at most
    :data:`MAX_AUTHORIZATION_DETAILS` objects with exactly the fields ``type``
    (``realtime_channels``), ``channels`` (1 to :data:`MAX_DETAIL_CHANNELS` distinct channel names or
    prefixes) and ``actions`` (distinct members of :data:`CHANNEL_ACTIONS`), at most
    :data:`MAX_AUTHORIZATION_DETAILS_BYTES` as compact JSON, granting at most
    :data:`MAX_CHANNEL_ACTIONS` (action, channel) pairs. Unknown types and fields are refused, not
    ignored, as RFC 9396 section 5 requires."""
    return _parsed(value)[0]


def parse_channel_actions(value: object) -> frozenset[tuple[str, str]]:
    """The ``(action, channel)`` pairs a decoded ``authorization_details`` value grants (a prefix
    keeps its ``*``), checked as :func:`parse_authorization_details` checks it."""
    return _parsed(value)[1]


def _parsed(value: object) -> tuple[tuple[ChannelGrant, ...], frozenset[tuple[str, str]]]:
    if not isinstance(value, list) or not value:
        raise AuthorizationDetailsError("authorization_details must be a non-empty JSON array")
    if len(value) > MAX_AUTHORIZATION_DETAILS:
        raise AuthorizationDetailsError(
            f"authorization_details has more than {MAX_AUTHORIZATION_DETAILS} entries"
        )
    grants = tuple(_grant(entry, f"authorization_details[{i}]") for i, entry in enumerate(value))
    if len(json.dumps(value, separators=(",", ":"))) > MAX_AUTHORIZATION_DETAILS_BYTES:
        raise AuthorizationDetailsError(
            f"authorization_details is over {MAX_AUTHORIZATION_DETAILS_BYTES} bytes as JSON"
        )
    # Checked here, where the issuer parses too: it granted 512 pairs that the gateway, counting
    # them on its own, refused in every token of the session (an outside probe).
    pairs = frozenset(
        (action, channel)
        for grant in grants
        for action in grant.actions
        for channel in (*grant.exact, *(f"{prefix}*" for prefix in grant.prefixes))
    )
    if len(pairs) > MAX_CHANNEL_ACTIONS:
        raise AuthorizationDetailsError(
            f"authorization_details grants more than {MAX_CHANNEL_ACTIONS} channel actions"
        )
    return grants, pairs


def _grant(entry: object, where: str) -> ChannelGrant:
    if not isinstance(entry, dict) or entry.keys() != _FIELDS:
        raise AuthorizationDetailsError(
            f"{where} must be an object with exactly the fields {', '.join(sorted(_FIELDS))}"
        )
    if entry["type"] != AUTHORIZATION_DETAILS_TYPE:
        raise AuthorizationDetailsError(
            f"{where}.type must be {AUTHORIZATION_DETAILS_TYPE!r} (the only type supported)"
        )
    channels = _strings(entry["channels"], f"{where}.channels", MAX_DETAIL_CHANNELS)
    for channel in channels:
        if len(channel) > MAX_CHANNEL_LENGTH or not _CHANNEL.fullmatch(channel):
            raise AuthorizationDetailsError(
                f"{where}.channels: {channel[:MAX_CHANNEL_LENGTH]!r} is not a channel "
                "(namespace:name) or a prefix of one ending in '*'"
            )
    actions = _strings(entry["actions"], f"{where}.actions", len(CHANNEL_ACTIONS))
    unknown = sorted(set(actions) - CHANNEL_ACTIONS)
    if unknown:
        raise AuthorizationDetailsError(
            f"{where}.actions: {unknown[0][:32]!r} is not one of {', '.join(sorted(CHANNEL_ACTIONS))}"
        )
    return ChannelGrant(
        exact=frozenset(c for c in channels if not c.endswith("*")),
        prefixes=tuple(c[:-1] for c in channels if c.endswith("*")),
        actions=frozenset(actions),
    )


def _strings(value: object, where: str, most: int) -> list[str]:
    """A non-empty list of at most ``most`` distinct strings."""
    if not isinstance(value, list) or not value or len(value) > most:
        raise AuthorizationDetailsError(f"{where} must be a list of 1 to {most} strings")
    if not all(isinstance(item, str) for item in value):
        raise AuthorizationDetailsError(f"{where} must hold strings only")
    if len(set(value)) != len(value):
        raise AuthorizationDetailsError(f"{where} repeats an item")
    return value
