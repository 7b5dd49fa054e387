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

import pytest
from aiohttp import WSMsgType

from realtime_gateway_protocol.events import REVOCATIONS_TOPIC, UserRevoked, encode_event
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, wait_until
from tests.support.logs import json_lines
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


@pytest.mark.parametrize(
    ("code", "answer", "logged"),
    [
        (1006, 1002, (1002, "Invalid close code: 1006")),
        (1005, 1002, (1002, "Invalid close code: 1005")),
        (1015, 1002, (1002, "Invalid close code: 1015")),
        (5000, 1002, (1002, "Invalid close code: 5000")),
        (65535, 1002, (1002, "Invalid close code: 65535")),
        (1000, 1000, (1000, "network blip")),
        (4999, 1000, (4999, "network blip")),
    ],
)
async def test_a_close_code_no_endpoint_may_send_fails_the_connection_with_1002(
    gw: Harness, code: int, answer: int, logged: tuple[int, str]
) -> None:
    """RFC 6455 section 7.4.1: 1005, 1006 and 1015 never travel in a close frame (1006 names a
    connection dropped without one), and section 7.4.2 defines no code from 5000. The server
    fails the connection with 1002 at once, and the session's access line is that protocol error,
    not the client's claim that it dropped (nor the 1006 its reset afterwards would read as). A
    valid code is answered 1000 at once."""
    assert gw.client.server.port is not None
    with json_lines() as logs:
        raw = await RawWebSocket.connect("127.0.0.1", gw.client.server.port)
        raw.send(CLOSE, struct.pack("!H", code) + b"network blip")
        assert await raw.recv() == (CLOSE, struct.pack("!H", answer))
        assert await raw.eof_within(2)
        raw.abort()
        await wait_until(lambda: logs.logged("access"))
    (line,) = logs.logged("access", "websocket session")
    assert (line["close_code"], line["close_reason"]) == logged
