"""Signing-key announcements: what auth_service publishes on :data:`KEYS_TOPIC` when its key ring
changes, and what every auth replica and ws replica acts on.

``key_rotated`` makes auth replicas reload their ring at once (their reload timer is the fallback).
``key_withdrawn`` says that a key must not be trusted any more (it leaked): auth replicas reload
(the key is gone from the store), and every ws replica drops it from its key cache, never fetches
it back, and gives the sockets its tokens opened a short deadline to renew.

Decoding is strict about the fields it reads (exact types, a bounded kid of base64url characters,
as RFC 7638 thumbprints are) and ignores members it does not know, so that a newer publisher adding
one never makes an older gateway ignore a withdrawal.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from realtime_gateway_protocol.wire_json import WireJSONError, loads

__all__ = [
    "KEYS_TOPIC",
    "KeyEvent",
    "KeyRotated",
    "KeyWithdrawn",
    "decode_key_event",
    "encode_key_event",
]

KEYS_TOPIC = "auth.keys"
MAX_PAYLOAD = 1024
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True, slots=True)
class KeyRotated:
    kid: str
    generation: int
    type: str = "key_rotated"


@dataclass(frozen=True, slots=True)
class KeyWithdrawn:
    kid: str
    type: str = "key_withdrawn"


KeyEvent = KeyRotated | KeyWithdrawn


def encode_key_event(event: KeyEvent) -> str:
    return json.dumps(asdict(event), separators=(",", ":"))


def decode_key_event(payload: str) -> KeyEvent:
    """Parse a bus payload; raises ``ValueError`` for anything that is not a well-formed event."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("key announcement too large")
    try:
        data: Any = loads(payload)  # strict: finite numbers, bounded depth
    except WireJSONError as exc:
        raise ValueError(f"key announcement is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("key announcement is not an object")
    kid = data.get("kid")
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise ValueError("key announcement without a valid kid")
    kind = data.get("type")
    if kind == "key_withdrawn":
        return KeyWithdrawn(kid)
    if kind == "key_rotated":
        generation = data.get("generation")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
            raise ValueError("key_rotated without a valid generation")
        return KeyRotated(kid, generation)
    raise ValueError(f"unknown key announcement type: {kind!r}")
