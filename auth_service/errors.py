"""One exception tree for everything auth_service refuses.

Every error carries the OAuth-style ``code`` and the HTTP ``status``; the error middleware is the
single place that turns them into ``{"error", "error_description"}`` responses.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "InvalidClientToken",
    "InvalidCredentials",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "RefreshReuse",
    "RegistrationClosed",
    "StoreUnavailable",
    "Throttled",
    "UnsupportedGrantType",
    "UnsupportedMediaType",
    "UsernameTaken",
]


class AuthError(Exception):
    code = "server_error"
    status = 500

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidRequest(AuthError):
    code = "invalid_request"
    status = 400


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"
    status = 415


class InvalidScope(AuthError):
    code = "invalid_scope"
    status = 400


class UnsupportedGrantType(AuthError):
    code = "unsupported_grant_type"
    status = 400


class InvalidGrant(AuthError):
    """Wrong credentials or an unusable refresh token. ``status`` is 400 on /v1/token (RFC 6749)."""

    code = "invalid_grant"
    status = 400


class InvalidCredentials(InvalidGrant):
    """Wrong username or password: ``invalid_grant`` like the token endpoint, but 401 on login."""

    status = 401


class RefreshReuse(InvalidGrant):
    """A rotated refresh token came back; ``family_revoked`` tells whether it was outside the grace."""

    def __init__(self, description: str, *, family_revoked: bool) -> None:
        super().__init__(description)
        self.family_revoked = family_revoked


class InvalidClientToken(AuthError):
    """A bearer access token that is missing, malformed, expired or not ours."""

    code = "invalid_token"
    status = 401


class UsernameTaken(AuthError):
    code = "username_taken"
    status = 409


class RegistrationClosed(AuthError):
    code = "registration_disabled"
    status = 403


class Throttled(AuthError):
    code = "too_many_attempts"
    status = 429

    def __init__(self, description: str, *, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class StoreUnavailable(AuthError):
    code = "temporarily_unavailable"
    status = 503
