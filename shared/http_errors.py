"""The one error shape both services answer HTTP with: ``{"error", "error_description"}``."""

from __future__ import annotations

from aiohttp import web

from shared.http_json import json_response

__all__ = ["http_exception_json", "json_error"]

_KEPT_HEADERS = frozenset({"allow", "retry-after"})


def json_error(
    status: int, code: str, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(
        {"error": code, "error_description": description},
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def http_exception_json(exc: web.HTTPException, code: str) -> web.Response:
    """aiohttp's own refusals (404, 405, 413...) as JSON, keeping the headers a client acts on."""
    kept = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
    return json_error(exc.status, code, exc.reason, kept)
