"""/metrics says whether the bus reaches Redis and whether events wait in the outbox: what the
alert rules in deploy/observability/ watch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from auth_service.app import create_app
from auth_service.appkeys import PUBLISHER
from shared.metrics.mirrored import MIRROR_INTERVAL
from tests.integration.auth.conftest import AuthClient, MakeClient, login, register
from tests.integration.auth.test_outbox import FlakyBus
from tests.services import free_port


async def gauge(client: AuthClient, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def until_gauge(client: AuthClient, name: str, value: float) -> None:
    """The gauge copies its state every MIRROR_INTERVAL, announced by nothing: poll /metrics."""
    for _ in range(100):
        if await gauge(client, name) == value:
            return
        await asyncio.sleep(MIRROR_INTERVAL / 20)
    raise AssertionError(f"{name} did not show {value} within 5 intervals")


async def test_events_waiting_in_the_outbox_show_until_the_bus_takes_them(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
) -> None:
    bus = FlakyBus()
    app = create_app(make_settings(), bus=bus)
    client = await aiohttp_client(app)
    await register(client)
    tokens = await login(client)
    assert await gauge(client, "auth_outbox_pending") == 0
    bus.down = True
    resp = await client.post(
        "/v1/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 200
    await until_gauge(client, "auth_outbox_pending", 1)
    bus.down = False
    await app[PUBLISHER].flush()
    await until_gauge(client, "auth_outbox_pending", 0)


async def test_the_bus_gauge_follows_the_connection(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
    make_client: MakeClient,
) -> None:
    in_process = await make_client()
    assert await gauge(in_process, "auth_event_bus_connected") == 1
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    unreachable = await aiohttp_client(create_app(settings))
    assert await gauge(unreachable, "auth_event_bus_connected") == 0
