"""A revocation the bus refuses is kept in the database and delivered once the bus is back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from auth_service.app import create_app
from auth_service.appkeys import PUBLISHER
from shared.bus import InProcessBus
from shared.events import REVOCATIONS_TOPIC, SessionRevoked, decode_event
from tests.integration.auth.conftest import AuthClient, login, register


class FlakyBus(InProcessBus):
    """A real in-process bus that can be switched off, as Redis is when it goes down."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, topic: str, payload: str) -> None:
        if self.down:
            raise ConnectionError("bus is down")
        await super().publish(topic, payload)


async def test_logout_while_the_bus_is_down_is_delivered_later(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
) -> None:
    bus = FlakyBus()
    seen: list[str] = []
    delivered = asyncio.Event()

    def on_event(topic: str, payload: str) -> None:
        seen.append(payload)
        delivered.set()

    bus.subscribe(REVOCATIONS_TOPIC, on_event)
    app = create_app(make_settings(), bus=bus)
    client = await aiohttp_client(app)
    await register(client)
    tokens = await login(client)
    bus.down = True
    resp = await client.post(
        "/v1/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 200, "logout succeeds even though the event could not be sent yet"
    ready = await (await client.get("/readyz")).json()
    assert ready["ready"] is True and "event_bus" in ready["degraded"]
    assert await app[PUBLISHER].flush() == 0
    assert seen == []
    bus.down = False
    await asyncio.wait_for(delivered.wait(), 5)
    (event,) = [decode_event(p) for p in seen]
    assert isinstance(event, SessionRevoked), "the outbox loop delivered it by itself, once"
    assert await app[PUBLISHER].flush() == 0
    assert (await (await client.get("/readyz")).json())["degraded"] == {}
