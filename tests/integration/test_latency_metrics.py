"""/metrics of both services: the default process and Python collectors, and the latency
histograms of a login, a refresh grant, a WebSocket handshake and a message's way from publish to
delivery, each counted once per event."""

from __future__ import annotations

from tests.integration.stack import MakeStack
from tests.integration.ws.harness import recv, send


async def test_latencies_and_the_process_are_on_metrics(make_stack: MakeStack) -> None:
    stack = await make_stack()
    await stack.register("alice")
    tokens = await stack.login("alice")
    status, _ = await stack.refresh(tokens["refresh_token"])
    assert status == 200
    status, _ = await stack.refresh(tokens["refresh_token"])  # reused: refused
    assert status == 400
    ws, _ = await stack.connect(tokens["access_token"])
    await send(ws, {"type": "subscribe", "channel": "chat:a", "id": 1})
    assert (await recv(ws))["type"] == "subscribed"
    await send(ws, {"type": "publish", "channel": "chat:a", "data": 1, "id": 2})
    kinds = {(await recv(ws))["type"], (await recv(ws))["type"]}
    assert kinds == {"published", "message"}

    count = "_count"
    assert stack.auth_count("auth_login_duration_seconds" + count, outcome="ok") == 1
    grant = "auth_token_grant_duration_seconds" + count
    assert stack.auth_count(grant, grant="refresh_token", outcome="ok") == 1
    assert stack.auth_count(grant, grant="refresh_token", outcome="invalid_grant") == 1
    assert stack.ws_count("ws_handshake_duration_seconds" + count) == 1
    assert stack.ws_count("ws_publish_to_deliver_seconds" + count) == 1
    for client in (stack.auth, stack.ws):
        text = await (await client.get("/metrics")).text()
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
            assert f"\n{name}" in text, name
