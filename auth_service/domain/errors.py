"""One exception tree for everything auth_service refuses, free of any transport.

Every error carries a machine-readable, OAuth-style ``code`` and a human ``description``; errors
a client may retry carry ``retry_after`` seconds. The HTTP layer maps the tree to statuses in one
table (:data:`auth_service.http.HTTP_STATUSES`), the CLI prints the description.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AuthError",
    "CsrfRejected",
    "InvalidAuthorizationDetails",
    "InvalidClient",
    "InvalidClientToken",
    "InvalidCredentials",
    "InvalidDpopProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidTarget",
    "IssuerUnavailable",
    "KeyRingError",
    "RefreshReuse",
    "RegistrationClosed",
    "StoreUnavailable",
    "Throttled",
    "UnauthorizedClient",
    "UnprovenKey",
    "UnsupportedGrantType",
    "UnsupportedMediaType",
    "UseDpopNonce",
    "UsernameTaken",
]


class AuthError(Exception):
    code = "server_error"
    retry_after: int | None = None

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidRequest(AuthError):
    code = "invalid_request"


class InvalidSubjectToken(InvalidRequest):
    """A token exchange's subject token that does not verify, has expired, was replayed or is
    not acceptable: RFC 8693 section 2.2.2 makes that ``invalid_request``, not ``invalid_grant``."""


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


class InvalidScope(AuthError):
    code = "invalid_scope"


class InvalidAuthorizationDetails(AuthError):
    """RFC 9396 section 5: ``authorization_details`` malformed, of an unknown type, or beyond
    what the client may grant."""

    code = "invalid_authorization_details"


class InvalidTarget(AuthError):
    """RFC 8693 section 2.2.2: a token for an ``audience`` this issuer does not sign for."""

    code = "invalid_target"


class UnauthorizedClient(AuthError):
    """An authenticated client asking for a grant type it was not registered for."""

    code = "unauthorized_client"


class UnsupportedGrantType(AuthError):
    code = "unsupported_grant_type"


class InvalidGrant(AuthError):
    """Wrong credentials or an unusable refresh token (RFC 6749 ``invalid_grant``)."""

    code = "invalid_grant"


class SessionEnded(InvalidGrant):
    """A refresh token nothing will ever exchange again: unknown, expired, or its session
    revoked. A browser's session cookie holding one is cleared with the refusal."""


class InvalidCredentials(InvalidGrant):
    """Wrong username or password: ``invalid_grant`` like the token endpoint, told apart on login."""


class RefreshReuse(InvalidGrant):
    """A rotated refresh token came back; ``family_revoked`` tells whether it was outside the grace."""

    def __init__(self, description: str, *, family_revoked: bool) -> None:
        super().__init__(description)
        self.family_revoked = family_revoked


class InvalidDpopProof(AuthError):
    """RFC 9449 section 5: the ``DPoP`` proof of a request is malformed, does not match the
    request, was used before, or is missing where one is required. At a protected resource
    (``/v1/ws-ticket``, ``/v1/logout``) it is answered as an :class:`InvalidClientToken` of this
    code instead (401, a ``DPoP`` challenge)."""

    code = "invalid_dpop_proof"


class UseDpopNonce(InvalidDpopProof):
    """RFC 9449 section 8: server nonces are on and the proof lacks the current one; the response
    carries a fresh ``DPoP-Nonce`` to sign again with."""

    code = "use_dpop_nonce"


class UnprovenKey(InvalidGrant):
    """RFC 9449 section 5: a DPoP-bound refresh token (or session cookie) presented without a
    proof of its key, or with a proof of another key: a stolen token replayed elsewhere. Audited
    as an attack; nothing else happens to the family."""


class InvalidClient(AuthError):
    """Client authentication failed (RFC 6749 section 5.2): an unknown client, a wrong secret, a
    method this server does not support, or none where one is needed. Answered with a ``Basic``
    challenge, the scheme confidential clients use."""

    code = "invalid_client"


class AccessDenied(AuthError):
    """An authenticated client asking about what is not its own (another client's users)."""

    code = "access_denied"


class InvalidClientToken(AuthError):
    """A bearer access token that is missing, malformed, expired or not ours. ``dpop``: the
    refusal concerns a DPoP-bound token or its proof (RFC 9449 section 7.1), so the challenge is
    ``DPoP`` with this ``code`` (``invalid_token``, ``invalid_dpop_proof``, ``use_dpop_nonce``).
    ``missing``: the request carried no credentials at all, so the challenge names no error (RFC
    6750 section 3.1)."""

    code = "invalid_token"
    dpop = False
    missing = False

    def __init__(
        self,
        description: str,
        *,
        code: str | None = None,
        dpop: bool = False,
        missing: bool = False,
    ) -> None:
        super().__init__(description)
        if code is not None:
            self.code = code
        self.dpop = dpop
        self.missing = missing


class UsernameTaken(AuthError):
    code = "username_taken"


class RegistrationClosed(AuthError):
    code = "registration_disabled"


class Throttled(AuthError):
    code = "too_many_attempts"

    def __init__(self, description: str, *, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class CsrfRejected(AuthError):
    """A cookie-authenticated request without our Origin or the session's CSRF token."""

    code = "csrf_failed"


class StoreUnavailable(AuthError):
    """The database (or what the service needs from it, such as a signing key) cannot answer now."""

    code = "temporarily_unavailable"
    retry_after = 2


class IssuerUnavailable(AuthError):
    """A trusted identity provider's key set cannot be fetched now (none yet, or the refetch for
    an unknown key failed): the subject token may well be good, so try again."""

    code = "temporarily_unavailable"
    retry_after = 2


class KeyRingError(AuthError):
    """A stored key cannot be used (no configured secret decrypts it), or a rotation lost a race."""

    code = "key_ring_error"
