"""The bare aiohttp server every ws_service figure is divided by: ``python -m tests.bench.bare PORT``.

It does the least a gateway must: upgrade, answer each text frame with one reply, keep live sockets
in a set, and push one payload to all of them on ``POST /push``. Same uvloop and listen backlog as
the services, so a ratio measures the service's own work. ``BENCH_GC=tuned`` is the GC variant
(``gc.freeze()`` after start-up and a gen-0 threshold of 100k), measured only here and on the peers.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time

import uvloop
from aiohttp import web

from shared.http.serve import LISTEN_BACKLOG

SOCKETS = web.AppKey("sockets", set[web.WebSocketResponse])
REPLY = '{"type":"auth_success"}'


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=65536)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        async for _ in ws:
            await ws.send_str(REPLY)
    finally:
        sockets.discard(ws)
    return ws


async def push(request: web.Request) -> web.Response:
    """Send one message frame to every live socket, as a hub's local fan-out loop would."""
    body = await request.json()
    frame = json.dumps(
        {"type": "message", "channel": body["channel"], "data": body["data"], "from": None,
         "ts": int(time.time() * 1000)}
    )  # fmt: skip
    sockets: set[web.WebSocketResponse] = request.app[SOCKETS]
    for ws in list(sockets):
        await ws.send_str(frame)
    return web.json_response({"published": True}, status=202)


async def ok(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True})


async def ready(_: web.Request) -> web.Response:
    return web.json_response({"ready": True})


async def serve(port: int) -> None:
    app = web.Application()
    app[SOCKETS] = set()
    app.router.add_get("/ws", websocket)
    app.router.add_post("/push", push)
    app.router.add_post("/", ok)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=LISTEN_BACKLOG).start()
    if os.environ.get("BENCH_GC") == "tuned":
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(int(sys.argv[1])))
