"""Each service serves its own OpenAPI document at ``/openapi.json``: the ``openapi.json`` beside
its code (package data), so a deployed replica describes the API it runs, and a generator pointed
at a service gets that service's operations and no other's."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["openapi_route"]


def openapi_route(document: Path) -> web.RouteDef:
    """Read once, when the app is built: the document is part of the code it describes."""
    body = document.read_bytes()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return web.get("/openapi.json", openapi)
