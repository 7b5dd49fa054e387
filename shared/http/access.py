"""The access log and the request id, added to an app by :func:`setup`.

One JSON line per request, logger ``access``, written when the handler returns: ``method``,
``path`` (never the query string: a ticket travels there), ``status``, ``duration_ms``, and the
``request_id``. No header is logged (no token, cookie or ``Authorization`` can reach the line), and
with the logger off nothing is timed.

A WebSocket's request returns when its socket closes, so a middleware awaiting it would keep a
suspended frame (about 300 bytes) per socket for nothing. Its handler is marked
:func:`self_contained` and writes its own line through :class:`Line`, at the session's end with how
it ended (:class:`SessionEnd`); the middlewares hand such a request straight to it.

The request id is the ``X-Request-ID`` a client or proxy sent when it is a safe token (it lands in
logs verbatim), else a new one; it is set in :data:`shared.jsonlog.REQUEST_ID` for every line the
request's task logs, and returned in the response's ``X-Request-ID``. aiohttp runs each request in
a task of its own with a copy of the context, so the value is never reset: it lasts until the
response is sent (a WebSocket's, its whole session) and goes with the task.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from shared.jsonlog import REQUEST_ID, info

__all__ = [
    "REQUEST_ID_HEADER",
    "Line",
    "SessionEnd",
    "is_self_contained",
    "request_id",
    "self_contained",
    "setup",
]

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_log = logging.getLogger("access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
R = TypeVar("R", bound=web.StreamResponse)
_SELF_CONTAINED = "_access_self_contained"


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """How a WebSocket session ended, as its access line reports it. Frames are messages (text
    or binary), not pings, pongs or the close."""

    close_code: int | None
    close_reason: str
    frames_in: int
    frames_out: int
    closed_by: str = ""
    """``server``, ``client`` (its close frame came first) or ``lost`` (no close frame)."""


def request_id(offered: str | None) -> str:
    """The id a client or proxy offered when it is a safe token, else a new one."""
    if offered is not None and _SAFE_ID.fullmatch(offered):
        return offered
    # Unique, not secret (clients may send their own): 64 bits from the process's generator
    # (reseeded in each forked worker), without the system call ``secrets`` makes per id.
    return f"{random.getrandbits(64):016x}"


def self_contained(handler: H) -> H:
    """Mark a handler that writes its own access line (:class:`Line`) and answers its own
    refusals as JSON: the middlewares pass its request on without waiting for it."""
    setattr(handler, _SELF_CONTAINED, True)
    return handler


def is_self_contained(request: web.Request) -> bool:
    return getattr(request.match_info.handler, _SELF_CONTAINED, False) is True


class Line:
    """The access line of a :func:`self_contained` handler's request: ``answered`` notes the
    status of what it returns, ``end`` how its WebSocket session ended, and ``write`` logs it
    from the handler's ``finally`` (a handler that raised is logged as 500)."""

    __slots__ = ("_request", "_started", "end", "status")

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._started = time.perf_counter() if _log.isEnabledFor(logging.INFO) else None
        self.status = 500
        self.end: SessionEnd | None = None

    def answered(self, response: R) -> R:
        self.status = response.status
        return response

    def write(self) -> None:
        if self._started is None:
            return
        fields: dict[str, object] = {
            "method": self._request.method,
            "path": self._request.path,
            "status": self.status,
            "duration_ms": round((time.perf_counter() - self._started) * 1000, 1),
        }
        end = self.end
        if end is not None:  # field by field: dataclasses.asdict deep-copies, a tenth of the line
            fields["close_code"] = end.close_code
            fields["close_reason"] = end.close_reason
            fields["closed_by"] = end.closed_by
            fields["frames_in"] = end.frames_in
            fields["frames_out"] = end.frames_out
        info(_log, "websocket session" if end is not None else "request", fields)


@web.middleware
def _access(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Not a coroutine: a request it does not time goes on without a frame of this one."""
    REQUEST_ID.set(request_id(request.headers.get(REQUEST_ID_HEADER)))
    if not _log.isEnabledFor(logging.INFO) or is_self_contained(request):
        return handler(request)
    return _timed(request, handler)


async def _timed(request: web.Request, handler: Handler) -> web.StreamResponse:
    line = Line(request)
    try:
        return line.answered(await handler(request))
    except web.HTTPException as exc:
        line.status = exc.status
        raise
    finally:
        line.write()


async def _echo_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    current = REQUEST_ID.get()
    if current is not None:
        response.headers[REQUEST_ID_HEADER] = current


def setup(app: web.Application) -> None:
    """Make the access middleware the outermost (it sees the status the others settle on) and
    return the request id on every response, a WebSocket's 101 and a streamed one included."""
    app.middlewares.insert(0, _access)
    app.on_response_prepare.append(_echo_request_id)
