"""Every way ws_service closes a socket: code, reason, and what a client must do next.

The server closes only with a row of :class:`Disconnect`; clients decide from the row's
:class:`Action`, never from the reason text. Application refusals are ``4000 + the HTTP status``,
transport events keep their RFC 6455 codes, so one code can carry several reasons (4401 is any
authentication failure). docs/protocol.md lists this table, and a test holds the two together.

Stdlib only: the Python client imports it.
"""

from __future__ import annotations

from enum import Enum, IntEnum

__all__ = ["Action", "CloseCode", "Disconnect", "action_for"]


class Action(Enum):
    RECONNECT = "reconnect"
    """Reconnect after a backoff with jitter; the session is still good."""
    REFRESH_THEN_RECONNECT = "refresh_then_reconnect"
    """Refresh the access token over REST, then reconnect."""
    STOP = "stop"
    """Do not reconnect: the credentials or the client itself must change first."""


class CloseCode(IntEnum):
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    TIMEOUT = 4408
    TOO_MANY_REQUESTS = 4429


class Disconnect(Enum):
    """One row per reason: the reason is the machine-readable error code sent as the close reason
    (empty for 1009, which aiohttp sends by itself)."""

    code: CloseCode
    reason: str
    action: Action

    GOING_AWAY = (CloseCode.GOING_AWAY, "going_away", Action.RECONNECT)
    MESSAGE_TOO_BIG = (CloseCode.MESSAGE_TOO_BIG, "", Action.STOP)
    INTERNAL_ERROR = (CloseCode.INTERNAL_ERROR, "internal_error", Action.RECONNECT)
    DRAINING = (CloseCode.SERVICE_RESTART, "draining", Action.RECONNECT)
    MISSED_MESSAGES = (CloseCode.SERVICE_RESTART, "missed_messages", Action.RECONNECT)
    SLOW_CONSUMER = (CloseCode.TRY_AGAIN_LATER, "slow_consumer", Action.RECONNECT)
    BAD_REQUEST = (CloseCode.BAD_REQUEST, "bad_request", Action.STOP)
    INVALID_TOKEN = (CloseCode.UNAUTHORIZED, "invalid_token", Action.STOP)
    TOKEN_EXPIRED = (CloseCode.UNAUTHORIZED, "token_expired", Action.REFRESH_THEN_RECONNECT)
    KEYS_UNAVAILABLE = (CloseCode.UNAUTHORIZED, "keys_unavailable", Action.RECONNECT)
    NOT_AUTHENTICATED = (CloseCode.UNAUTHORIZED, "not_authenticated", Action.STOP)
    INVALID_DPOP_PROOF = (CloseCode.UNAUTHORIZED, "invalid_dpop_proof", Action.STOP)
    SESSION_REVOKED = (CloseCode.FORBIDDEN, "session_revoked", Action.STOP)
    SUBJECT_MISMATCH = (CloseCode.FORBIDDEN, "subject_mismatch", Action.STOP)
    DISCONNECTED = (CloseCode.FORBIDDEN, "disconnected", Action.STOP)
    AUTH_TIMEOUT = (CloseCode.TIMEOUT, "auth_timeout", Action.RECONNECT)
    RATE_LIMITED = (CloseCode.TOO_MANY_REQUESTS, "rate_limited", Action.RECONNECT)
    TOO_MANY_CONNECTIONS = (CloseCode.TOO_MANY_REQUESTS, "too_many_connections", Action.RECONNECT)

    def __init__(self, code: CloseCode, reason: str, action: Action) -> None:
        self.code = code
        self.reason = reason
        self.action = action

    @classmethod
    def for_reason(cls, reason: str) -> Disconnect | None:
        return _BY_REASON.get(reason)


_BY_REASON = {row.reason: row for row in Disconnect}
_STOPPING_CODES = frozenset(row.code for row in Disconnect if row.action is Action.STOP)


def action_for(code: int | None, reason: str) -> Action:
    """The row's action for this close. A close the table does not list (a dropped connection, a
    new reason) reconnects, unless its code can mean "stop": then the client stops rather than
    retry credentials or frames that may be wrong."""
    row = _BY_REASON.get(reason)
    if row is not None and row.code == code:
        return row.action
    return Action.STOP if code in _STOPPING_CODES else Action.RECONNECT
