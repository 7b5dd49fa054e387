"""The frames on the socket: the subprotocols, the frame types each side sends, and the JSON Schema
(``schema.json``, 2020-12) that describes every one of them.

The schema is the contract clients and the gateway are tested against (docs/protocol.md is its
human version); the type lists here are what code switches on, and a test holds the two together.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = [
    "BEARER_PREFIX",
    "CLIENT_FRAME_TYPES",
    "MAX_EPOCH_LENGTH",
    "MAX_OFFSET",
    "PREAUTH_MAX_BYTES",
    "SERVER_FRAME_TYPES",
    "SUBPROTOCOL",
    "schema",
]

SUBPROTOCOL = "realtime.v1"
"""The version of this protocol, selected whenever a client offers it."""

BEARER_PREFIX = "realtime.bearer."
"""A subprotocol entry ``realtime.bearer.<access token>`` authenticates before the upgrade (only
beside ``realtime.v1``)."""

PREAUTH_MAX_BYTES = 16 * 1024
"""The largest frame a socket may send before it is authenticated."""

MAX_OFFSET = 2**63 - 1
"""The largest offset a stream can reach (and the largest ``limit``): Redis keeps the counter as
a signed 64-bit integer, so a position beyond it is a client's mistake, not something to look
up."""

MAX_EPOCH_LENGTH = 64
"""The longest epoch a client may send back: the gateway's are 8 hex digits, or a mark of a
backend's origin and a time in milliseconds."""

CLIENT_FRAME_TYPES = frozenset(
    {"auth", "history", "ping", "presence", "publish", "subscribe", "unsubscribe"}
)
SERVER_FRAME_TYPES = frozenset(
    {
        "auth_error",
        "auth_success",
        "error",
        "history",
        "join",
        "leave",
        "message",
        "pong",
        "presence",
        "published",
        "revoked",
        "subscribed",
        "token_expiring",
        "unsubscribed",
    }
)


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema: ``$defs/client_frame`` and ``$defs/server_frame`` each cover every type."""
    document: dict[str, Any] = json.loads(
        files(__package__).joinpath("schema.json").read_text(encoding="utf-8")
    )
    return document
