"""How both services write an HTTP body: JSON through the strict wire codec (ASCII, with a final
newline, so that ``curl`` output never runs into the shell prompt), and the one error shape,
``{"error", "error_description"}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from realtime_gateway_protocol.wire_json import dumps

__all__ = ["HTTP_ERROR_CODES", "http_exception_json", "json_error", "json_response"]


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(body) + "\n",
        status=status,
        headers=headers,
        content_type="application/json",
    )


_KEPT_HEADERS = frozenset({"allow", "retry-after"})


def json_error(
    status: int, code: str, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(
        {"error": code, "error_description": description},
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


HTTP_ERROR_CODES: Mapping[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
}
"""The ``error`` of aiohttp's own refusals, one table for both services: a client that handles a
too-large body from one handles it from the other."""


def http_exception_json(exc: web.HTTPException, fallback: str | None = None) -> web.Response:
    """aiohttp's own refusals (404, 405, 413...) as JSON, keeping the headers a client acts on;
    a status outside :data:`HTTP_ERROR_CODES` gets ``fallback``, or else a code from its reason
    ("Upgrade Required": ``upgrade_required``)."""
    code = HTTP_ERROR_CODES.get(exc.status) or fallback or exc.reason.lower().replace(" ", "_")
    kept = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
    return json_error(exc.status, code, exc.reason, kept)
