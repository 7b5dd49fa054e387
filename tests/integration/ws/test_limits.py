"""Frame limits, rate limits, protocol violations, ping, Origin, shutdown."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, expect_close, expect_open, recv, send, wait_until
from tests.support.raw_ws import (
    CLOSE,
    CONTINUATION,
    PING,
    TEXT,
    RawWebSocket,
    client_frame,
    fragmented,
)
from ws_service.appkeys import GATEWAY, METRICS, SOCKETS


async def test_ping_gets_pong_with_the_id(gw: Harness) -> None:
    ws = await gw.login()
    await send(ws, {"type": "ping", "id": 41})
    assert await recv(ws) == {"type": "pong", "id": 41}
    await send(ws, {"type": "ping"})
    assert await recv(ws) == {"type": "pong"}


async def test_frame_over_max_message_bytes_closes_1009(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(max_message_bytes=20000)
    ws = await gw.login()
    await send(ws, {"type": "ping", "pad": "x" * 15000})
    assert (await recv(ws))["type"] == "pong"
    await send(ws, {"type": "ping", "pad": "x" * 20001})
    msg = await ws.receive(timeout=3)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1009)
    await wait_until(lambda: message_size_hits(gw) == 1)


async def test_a_frame_of_exactly_max_message_bytes_is_taken(make_gateway: MakeGateway) -> None:
    """WS_MAX_MESSAGE_BYTES is the largest frame taken (docs/protocol.md: 1009 for one *larger*),
    in bytes whatever the characters: aiohttp refuses a message of its ``max_msg_size`` and more,
    so a frame of exactly the limit was closed 1009, whose action is ``stop`` (an outside probe)."""
    gw = await make_gateway(max_message_bytes=20000)
    ws = await gw.login()
    envelope = len(json.dumps({"type": "ping", "id": 1, "pad": ""}))
    for char, size in (("x", 1), ("\u00e9", 2), ("\U0001f600", 4)):
        pad = char * ((20000 - envelope) // size) + "x" * ((20000 - envelope) % size)
        text = json.dumps({"type": "ping", "id": 1, "pad": pad}, ensure_ascii=False)
        assert len(text.encode()) == 20000
        await ws.send_str(text)
        assert await recv(ws) == {"type": "pong", "id": 1}
    over = json.dumps({"type": "ping", "id": 1, "pad": "x" * (20001 - envelope)})
    assert len(over) == 20001
    await ws.send_str(over)
    msg = await ws.receive(timeout=3)
    assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1009)


def message_size_hits(gw: Harness) -> float:
    """``ws_limit_hits_total{limit="message_size"}``: a message too big, in bytes or frames."""
    sample = gw.app[METRICS].registry.get_sample_value(
        "ws_limit_hits_total", {"limit": "message_size"}
    )
    return sample or 0.0


RawSocket = Callable[..., Awaitable[RawWebSocket]]


@pytest.fixture
async def raw_socket(gw: Harness) -> AsyncIterator[RawSocket]:
    """Opens sockets to ``gw`` that speak frames as written, closed at the end even when the test
    fails (one left open is a warning in a later test)."""
    opened: list[RawWebSocket] = []

    async def connect(early: bytes = b"") -> RawWebSocket:
        assert gw.client.server.port is not None
        raw = await RawWebSocket.connect("127.0.0.1", gw.client.server.port, early=early)
        opened.append(raw)
        return raw

    yield connect
    for raw in opened:
        raw.abort()


async def close_code(raw: RawWebSocket, within: float = 3) -> int:
    """The code of the server's close frame (the frames before it are dropped)."""
    async with asyncio.timeout(within):
        while True:
            opcode, payload = await raw.recv()
            if opcode == CLOSE:
                return int.from_bytes(payload[:2])


async def test_empty_continuation_frames_without_end_close_1009_before_auth(
    gw: Harness, raw_socket: RawSocket
) -> None:
    """An outside probe's flood: one unfinished text frame, then 6-byte empty continuations that
    neither complete nor grow the message, so no limit saw them and the loop read them at full
    speed until the auth timeout. Now the message's 129th frame closes the socket 1009."""
    raw = await raw_socket()
    raw.send(TEXT, b'{"type": "auth", ', fin=False)
    raw.writer.write(client_frame(CONTINUATION, b"", fin=False) * 10_000)
    assert await close_code(raw) == 1009
    assert await raw.eof_within(3)
    await wait_until(lambda: message_size_hits(gw) == 1)


