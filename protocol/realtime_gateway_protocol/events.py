"""Revocation events that auth_service publishes and every ws replica acts on.

``until`` is the latest ``exp`` any access token of the revoked session (or user) can carry, so a
verifier knows how long it has to remember the revocation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from realtime_gateway_protocol.wire_json import loads

__all__ = [
    "LEDGER_RESTORED_TOPIC",
    "REVOCATIONS_TOPIC",
    "RevocationEvent",
    "SessionRevoked",
    "UserRevoked",
    "decode_event",
    "encode_event",
    "record_key",
]

REVOCATIONS_TOPIC = "auth.revocations"
LEDGER_RESTORED_TOPIC = "auth.ledger_restored"
"""auth_service wrote the revocation ledger back after Redis lost it (the payload is not read):
each ws replica checks its live sockets against it again, since its own check after the
reconnection ran against the empty ledger."""


@dataclass(frozen=True, slots=True)
class SessionRevoked:
    sid: str
    sub: str
    until: int
    type: str = "session_revoked"


@dataclass(frozen=True, slots=True)
class UserRevoked:
    sub: str
    issued_before: int
    until: int
    type: str = "user_revoked"


RevocationEvent = SessionRevoked | UserRevoked


def record_key(event: RevocationEvent) -> str:
    """What ``event`` revokes, as the one record kept of it: ``sid:<sid>`` for a session,
    ``user:<sub>`` for a user (a later event for the same one supersedes it)."""
    return f"sid:{event.sid}" if isinstance(event, SessionRevoked) else f"user:{event.sub}"


def encode_event(event: RevocationEvent) -> str:
    return json.dumps(asdict(event), separators=(",", ":"))


def decode_event(payload: str) -> RevocationEvent:
    """Parse a bus payload; raises ``ValueError`` for anything that is not a known event. The
    bus is shared, so its payloads are read as strictly as a client's frame (finite numbers,
    bounded depth): ``Infinity`` or deep nesting raised OverflowError or RecursionError."""
    try:
        data: Any = loads(payload)
        kind = data["type"]
        if kind == "session_revoked":
            return SessionRevoked(
                sid=str(data["sid"]), sub=str(data["sub"]), until=int(data["until"])
            )
        if kind == "user_revoked":
            return UserRevoked(
                sub=str(data["sub"]),
                issued_before=int(data["issued_before"]),
                until=int(data["until"]),
            )
    except (KeyError, TypeError, ValueError) as exc:  # WireJSONError is a ValueError
        raise ValueError(f"malformed revocation event: {exc}") from exc
    raise ValueError(f"unknown revocation event type: {kind!r}")
