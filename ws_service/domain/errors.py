"""The gateway's one exception tree.

Every failure carries a machine-readable ``code``. ``protocol.py`` turns them into frames, and into a
close by looking the code up in ``realtime_gateway_protocol.close_codes`` (where a code that closes is a reason).
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "AuthTimeout",
    "BadRequest",
    "Forbidden",
    "GatewayError",
    "HistoryFull",
    "InvalidChannel",
    "InvalidProof",
    "InvalidToken",
    "KeyWithdrawn",
    "KeysUnavailable",
    "NotAuthenticated",
    "NotEnabled",
    "NotSubscribed",
    "ProxyUnavailable",
    "RateLimited",
    "RequestError",
    "SessionRevoked",
    "SubjectMismatch",
    "TokenExpired",
    "TooManyConnections",
    "TooManySubscriptions",
    "Unavailable",
    "Unconfirmed",
]


class GatewayError(Exception):
    """Root of every error the gateway reports to a client."""

    code = "internal_error"
    message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message


class AuthError(GatewayError):
    """Authentication failed. ``retry`` tells the client whether another ``auth`` may succeed;
    ``subject`` is the user of a valid token refused for who it is (revoked, withdrawn key, the
    per-user cap), for the audit line."""

    code = "invalid_token"
    message = "the token is not valid"
    retry = False

    def __init__(self, message: str | None = None, *, subject: str | None = None) -> None:
        super().__init__(message)
        self.subject = subject


class InvalidToken(AuthError):
    pass


class InvalidProof(AuthError):
    """A DPoP-bound token (``cnf.jkt``) came without a valid proof of its key: missing, stale,
    replayed, for another URL or token, or made with another key. Retryable within the socket's
    attempts: a client makes a fresh proof."""

    code = "invalid_dpop_proof"
    message = "this token is DPoP-bound: auth needs a fresh proof of its key"
    retry = True


class TokenExpired(AuthError):
    code = "token_expired"
    message = "the token has expired"
    retry = True


class KeyWithdrawn(TokenExpired):
    """The key that signed the token was withdrawn (it leaked). To a client it is an expired token:
    it refreshes (refresh tokens do not depend on the key) and tries again with a token of the
    current key."""

    message = "the token's signing key was withdrawn; refresh the token"


class KeysUnavailable(AuthError):
    code = "keys_unavailable"
    message = "the signing keys are not available, try again"
    retry = True


class SessionRevoked(AuthError):
    code = "session_revoked"
    message = "the session has been revoked"


class SubjectMismatch(AuthError):
    code = "subject_mismatch"
    message = "the new token belongs to another user"


class AuthTimeout(AuthError):
    code = "auth_timeout"
    message = "no auth message in time"


class NotAuthenticated(AuthError):
    code = "not_authenticated"
    message = "the first message must be auth"


class TooManyConnections(AuthError):
    code = "too_many_connections"
    message = "too many connections for this user"


class RequestError(GatewayError):
    """A refused request on an authenticated socket: an ``error`` frame, the socket stays open."""

    code = "bad_request"
    message = "malformed message"


class BadRequest(RequestError):
    """``request_id``: the frame's own ``id`` when it was valid, for the error frame, where the
    frame was refused before it became a request (a ``type`` that is not a string)."""

    def __init__(self, message: str | None = None, *, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class Forbidden(RequestError):
    code = "forbidden"
    message = "not allowed on this channel"


class InvalidChannel(RequestError):
    code = "invalid_channel"
    message = "channel names are namespace:name, at most 128 characters of [A-Za-z0-9_.:@-]"


class NotSubscribed(RequestError):
    code = "not_subscribed"
    message = "not subscribed to this channel"


class RateLimited(RequestError):
    code = "rate_limited"
    message = "too many messages, slow down"


class TooManySubscriptions(RequestError):
    code = "too_many_subscriptions"
    message = "subscription limit reached"


class NotEnabled(RequestError):
    """History or presence asked of a namespace configured without it (``WS_HISTORY``, ``WS_PRESENCE``)."""

    code = "not_enabled"
    message = "this channel's namespace has no history or presence"


class Unavailable(RequestError):
    """History or presence asked while Redis cannot be reached: try again later."""

    code = "unavailable"
    message = "history and presence are unavailable right now, try again"


class ProxyUnavailable(RequestError):
    """The application's subscribe or publish proxy gave no answer (unreachable, slow, an error
    status, a malformed or oversized answer): refused, never allowed by default."""

    code = "proxy_unavailable"
    message = "the application could not be asked; try again"


class Unconfirmed(RequestError):
    """A publish Redis took but did not confirm (its reply was lost): it may have been delivered,
    so the gateway neither delivers it again nor says ``published``."""

    code = "unconfirmed"
    message = "Redis did not confirm the publish: it may or may not have been delivered"


class HistoryFull(RequestError):
    """A publish in a namespace with history that the history has no room for: nothing was stored
    or delivered."""

    code = "history_full"
    message = "channel history has no room for this message; try again later"
