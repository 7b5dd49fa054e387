"""Hostile encodings on the socket and on ``/v1/publish``: each gets its documented error, never a
1011 or a 500, and no subscriber ever receives anything a browser's ``JSON.parse`` refuses."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp import WSMsgType

from realtime_gateway_protocol.wire_json import loads as strict_loads
from tests.integration.ws.harness import Harness, auth, expect_close, expect_open, recv, send

KEY = "test-api-key-0123456789"
SURROGATE_TOKEN = '{"type": "auth", "token": "eyJ\\ud800.x.y", "id": 1}'


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_lone_surrogate_token_is_invalid_token(
    gw: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ws = await gw.open()
    await ws.send_str(SURROGATE_TOKEN)
    reply = await recv(ws)
    assert (reply["type"], reply["code"], reply["id"]) == ("auth_error", "invalid_token", 1)
    await expect_close(ws, 4401, "invalid_token")
    no_errors_logged(caplog)


async def test_lone_surrogate_renewal_keeps_the_socket(
    gw: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ws = await gw.login()
    await ws.send_str(SURROGATE_TOKEN)
    reply = await recv(ws)
    assert (reply["type"], reply["code"]) == ("auth_error", "invalid_token")
    await expect_open(ws)
    no_errors_logged(caplog)


async def test_non_ascii_tokens_are_invalid_token(gw: Harness) -> None:
    token = gw.tokens.make("alice")
    ws = await gw.open()
    reply = await auth(ws, token[:-1] + "é")
    assert (reply["type"], reply["code"]) == ("auth_error", "invalid_token")


@pytest.mark.parametrize(
    "data",
    [
        "1e400",
        "-1e400",
        "9" * 400,
        "NaN",
        "Infinity",
        '"\\ud800"',
        '{"\\udfff": 1}',
        "[" * 40 + "]" * 40,
    ],
    ids=[
        "1e400",
        "-1e400",
        "integer-of-400-digits",
        "NaN",
        "Infinity",
        "surrogate",
        "surrogate-key",
        "deep",
    ],
)
async def test_publishing_what_browsers_cannot_parse_is_bad_request(
    gw: Harness, data: str, caplog: pytest.LogCaptureFixture
) -> None:
    listener = await gw.login("bob")
    await send(listener, {"type": "subscribe", "channel": "chat:a"})
    await recv(listener)
    ws = await gw.login()
    await ws.send_str('{"type": "publish", "channel": "chat:a", "id": 7, "data": ' + data + "}")
    reply = await recv(ws)
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", None)
    await expect_open(ws)
    await expect_open(listener)
    no_errors_logged(caplog)


@pytest.mark.parametrize("depth", [33, 500, 900, 5000])
async def test_deep_frames_are_bad_request_at_every_stage(gw: Harness, depth: int) -> None:
    frame = '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}"
    ws = await gw.login()
    await ws.send_str(frame)
    reply = await recv(ws)
    assert (reply["type"], reply["code"]) == ("error", "bad_request")
    assert "nested" in reply["message"]
    fresh = await gw.open()
    await fresh.send_str(frame)
    await expect_close(fresh, 4400, "bad_request")


async def test_every_frame_a_subscriber_gets_is_strict_json(gw: Harness) -> None:
    listener = await gw.login("bob")
    await send(listener, {"type": "subscribe", "channel": "chat:a"})
    await recv(listener)
    ws = await gw.login()
    for data in [1.5e308, -0.0, "é\u2028", {"a": [None, True, 1e-300]}, "\U0001f600"]:
        await send(ws, {"type": "publish", "channel": "chat:a", "data": data})
    seen = 0
    while seen < 5:
        msg = await listener.receive(timeout=3)
        assert msg.type is WSMsgType.TEXT
        assert msg.data.isascii()
        frame: dict[str, Any] = strict_loads(msg.data)
        seen += frame["type"] == "message"


@pytest.mark.parametrize(
    "body",
    [
        b'{"channel": "chat:a", "data": 1e400}',
        b'{"channel": "chat:a", "data": -' + b"9" * 400 + b"}",
        b'{"channel": "chat:a", "data": NaN}',
        b'{"channel": "chat:a", "data": "\\ud800"}',
        b'{"channel": "chat:a", "data": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"channel": "chat:a", "data": "\xff"}',
    ],
    ids=[
        "1e400",
        "integer-of-400-digits",
        "NaN",
        "surrogate",
        "near-recursion-limit",
        "invalid-utf8",
    ],
)
async def test_publish_api_refuses_what_browsers_cannot_parse(gw: Harness, body: bytes) -> None:
    listener = await gw.login("bob")
    await send(listener, {"type": "subscribe", "channel": "chat:a"})
    await recv(listener)
    response = await gw.client.post(
        "/v1/publish",
        data=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["error"] == "bad_request"
    await expect_open(listener)


async def test_bearer_subprotocol_with_non_ascii_is_refused(gw: Harness) -> None:
    token = gw.tokens.make("alice")
    response = await gw.client.get(
        "/ws",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": f"realtime.v1, realtime.bearer.{token}é",
        },
    )
    assert response.status == 401
    assert json.loads(await response.text())["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("frame", "echoed"),
    [
        ('{"type": 1, "id": 5}', 5),
        ('{"type": null, "id": "a"}', "a"),
        ('{"id": 6}', 6),
        ('{"type": "bogus", "id": 7}', 7),
        ('{"type": 1, "id": 1.5}', None),  # no valid id to echo
    ],
)
async def test_an_error_frame_echoes_a_valid_id_whatever_else_is_wrong(
    gw: Harness, frame: str, echoed: object
) -> None:
    """``id: null`` only when the frame had no valid one: a ``type`` that is not a string lost
    the ``id`` beside it, where an unknown ``type`` kept it (an outside probe)."""
    ws = await gw.login()
    await ws.send_str(frame)
    reply = await recv(ws)
    assert (reply["type"], reply["code"], reply["id"]) == ("error", "bad_request", echoed)
