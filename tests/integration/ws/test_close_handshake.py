"""RFC 6455 closing handshake: when the server closes (logout, shutdown), it waits for the
client's close frame before closing TCP, so every client library reads the documented code.

Without it, the server's TCP close races the client's in-flight frames: the server's kernel
answers them with a reset that discards the unread close frame, and the client sees 1006.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

from aiohttp import WSMsgType

from realtime_gateway_protocol.events import REVOCATIONS_TOPIC, UserRevoked, encode_event
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness
from tests.support.raw_ws import CLOSE, TEXT, RawWebSocket

SOCKETS = 60


async def chatty_client(ws: Any) -> int | None:
    """Keeps frames in flight (as a busy client does) until the server closes; the close code."""

    async def talk() -> None:
        while not ws.closed:
            await ws.send_str('{"type": "ping"}')
            await asyncio.sleep(0.001)

    talker = asyncio.ensure_future(talk())
    try:
        async for msg in ws:
            assert msg.type is WSMsgType.TEXT
    finally:
        talker.cancel()
        await asyncio.gather(talker, return_exceptions=True)
    code: int | None = ws.close_code
    return code


async def revoke_all(gw: Harness, users: list[str]) -> None:
    now = int(time.time())
    for user in users:
        event = UserRevoked(sub=user, issued_before=now + 1, until=now + 60)
        await gw.bus.publish(REVOCATIONS_TOPIC, encode_event(event))


async def test_every_client_reads_4403_after_a_logout_under_load(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(rate_per_second=10**6, rate_burst=10**6)
    users = [f"user{i}" for i in range(SOCKETS)]
    sockets = [await gw.login(user) for user in users]
    clients = [asyncio.ensure_future(chatty_client(ws)) for ws in sockets]
    await asyncio.sleep(0.1)
    await revoke_all(gw, users)
    codes = await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert codes == [4403] * SOCKETS


async def test_every_client_reads_1001_at_shutdown_under_load(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(rate_per_second=10**6, rate_burst=10**6)
    sockets = [await gw.login(f"user{i}") for i in range(SOCKETS)]
    clients = [asyncio.ensure_future(chatty_client(ws)) for ws in sockets]
    await asyncio.sleep(0.1)
    await gw.client.server.close()
    codes = await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert codes == [1001] * SOCKETS


async def test_the_server_waits_for_the_clients_close_frame(make_gateway: MakeGateway) -> None:
    """After its close frame the server keeps TCP open until ours arrives (not at once)."""
    gw = await make_gateway(close_timeout=5.0)
    assert gw.client.server.port is not None
    raw = await RawWebSocket.connect("127.0.0.1", gw.client.server.port)
    raw.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("alice")}))
    assert (await raw.recv())[0] == TEXT
    await revoke_all(gw, ["alice"])
    assert await raw.recv() == (TEXT, b'{"type":"revoked","reason":"user_revoked"}')
    assert await raw.recv() == (CLOSE, struct.pack("!H", 4403) + b"session_revoked")
    assert not await raw.eof_within(0.3), "the server dropped TCP before our close frame"
    raw.send_close(4403)
    assert await raw.eof_within(2)
    raw.abort()


async def test_a_silent_client_is_dropped_after_the_close_timeout(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(close_timeout=0.5)
    assert gw.client.server.port is not None
    raw = await RawWebSocket.connect("127.0.0.1", gw.client.server.port)
    raw.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("alice")}))
    await raw.recv()
    await revoke_all(gw, ["alice"])
    started = time.monotonic()
    assert await raw.eof_within(3)
    assert 0.4 < time.monotonic() - started < 2.5
    raw.abort()
