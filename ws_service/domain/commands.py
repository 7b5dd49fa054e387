"""The server API's commands to every replica, and their one encoding on the bus.

``POST /v1/disconnect`` and the other actions and counts of the server API reach every replica as
one message on :data:`CONTROL_TOPIC`: ``{"id", "reply_to", "command": {"type", ...}}``. Each
replica acts on its own sockets and answers on the asker's ``reply_to`` topic with
``{"id", "replica", "result"}``. Both directions are decoded strictly (unknown types, missing or
extra fields, wrong types are refused): a message on a shared Redis is input like any other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from realtime_gateway_protocol.wire_json import WireJSONError, dumps, loads

__all__ = [
    "CONTROL_TOPIC",
    "REPLY_TOPIC_PREFIX",
    "Command",
    "CountConnections",
    "DisconnectUser",
    "ListChannels",
    "Reply",
    "Request",
    "SubscribeUser",
    "UnsubscribeUser",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]

CONTROL_TOPIC = "ws.control"
REPLY_TOPIC_PREFIX = "ws.reply:"


@dataclass(frozen=True, slots=True)
class DisconnectUser:
    """Close the user's sockets (only those of ``session`` when given) with 4403 ``disconnected``.
    Result: ``{"count"}``."""

    user: str
    session: str | None = None
    type = "disconnect"


@dataclass(frozen=True, slots=True)
class UnsubscribeUser:
    """Take the user's sockets out of ``channel`` (``unsubscribed`` with ``reason: server``).
    Result: ``{"count"}``."""

    user: str
    channel: str
    type = "unsubscribe"


@dataclass(frozen=True, slots=True)
class SubscribeUser:
    """Subscribe the user's sockets to ``channel`` (``subscribed`` with ``reason: server``).
    Result: ``{"count"}``."""

    user: str
    channel: str
    type = "subscribe"


@dataclass(frozen=True, slots=True)
class CountConnections:
    """Result: ``{"sessions": {sid: sockets}}``."""

    user: str
    type = "connections"


@dataclass(frozen=True, slots=True)
class ListChannels:
    """The first ``limit`` channels after ``after`` (in name order) that start with ``prefix``.
    Result: ``{"channels": [[name, sockets], ...]}``."""

    prefix: str
    after: str
    limit: int
    type = "channels"


Command = DisconnectUser | UnsubscribeUser | SubscribeUser | CountConnections | ListChannels
_TYPES: dict[str, type[Command]] = {
    kind.type: kind
    for kind in (DisconnectUser, UnsubscribeUser, SubscribeUser, CountConnections, ListChannels)
}


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    reply_to: str
    command: Command


@dataclass(frozen=True, slots=True)
class Reply:
    id: str
    replica: str
    result: dict[str, Any]


def encode_request(request: Request) -> str:
    command = {"type": request.command.type, **asdict(request.command)}
    return dumps({"id": request.id, "reply_to": request.reply_to, "command": command})


def decode_request(payload: str) -> Request:
    """Raises ``ValueError`` for anything but a well-formed request of a known command."""
    body = _object(payload, {"id": str, "reply_to": str, "command": dict})
    command = body["command"]
    name = command.pop("type", None)
    kind = _TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError("unknown command type")
    hints = {f.name: str(f.type) for f in fields(kind)}
    if set(command) != set(hints):
        raise ValueError(f"a {kind.type} command has exactly {sorted(hints)}")
    for name, value in command.items():
        if not _matches(value, hints[name]):
            raise ValueError(f"{name} must be {hints[name]}")
    return Request(body["id"], body["reply_to"], kind(**command))


def encode_reply(reply: Reply) -> str:
    return dumps({"id": reply.id, "replica": reply.replica, "result": reply.result})


def decode_reply(payload: str) -> Reply:
    body = _object(payload, {"id": str, "replica": str, "result": dict})
    return Reply(body["id"], body["replica"], body["result"])


def _matches(value: Any, hint: str) -> bool:
    """``value`` against a field's annotation: ``str``, ``int`` or ``str | None``."""
    if value is None:
        return "None" in hint
    if isinstance(value, bool):
        return False
    return isinstance(value, int if hint == "int" else str)


def _object(payload: str, shape: dict[str, type]) -> dict[str, Any]:
    try:
        body = loads(payload)
    except WireJSONError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(body, dict) or set(body) != set(shape):
        raise ValueError(f"expected exactly {sorted(shape)}")
    for name, kind in shape.items():
        if not isinstance(body[name], kind):
            raise ValueError(f"{name} must be a {kind.__name__}")
    return body
