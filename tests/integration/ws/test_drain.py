"""The drain of a replica with peers (REDIS_URL): unready and refusing new sockets from the
first moment, then every socket closed 1012 ``draining``, spread over the window. Without peers
(the embedded stack) there is no drain: a stop closes at once with 1001."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType

from shared.http.serve import DRAIN
from tests.integration.ws.conftest import MakeGateway
from ws_service.appkeys import SOCKETS

pytestmark = pytest.mark.redis


async def test_a_draining_replica_is_unready_refuses_sockets_and_closes_its_own_spread(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gw = await make_gateway(redis_url=redis_url, drain_seconds=0.5)
    sockets = [await gw.login(f"user-{n}") for n in range(10)]
    drain = gw.app[DRAIN]

    drain.begin()
    ready = await gw.client.get("/readyz")
    assert ready.status == 503
    assert "draining" in (await ready.json())["checks"]
    refused = await gw.client.get("/ws")
    assert refused.status == 503
    assert (await refused.json())["error"] == "draining"
    assert refused.headers["Retry-After"] == "1"
    metrics = await (await gw.client.get("/metrics")).text()
    assert "ws_draining 1.0" in metrics

    loop = asyncio.get_running_loop()
    started = loop.time()
    running = asyncio.ensure_future(drain.run())
    closed_at = []
    for ws in sockets:
        message = await ws.receive(timeout=5)
        assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 1012, "draining")
        closed_at.append(loop.time() - started)
    await asyncio.wait_for(running, 5)
    assert not gw.app[SOCKETS]
    # The last of 10 closes falls in the last tenth of the window: never sooner.
    assert max(closed_at) >= 0.45, "the closes were not spread over the window"


async def test_without_peers_there_is_no_drain(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    assert DRAIN not in gw.app
