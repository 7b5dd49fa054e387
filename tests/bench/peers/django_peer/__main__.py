"""Goal 9 peer: Django Channels on uvicorn, a consumer that verifies the in-band RS256 token.

``python -m tests.bench.peers.django_peer PORT PUBLIC_KEY_PEM ISSUER``. Settings are configured in
code (no project on disk); the channel layer is off, as the handshake needs none. uvicorn keeps its
defaults (uvloop, httptools, the websockets implementation), as a Channels deployment would.
``BENCH_GC=tuned`` is the GC variant, as on the bare aiohttp server.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import django  # type: ignore[import-untyped]
import jwt
import uvicorn
from django.conf import settings  # type: ignore[import-untyped]

REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "sid"]


def build(public_key: bytes, issuer: str) -> Any:
    settings.configure(
        DEBUG=False, ALLOWED_HOSTS=["*"], INSTALLED_APPS=["channels"], USE_TZ=True,
        SECRET_KEY="bench-only-not-a-secret", CHANNEL_LAYERS={},
    )  # fmt: skip
    django.setup()
    from channels.generic.websocket import AsyncWebsocketConsumer  # type: ignore[import-untyped]
    from channels.routing import ProtocolTypeRouter, URLRouter  # type: ignore[import-untyped]
    from django.urls import path  # type: ignore[import-untyped]

    live: set[Any] = set()

    class JwtConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
        """Accept, then authenticate on the first frame the way ws_service does."""

        user: str | None = None

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            frame = json.loads(text_data or "{}")
            if self.user is None and frame.get("type") != "auth":
                await self.close(4401)
                return
            try:
                claims = jwt.decode(
                    frame["token"], public_key, algorithms=["RS256"], audience="ws",
                    issuer=issuer, options={"require": REQUIRED},
                )  # fmt: skip
            except (jwt.PyJWTError, KeyError):
                await self.send('{"type":"auth_error","code":"invalid_token"}')
                await self.close(4401)
                return
            self.user = claims["sub"]
            live.add(self)
            reply = {
                "type": "auth_success",
                "user": {"id": claims["sub"]},
                "session": claims["sid"],
            }
            await self.send(json.dumps(reply))

        async def disconnect(self, code: int) -> None:
            live.discard(self)

    async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /push`` sends one frame to every authenticated consumer (the same loop as the
        bare server's; a channel-layer group_send would add a hop); anything else is ready."""
        if scope["method"] == "POST" and scope["path"] == "/push":
            body, more = b"", True
            while more:
                event = await receive()
                body, more = body + event.get("body", b""), event.get("more_body", False)
            request = json.loads(body)
            frame = json.dumps({"type": "message", "channel": request["channel"],
                                "data": request["data"], "from": None, "ts": int(time.time() * 1000)})  # fmt: skip
            for consumer in list(live):
                await consumer.send(frame)
            status, reply = 202, b'{"published":true}'
        else:
            status, reply = 200, b'{"ready":true}'
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": reply})

    return ProtocolTypeRouter(
        {"http": http, "websocket": URLRouter([path("ws", JwtConsumer.as_asgi())])}
    )


if __name__ == "__main__":
    port, key_path, issuer = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    application = build(key_path.read_bytes(), issuer)
    if os.environ.get("BENCH_GC") == "tuned":
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
    uvicorn.run(
        application, host="127.0.0.1", port=port, backlog=1024, log_level="warning",
        access_log=False, lifespan="off",
    )  # fmt: skip
