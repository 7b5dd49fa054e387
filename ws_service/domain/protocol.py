"""The wire format: parsing client frames, building server frames, and the one mapping from errors
to closes (docs/protocol.md is the human version of this module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from realtime_gateway_protocol import wire_json
from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.close_codes import Disconnect
from ws_service.domain.errors import AuthError, BadRequest, GatewayError, RequestError
from ws_service.domain.history import HistoryPage

__all__ = [
    "Request",
    "auth_error",
    "auth_success",
    "disconnect_for",
    "encode",
    "error",
    "history",
    "message",
    "parse",
    "reply",
    "subscribed",
]


RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed client frame: its ``type``, optional ``id`` and the whole object."""

    type: str
    id: RequestId
    body: dict[str, Any]


_LENIENT = frozenset({"token"})
MAX_SAFE_ID = 2**53 - 1
"""The largest integer ``id`` echoed: JavaScript's ``Number.MAX_SAFE_INTEGER``. A browser reads a
larger one rounded, and could never match the reply to its request (RFC 7493 section 2.2)."""


def parse(text: str) -> Request:
    """Raise ``BadRequest`` for anything that is not a strict JSON object with a string ``type``.

    Strict means what every browser can read back (``realtime_gateway_protocol.wire_json``): finite numbers, bounded
    nesting, no lone surrogates. The one exception is ``token``, whose lone surrogates are left
    for the verifier to refuse as an invalid token, like any other bad token.
    """
    try:
        body = wire_json.loads(text, lenient=_LENIENT)
    except wire_json.WireJSONError as err:
        raise BadRequest(f"the frame is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise BadRequest("the frame must be a JSON object")
    kind = body.get("type")
    request_id = body.get("id")
    if request_id is not None and (
        isinstance(request_id, bool)
        or not isinstance(request_id, str | int)
        or (isinstance(request_id, int) and not -MAX_SAFE_ID <= request_id <= MAX_SAFE_ID)
    ):
        raise BadRequest(f"id must be a string or an integer within +-{MAX_SAFE_ID}")
    if not isinstance(kind, str):
        raise BadRequest("type must be a string", request_id=request_id)
    return Request(kind, request_id, body)


def disconnect_for(err: GatewayError) -> Disconnect:
    """The close for an error that ends the socket: its ``code`` is the row's reason."""
    row = Disconnect.for_reason(err.code)
    if row is None:
        raise LookupError(f"{err.code} does not close a socket")
    return row


def encode(frame: dict[str, Any]) -> str:
    """Strict, ASCII-only output (``realtime_gateway_protocol.wire_json``): what every client can parse."""
    return wire_json.dumps(frame)


def reply(kind: str, request_id: RequestId, **fields: Any) -> str:
    frame = {"type": kind, **fields}
    if request_id is not None:
        frame["id"] = request_id
    return encode(frame)


def auth_success(
    claims: Claims,
    now: float,
    request_id: RequestId,
    *,
    renewed: bool,
    limits: dict[str, Any] | None = None,
) -> str:
    """``limits`` (the first one only): the budget a client paces its frames by, so that
    re-subscribing many channels after a reconnect is not refused as a flood."""
    fields: dict[str, Any] = {
        "user": {"id": claims.sub, "username": claims.username},
        "session": claims.sid or None,
        "expires_in": max(0, claims.exp - int(now)),
        "expires_at": claims.exp,
    }
    if renewed:
        fields["renewed"] = True
    elif limits is not None:
        fields["limits"] = limits
    return reply("auth_success", request_id, **fields)


def auth_error(err: AuthError, request_id: RequestId, *, retry: bool) -> str:
    return reply("auth_error", request_id, code=err.code, message=err.message, retry=retry)


def error(err: RequestError, request_id: RequestId) -> str:
    return encode({"type": "error", "code": err.code, "message": err.message, "id": request_id})


def message(channel: str, data: Any, sender: Claims | None, ts_ms: int) -> str:
    """The broadcast frame, serialized once and sent as the same string to every subscriber.

    ``from`` and ``from_username`` come from the publisher's verified token, never from the client.
    """
    return encode(
        {
            "type": "message",
            "channel": channel,
            "data": data,
            "from": sender.sub if sender else None,
            "from_username": sender.username if sender else None,
            "ts": ts_ms,
        }
    )


_TS = ',"ts":'


def published_at(frame: str) -> float | None:
    """A ``message`` frame's ``ts`` in epoch seconds, read without decoding the frame (once per
    message and replica). ``ts`` is the last key :func:`message` writes, after ``data``, and only
    a position follows it, so the last ``,"ts":`` is the frame's own (a JSON string cannot hold
    an unescaped quote). None for any other frame."""
    start = frame.rfind(_TS)
    if start < 0:
        return None
    digits = frame[start + len(_TS) :]
    end = next((i for i, c in enumerate(digits) if not "0" <= c <= "9"), len(digits))
    return int(digits[:end]) / 1000 if end else None


def subscribed(
    channel: str,
    request_id: RequestId,
    page: HistoryPage | None,
    *,
    recovering: bool,
    reason: str | None = None,
) -> str:
    """``position`` in a channel with history; ``recovered`` and ``publications`` after ``since``;
    ``reason`` when the server subscribed the socket (never with ``since``)."""
    extra: dict[str, Any] = {} if reason is None else {"reason": reason}
    if page is None:
        if not recovering:
            return reply("subscribed", request_id, channel=channel, **extra)
        return _with_publications(
            reply("subscribed", request_id, channel=channel, recovered=False), []
        )
    if not recovering:
        return reply("subscribed", request_id, channel=channel, position=_position(page), **extra)
    fields = {"channel": channel, "position": _position(page), "recovered": page.recovered}
    return _with_publications(reply("subscribed", request_id, **fields), page.publications)


def history(channel: str, request_id: RequestId, page: HistoryPage, *, recovering: bool) -> str:
    fields: dict[str, Any] = {"channel": channel, "position": _position(page)}
    if recovering:
        fields["recovered"] = page.recovered
    return _with_publications(reply("history", request_id, **fields), page.publications)


def _position(page: HistoryPage) -> dict[str, Any]:
    return {"offset": page.position.offset, "epoch": page.position.epoch}


def _with_publications(frame: str, publications: list[str]) -> str:
    """Splice the already encoded ``message`` frames in: each is encoded once, when published."""
    return f'{frame[:-1]},"publications":[{",".join(publications)}]}}'
