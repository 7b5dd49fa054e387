"""The demo page and the JavaScript client, mounted on auth_service's app by the embedded launcher
(auth_service itself stays an API; nginx serves the same files in the compose stack). The client
is served from its package folder, clients/js, the one copy a team installs too: the launcher runs
from a checkout (`make run`), never from an installed wheel.

The page is same-origin with auth_service, so its session cookie is first-party and SameSite=Strict
holds; the page's origin must be in the gateway's WS_ALLOWED_ORIGINS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from shared.http.responses import json_response

__all__ = ["CLIENT_DIR", "WEB_DIR", "content_security_policy", "mount", "origin_of"]

WEB_DIR = Path(__file__).parent / "web"
CLIENT_DIR = Path(__file__).parents[1] / "clients" / "js"
FILES = {
    "/": (WEB_DIR / "index.html", "text/html"),
    "/app.js": (WEB_DIR / "app.js", "text/javascript"),
    "/gateway-client.js": (CLIENT_DIR / "gateway-client.js", "text/javascript"),
    "/gateway-client.d.ts": (CLIENT_DIR / "gateway-client.d.ts", "application/typescript"),
    "/style.css": (WEB_DIR / "style.css", "text/css"),
    "/favicon.svg": (WEB_DIR / "favicon.svg", "image/svg+xml"),
}


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL; ws(s) URLs keep their scheme."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(ws_url: str) -> str:
    """No inline script or style, nothing from elsewhere but the gateway's socket."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {origin_of(ws_url)}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def mount(app: web.Application, ws_url: str) -> None:
    """Serve the page, its assets and ``/config.json`` (where the gateway is) on ``app``."""
    headers = {
        "Content-Security-Policy": content_security_policy(ws_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    def serve(file: Path, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            body = await asyncio.to_thread(file.read_bytes)
            return web.Response(body=body, content_type=content_type, headers=headers)

        return handler

    for path, (file, content_type) in FILES.items():
        app.router.add_get(path, serve(file, content_type))

    async def config(request: web.Request) -> web.Response:
        return json_response({"wsUrl": ws_url}, headers=headers)

    app.router.add_get("/config.json", config)
