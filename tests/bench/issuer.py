"""The bench's JWKS endpoint: ``python -m tests.bench.issuer PORT KEY_DIR ISSUER``.

ws_service fetches its keys here (``WS_JWKS_URL``), so the bench mints tokens itself and counts
every key-set fetch (goals 7 and 8) without reading the service's metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

from tests.bench.tokens import BenchKey

FETCHES = web.AppKey("fetches", list[int])


def create_app(key: BenchKey) -> web.Application:
    app = web.Application()
    app[FETCHES] = [0]
    body = key.jwks()

    async def jwks(request: web.Request) -> web.Response:
        request.app[FETCHES][0] += 1
        return web.json_response(body, headers={"Cache-Control": "public, max-age=300"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"jwks_fetches": request.app[FETCHES][0]})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_get("/stats", stats)
    app.router.add_get("/readyz", ready)
    return app


if __name__ == "__main__":
    port, key_dir, issuer = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    web.run_app(create_app(BenchKey(key_dir, issuer)), host="127.0.0.1", port=port, print=None)