async def test_a_message_may_come_in_up_to_128_frames(gw: Harness, raw_socket: RawSocket) -> None:
    raw = await raw_socket()
    auth = json.dumps({"type": "auth", "token": gw.tokens.make("bob")}).encode()
    third = len(auth) // 3
    raw.send(TEXT, auth[:third], fin=False)
    raw.send(CONTINUATION, auth[third : 2 * third], fin=False)
    raw.send(CONTINUATION, auth[2 * third :])
    assert json.loads((await raw.recv())[1])["type"] == "auth_success"
    raw.writer.write(fragmented(b'{"type": "ping", "id": 128}', 128))
    assert json.loads((await raw.recv())[1]) == {"type": "pong", "id": 128}
    raw.writer.write(fragmented(b'{"type": "ping", "id": 129}', 129))
    assert await close_code(raw) == 1009


async def test_frames_sent_with_the_upgrade_request_are_counted_too(raw_socket: RawSocket) -> None:
    """aiohttp feeds its reader what came behind the upgrade request as it installs it: the
    check stands in front of the reader from its first byte."""
    early = client_frame(TEXT, b"{", fin=False) + client_frame(CONTINUATION, b"", fin=False) * 200
    assert await close_code(await raw_socket(early)) == 1009


async def test_an_unmasked_frame_closes_1002_before_auth(
    gw: Harness, raw_socket: RawSocket
) -> None:
    """RFC 6455 section 5.1 (docs/protocol.md said so already): an outside probe ran a whole
    session unmasked, auth, ping, subscribe, publish and close."""
    raw = await raw_socket()
    auth = {"type": "auth", "token": gw.tokens.make("bob")}
    raw.send(TEXT, json.dumps(auth).encode(), masked=False)
    async with asyncio.timeout(3):
        opcode, payload = await raw.recv()
    assert (opcode, int.from_bytes(payload[:2])) == (CLOSE, 1002)  # no auth_success first
    assert await raw.eof_within(3)


async def test_an_unmasked_frame_closes_1002_after_auth(gw: Harness, raw_socket: RawSocket) -> None:
    raw = await raw_socket()
    raw.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("bob")}))
    assert json.loads((await raw.recv())[1])["type"] == "auth_success"
    raw.send(TEXT, b'{"type": "ping", "id": 1}', masked=False)
    async with asyncio.timeout(3):
        opcode, payload = await raw.recv()
    assert (opcode, int.from_bytes(payload[:2])) == (CLOSE, 1002)  # no pong first


async def test_binary_frame_after_auth_closes_4400(gw: Harness) -> None:
    ws = await gw.login()
    await ws.send_bytes(b"\x00\x01")
    await expect_close(ws, 4400, "bad_request")


async def test_repeated_protocol_violations_close_4400(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(max_violations=3)
    ws = await gw.login()
    for frame in ("not json", '"a string"', '{"type": "nope"}'):
        await ws.send_str(frame)
        reply = await recv(ws)
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", None)
    await expect_close(ws, 4400, "bad_request")


async def test_rate_limit_then_close_4429_when_it_persists(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(rate_per_second=0.5, rate_burst=3, rate_strikes=3)
    ws = await gw.login()
    for i in range(3):
        await send(ws, {"type": "ping", "id": i})
        assert await recv(ws) == {"type": "pong", "id": i}
    for _ in range(2):
        await send(ws, {"type": "ping", "id": "x"})
        assert await recv(ws) == {
            "type": "error",
            "code": "rate_limited",
            "message": "too many messages, slow down",
            "id": None,
        }
    await send(ws, {"type": "ping"})
    await expect_close(ws, 4429, "rate_limited")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("https://evil.example", False), ("https://app.example", True), (None, True)],
)
async def test_origin_is_checked_before_the_upgrade(
    make_gateway: MakeGateway, origin: str | None, allowed: bool
) -> None:
    gw = await make_gateway(allowed_origins=("https://app.example",))
    if allowed:
        ws = await gw.open(origin)
        await ws.close()
        return
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await gw.open(origin)
    assert err.value.status == 403
    response = await gw.client.get("/ws", headers={"Origin": origin or ""})
    assert response.status == 403
    assert await response.json() == {
        "error": "forbidden_origin",
        "error_description": "this Origin may not open a WebSocket: only the origins in"
        " WS_ALLOWED_ORIGINS may; a client outside a browser should send no Origin header",
    }


