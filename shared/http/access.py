"""The access log and the request id, added to an app by :func:`setup`.

One JSON line per request, logger ``access``, written when the handler returns: ``method``,
``path`` (never the query string: a ticket travels there), ``status``, ``duration_ms``, and the
``request_id``. A WebSocket's request returns when its socket closes, so its line is the session's
end and adds what the handler reported through :func:`websocket_closed`. No header is logged (no
token, cookie or ``Authorization`` can reach the line), and with the logger off nothing is timed.

The request id is the ``X-Request-ID`` a client or proxy sent when it is a safe token (it lands in
logs verbatim), else a new one; it is set in :data:`shared.jsonlog.REQUEST_ID` for every line the
request's task logs, and returned in the response's ``X-Request-ID``. aiohttp runs each request in
a task of its own with a copy of the context, so the value is never reset: it lasts until the
response is sent (a WebSocket's, its whole session) and goes with the task.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from aiohttp import web

from shared.jsonlog import REQUEST_ID

__all__ = ["REQUEST_ID_HEADER", "SessionEnd", "request_id", "setup", "websocket_closed"]

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_log = logging.getLogger("access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """How a WebSocket session ended, as its access line reports it. Frames are messages (text
    or binary), not pings, pongs or the close."""

    close_code: int | None
    close_reason: str
    frames_in: int
    frames_out: int


_SESSION_END = web.RequestKey("access_session_end", SessionEnd)


def request_id(offered: str | None) -> str:
    """The id a client or proxy offered when it is a safe token, else a new one."""
    if offered is not None and _SAFE_ID.fullmatch(offered):
        return offered
    return secrets.token_hex(8)


def websocket_closed(request: web.Request, end: SessionEnd) -> None:
    """Report how the request's WebSocket session ended, for its access line."""
    request[_SESSION_END] = end


@web.middleware
async def _access(request: web.Request, handler: Handler) -> web.StreamResponse:
    REQUEST_ID.set(request_id(request.headers.get(REQUEST_ID_HEADER)))
    if not _log.isEnabledFor(logging.INFO):
        return await handler(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        fields: dict[str, object] = {
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        end = request.get(_SESSION_END)
        if end is not None:
            fields.update(asdict(end))
        _log.info("websocket session" if end is not None else "request", extra=fields)


async def _echo_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    current = REQUEST_ID.get()
    if current is not None:
        response.headers[REQUEST_ID_HEADER] = current


def setup(app: web.Application) -> None:
    """Make the access middleware the outermost (it sees the status the others settle on) and
    return the request id on every response, a WebSocket's 101 and a streamed one included."""
    app.middlewares.insert(0, _access)
    app.on_response_prepare.append(_echo_request_id)
