"""The one way both services write a JSON HTTP body: :func:`shared.wire_json.dumps` (strict, ASCII)
plus a final newline, so that ``curl`` output never runs into the shell prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from shared.wire_json import dumps

__all__ = ["json_response"]


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(body) + "\n",
        status=status,
        headers=headers,
        content_type="application/json",
    )
