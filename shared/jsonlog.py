"""Structured JSON logs. Audit events go through :func:`audit`; callers never pass secrets.

Every line carries the ``request_id`` of the request being served, when there is one: the HTTP
layer sets :data:`REQUEST_ID` in the request's own task (``shared.http.access``), so an audit line
of a login, or of anything a WebSocket does on its handler's task, names the request it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import orjson

from realtime_gateway_protocol.wire_json import without_lone_surrogates

__all__ = [
    "REDACTED",
    "REQUEST_ID",
    "JsonFormatter",
    "Throttled",
    "audit",
    "configure_logging",
    "fingerprint",
    "info",
]

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_audit_log = logging.getLogger("audit")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}")
"""A JWT (an access token, a ticket) or the start of one: base64url JSON, ``{"`` first."""
_JWT_START = "eyJ"
"""What every match of ``_JWT`` contains: a line without it is left as it is, unscanned."""
REDACTED = "[redacted-jwt]"
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s\"\\/?#@]*:[^\s\"\\/?#]*@")
"""A URL's ``user:password@``, wherever a caller or a library put the URL (a message, an extra,
an exception's text): its password never reaches the log."""
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))
_FAST = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
"""Dataclasses and datetimes go to ``default=str`` as they do with the standard encoder."""
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_installed: list[logging.StreamHandler[Any]] = []
"""The handler :func:`configure_logging` installed on the root logger: :func:`info` writes to its
stream directly while it is the only way out of the loggers it serves."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field.

    The root handler formats every logger's records, a library's too, so a JWT anywhere in the
    line (message, arguments, extras, traceback) is redacted here: no caller, ours or not, can
    put a token or ticket in the log."""

    def format(self, record: logging.LogRecord) -> str:
        entry = _head(record.created, record.levelname.lower(), record.name, record.getMessage())
        entry.update(
            {
                key: value
                for key, value in vars(record).items()
                if key not in _STANDARD_ATTRS and key[0] != "_"
            }
        )
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry)


def _head(created: float, level: str, logger: str, message: str) -> dict[str, Any]:
    """What every line starts with: time, level, logger, message, and the request id if any."""
    entry: dict[str, Any] = {
        "ts": round(created, 3),
        "level": level,
        "logger": logger,
        "msg": message,
    }
    request_id = REQUEST_ID.get()
    if request_id is not None:
        entry["request_id"] = request_id
    return entry


def _encode(entry: dict[str, Any]) -> str:
    line = _dump(entry)
    if _JWT_START in line:
        line = _JWT.sub(REDACTED, line)
    if "@" in line and "://" in line:
        line = _USERINFO.sub(r"\1***@", line)
    return line


def _dump(entry: dict[str, Any]) -> str:
    """The standard encoder's line (ASCII only, ``default=str``), written by orjson, about ten
    times faster, whenever the two say the same thing: a line with a non-ASCII character (the
    standard encoder escapes it), a lone surrogate, an integer beyond 64 bits or a key that is not
    a string is left to the standard encoder, and a lone surrogate it escapes is written as U+FFFD
    (a header's undecodable byte, copied into an audit line, would make the line one that a strict
    reader refuses). Where they differ, orjson's is kept: a number's
    spelling (``1e-05`` against ``0.00001``, the same number), an enum member as its value
    rather than ``Class.NAME``, and ``null`` for NaN or infinity (the standard encoder writes
    ``NaN``, which no JSON parser reads)."""
    try:
        raw = orjson.dumps(entry, default=str, option=_FAST)
    except TypeError:
        return without_lone_surrogates(_ENCODER.encode(entry))
    return raw.decode("ascii") if raw.isascii() else without_lone_surrogates(_ENCODER.encode(entry))


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for every logger, Python's warnings and an uncaught exception too:
    nothing a process writes is plain text a log shipper cannot parse."""
    _skip_what_no_line_shows()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _installed[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _skip_what_no_line_shows() -> None:
    """A record's caller (file, line, function), thread and process names are attributes the
    formatter leaves out: the logging HOWTO's "Optimization" switches stop collecting them, a
    third of what a line cost."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _log_uncaught(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger().critical("uncaught exception", exc_info=(kind, value, traceback))


def audit(event: str, **fields: Any) -> None:
    """Log one security event. Fields must never contain a token, password or key."""
    if _audit_log.isEnabledFor(logging.INFO):
        info(_audit_log, event, {"event": event, "event_time": int(time.time()), **fields})


def info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """``logger.info(message, extra=fields)`` for the lines every request writes (its access
    line, an audit event): the same JSON line, redacted alike, written straight to the stream of
    the handler :func:`configure_logging` installed while nothing else would see the record (no
    handler or filter of the logger's own, none added to the root since). Building a
    ``LogRecord`` and walking the handlers cost about half of such a line; anything attached
    later (a test's capture, an operator's handler) gets the record through ``logging`` again."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _direct_handler(logger)
    if handler is None:
        logger.info(message, extra=fields)
        return
    entry = _head(time.time(), "info", logger.name, message)
    entry.update(fields)
    try:
        line = _encode(entry) + handler.terminator
        with handler.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            handler.stream.write(line)
            handler.stream.flush()
    except Exception:  # as StreamHandler.emit would: the logging module reports it
        logger.info(message, extra=fields)


def _direct_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The installed handler when it alone would handle an INFO record of ``logger``, a direct
    child of the root, and nothing would filter it."""
    if not _installed:
        return None
    handler = _installed[0]
    root = logger.parent
    if (
        logger.handlers
        or logger.filters
        or not logger.propagate
        or root is None
        or root.parent is not None
        or root.filters
        or len(root.handlers) != 1
        or root.handlers[0] is not handler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) is not JsonFormatter
    ):
        return None
    return handler


def fingerprint(text: str) -> str:
    """A short hash of something a user typed that may be secret (an unknown "username" can be a
    password typed into the wrong field): equal inputs correlate, the text is never logged."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Throttled:
    """A warning that every request may meet while a dependency is down (the ledger, the slots,
    presence): logged at most once per ``interval`` seconds, saying how many were left out
    (``suppressed``) since the last line. Ten thousand reconnecting clients during a Redis outage
    make one line every ``interval``, not ten thousand lines in the outage's first seconds."""

    __slots__ = ("_clock", "_interval", "_logger", "_message", "_next", "_suppressed")

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def warning(self, **fields: Any) -> None:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            fields["suppressed"] = self._suppressed
        self._logger.warning(self._message, extra=fields)
        self._next = now + self._interval
        self._suppressed = 0