async def test_shutdown_closes_every_socket_1001(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    authed = await gw.login()
    pending = await gw.open()
    closing = asyncio.ensure_future(gw.client.server.close())
    for ws in (authed, pending):
        msg = await ws.receive(timeout=3)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1001, "going_away")
    await asyncio.wait_for(closing, 5)


async def test_metrics_count_connections_and_auth_outcomes(gw: Harness) -> None:
    await gw.login()
    ws = await gw.open()
    await ws.send_str(json.dumps({"type": "auth", "token": "nope"}))
    await recv(ws)
    await expect_close(ws, 4401, "invalid_token")
    await gw.open()
    response = await gw.client.get("/metrics")
    assert response.content_type == "text/plain"
    body = await response.text()
    assert 'ws_auth_total{outcome="ok"} 1.0' in body
    assert 'ws_auth_total{outcome="invalid_token"} 1.0' in body
    assert 'ws_connections{state="authenticated"} 1.0' in body
    assert 'ws_connections{state="awaiting_auth"} 1.0' in body
    assert 'ws_jwks_fetches_total{outcome="ok"} 1.0' in body
    await expect_open(await gw.login("bob"))
    body = await (await gw.client.get("/metrics")).text()
    assert "ws_messages_in_total 1.0" in body


async def test_a_bug_in_the_handler_closes_1011(
    gw: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = await gw.login()

    async def broken(*args: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(gw.app[GATEWAY].hub, "publish", broken)
    await send(ws, {"type": "publish", "channel": "chat:a", "data": 1})
    await expect_close(ws, 1011, "internal_error")


async def disconnects(gw: Harness) -> dict[tuple[str, str], float]:
    body = await (await gw.client.get("/metrics")).text()
    return {
        (sample.labels["by"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "ws_disconnects"
        for sample in family.samples
        if sample.name == "ws_disconnects_total"
    }


async def test_ended_sessions_are_counted_by_who_closed_first_and_code(
    gw: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closes that were only in the access line (a 1002 for a broken frame, a 1012
    ``missed_messages``) are counted too; a client's own close code beyond the standard and the
    gateway's ones is ``other``, so a client cannot grow the label set."""
    refused = await gw.open()
    await send(refused, {"type": "auth", "token": "nope"})
    assert (await recv(refused))["type"] == "auth_error"
    await expect_close(refused, 4401, "invalid_token")
    await (await gw.login("ann")).close()
    await (await gw.login("bob")).close(code=3001)
    assert gw.client.server.port is not None
    raw = await RawWebSocket.connect("127.0.0.1", gw.client.server.port)
    raw.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("cid")}))
    assert (await raw.recv())[0] == TEXT
    raw.send(TEXT, b"{}", masked=False)  # RFC 6455: a client's frame must be masked
    assert (await raw.recv())[0] == CLOSE
    raw.abort()
    lost = await RawWebSocket.connect("127.0.0.1", gw.client.server.port)
    lost.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("dee")}))
    assert (await lost.recv())[0] == TEXT
    lost.abort()

    async def broken(*args: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(gw.app[GATEWAY].hub, "publish", broken)
    faulty = await gw.login("eve")
    await send(faulty, {"type": "publish", "channel": "chat:a", "data": 1})
    await expect_close(faulty, 1011, "internal_error")
    expected = {
        ("server", "4401"): 1.0,
        ("client", "1000"): 1.0,
        ("client", "other"): 1.0,
        ("server", "1002"): 1.0,
        ("lost", "1006"): 1.0,
        ("server", "1011"): 1.0,
    }
    await wait_until(lambda: len(gw.app[SOCKETS]) == 0)
    assert await disconnects(gw) == expected


async def stalled_subscriber(gw: Harness) -> RawWebSocket:
    """bob's socket, subscribed to chat:a, that reads nothing more (a raw socket: nothing reads
    on its behalf)."""
    assert gw.client.server.port is not None
    stalled = await RawWebSocket.connect("127.0.0.1", gw.client.server.port)
    stalled.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("bob")}))
    assert (await stalled.recv())[0] == TEXT
    stalled.send_text(json.dumps({"type": "subscribe", "channel": "chat:a"}))
    assert (await stalled.recv())[0] == TEXT
    return stalled


