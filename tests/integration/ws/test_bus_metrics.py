"""/metrics says whether the bus reaches Redis: what the Redis alert in deploy/observability/
watches."""

from __future__ import annotations

from tests.integration.ws.conftest import MakeGateway
from tests.services import free_port


async def bus_gauge(make_gateway: MakeGateway, **settings: str) -> float:
    gateway = await make_gateway(**settings)
    text = await (await gateway.client.get("/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith("ws_event_bus_connected ")]
    return float(line.split()[1])


async def test_the_bus_gauge_follows_the_connection(make_gateway: MakeGateway) -> None:
    assert await bus_gauge(make_gateway) == 1
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    assert await bus_gauge(make_gateway, redis_url=unreachable) == 0