def kernel_connection(local_port: int, remote_port: int) -> str | None:
    """The TCP state (hex, /proc/net/tcp) of the kernel's socket local_port -> remote_port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if (
            int(local.split(":")[1], 16) == local_port
            and int(remote.split(":")[1], 16) == remote_port
        ):
            return state
    return None


async def test_a_stalled_subscriber_is_dropped_by_outbox_bytes(make_gateway: MakeGateway) -> None:
    """A client that stops reading pins at most ``max_outbox_bytes`` of queued frames (plus the
    kernel's buffers), then is closed 1013 ``slow_consumer`` and counted."""
    gw = await make_gateway(max_outbox_bytes=256 * 1024)
    stalled = await stalled_subscriber(gw)
    payload = "x" * 60_000
    peers = tuple(gw.app[SOCKETS])
    for _ in range(500):
        response = await gw.client.post(
            "/v1/publish",
            json={"channel": "chat:a", "data": payload},
            headers={"Authorization": "Bearer test-api-key-0123456789"},
        )
        assert response.status == 202
        assert all(peer.queued_bytes <= 256 * 1024 for peer in peers)
        hits = gw.app[METRICS].registry.get_sample_value(
            "ws_limit_hits_total", {"limit": "outbox_bytes"}
        )
        if hits == 1:
            break
    else:
        raise AssertionError("the stalled subscriber was never dropped")
    body = await (await gw.client.get("/metrics")).text()
    assert 'ws_limit_hits_total{limit="outbox_bytes"} 1.0' in body
    stalled.abort()


async def test_frames_after_a_large_one_reach_a_slow_reader(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame written at once to an idle socket that then waited for a drain dropped that wait:
    aiohttp's one drain waiter stayed marked as awaited, and the writer task that awaited it next
    died ("await wasn't used with future", an error line per socket, and the frames it still
    held waited for the next one to be sent). Seen in the log of an outside probe."""
    gw = await make_gateway()
    assert gw.client.server.port is not None
    for n in range(3):
        response = await gw.client.post(
            "/v1/publish",
            json={"channel": "chat:a", "data": f"{n}" * 60_000},
            headers={"Authorization": "Bearer test-api-key-0123456789"},
        )
        assert response.status == 202
    slow = await RawWebSocket.connect("127.0.0.1", gw.client.server.port, slow=True)
    slow.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("bob")}))
    assert json.loads((await slow.recv())[1])["type"] == "auth_success"
    [peer] = gw.app[SOCKETS]
    assert peer.ws._req is not None and peer.ws._req.transport is not None
    server_side = peer.ws._req.transport.get_extra_info("socket")
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the kernel takes little
    # aiohttp waits for a drain once 256 KiB went out since the last wait: the first reply is
    # read at once, so the second, written at once to an idle socket, is the one that waits.
    slow.send_text(json.dumps({"type": "history", "channel": "chat:a", "id": 1}))
    assert json.loads((await slow.recv())[1])["id"] == 1
    for request_id in (2, 3, 4):
        slow.send_text(json.dumps({"type": "history", "channel": "chat:a", "id": request_id}))
        await asyncio.sleep(0.2)  # the replies back up: nothing reads them yet
    slow.send_text(json.dumps({"type": "ping", "id": 5}))
    async with asyncio.timeout(5):
        replies = [json.loads((await slow.recv())[1]) for _ in range(4)]
    assert [r["id"] for r in replies] == [2, 3, 4, 5]
    assert [r["type"] for r in replies] == ["history"] * 3 + ["pong"]
    slow.abort()
    gc.collect()  # a task that died unobserved is reported when it is collected
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def stuck_reader(gw: Harness) -> tuple[RawWebSocket, Any]:
    """bob's socket on chat:a, reading nothing, its server side with a small send buffer: the
    frames published to it soon wait in aiohttp's drain, for good."""
    assert gw.client.server.port is not None
    stalled = await RawWebSocket.connect("127.0.0.1", gw.client.server.port, slow=True)
    stalled.send_text(json.dumps({"type": "auth", "token": gw.tokens.make("bob")}))
    assert (await stalled.recv())[0] == TEXT
    stalled.send_text(json.dumps({"type": "subscribe", "channel": "chat:a"}))
    assert (await stalled.recv())[0] == TEXT
    [peer] = gw.app[SOCKETS]
    assert peer.ws._req is not None and peer.ws._req.transport is not None
    server_side = peer.ws._req.transport.get_extra_info("socket")
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return stalled, peer


async def publish_big(gw: Harness, count: int) -> None:
    for _ in range(count):
        response = await gw.client.post(
            "/v1/publish",
            json={"channel": "chat:a", "data": "x" * 60_000},
            headers={"Authorization": "Bearer test-api-key-0123456789"},
        )
        assert response.status == 202


async def test_a_stalled_reader_that_keeps_pinging_is_dropped_as_a_slow_consumer(
    make_gateway: MakeGateway,
) -> None:
    """Its 1013 waited behind a writer stuck in aiohttp's drain, and its pings (answered by
    aiohttp's ``pong``, which waits for the same drain) kept the heartbeat alive: the socket
    stayed open, authenticated and subscribed, for as long as it pinged (an outside probe)."""
    gw = await make_gateway(max_outbox_bytes=1024 * 1024, close_timeout=0.5)
    stalled, peer = await stuck_reader(gw)
    for n in range(60):
        await publish_big(gw, 1)
        if n % 8 == 0:  # within the control-frame and message budgets
            stalled.send(PING, b"still here")
            stalled.send_text(json.dumps({"type": "ping"}))
        await asyncio.sleep(0.02)
        if not gw.app[SOCKETS]:
            break
    await wait_until(lambda: not gw.app[SOCKETS], 3.0)
    assert peer.session_end(None, 0).close_code == 1013
    stalled.abort()


async def test_a_revoked_session_whose_reader_stalled_is_closed_within_the_close_timeout(
    make_gateway: MakeGateway,
) -> None:
    """A disconnect's (or a revocation's) close waited behind the same stuck writer, for good:
    the server API said ``disconnected: 1`` and the socket stayed open (an outside probe)."""
    gw = await make_gateway(max_outbox_bytes=64 * 1024 * 1024, close_timeout=0.5)
    stalled, peer = await stuck_reader(gw)
    await publish_big(gw, 20)  # far under the outbox bound: the writer waits, nothing overflows
    await asyncio.sleep(0.1)
    assert peer.queued_bytes > 0 and gw.app[SOCKETS]
    response = await gw.client.post(
        "/v1/disconnect",
        json={"user": "bob"},
        headers={"Authorization": "Bearer test-api-key-0123456789"},
    )
    assert (await response.json())["disconnected"] == 1
    await wait_until(lambda: not gw.app[SOCKETS], 2.0)
    stalled.abort()


async def test_a_dropped_stalled_subscriber_holds_nothing_once_its_handler_ends(
    make_gateway: MakeGateway,
) -> None:
    """The bytes written but never read count against the outbox too, and the 1013 does not
    wait for them: aiohttp's close waited without a bound for a drain that a peer that stopped
    reading never lets happen, and a graceful TCP close kept the connection and its buffer
    alive after the handler had released the user's slot."""
    gw = await make_gateway(max_outbox_bytes=256 * 1024, close_timeout=0.5)
    stalled = await stalled_subscriber(gw)
    [peer] = gw.app[SOCKETS]
    transport = peer.ws._req.transport if peer.ws._req else None
    assert transport is not None
    payload = "x" * 60_000
    for _ in range(500):
        await gw.client.post(
            "/v1/publish",
            json={"channel": "chat:a", "data": payload},
            headers={"Authorization": "Bearer test-api-key-0123456789"},
        )
        held = peer.queued_bytes + transport.get_write_buffer_size()
        assert held <= 256 * 1024 + 70_000, held
        if peer.close_requested or not gw.app[SOCKETS]:
            break
    await wait_until(lambda: not gw.app[SOCKETS], 3.0)
    assert transport.is_closing() and transport.get_write_buffer_size() == 0
    # Reset, not closed: a FIN would queue behind what the kernel holds, which a peer that never
    # reads keeps there (FIN-WAIT-1) for minutes.
    server_port = gw.client.server.port
    client_port = stalled.writer.get_extra_info("sockname")[1]
    assert server_port is not None
    await wait_until(lambda: kernel_connection(server_port, client_port) is None, 2.0)
    assert kernel_connection(server_port, client_port) is None
    stalled.abort()
