"""Channels: permissions, fan-out (also across replicas sharing a bus), and their errors."""

from __future__ import annotations

import time

import pytest

from shared.bus import InProcessBus
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, expect_open, recv, send


async def subscribe(ws: object, channel: str) -> dict[str, object]:
    await send(ws, {"type": "subscribe", "channel": channel, "id": channel})
    return await recv(ws)


async def test_publish_reaches_every_subscriber_attributed_by_the_server(gw: Harness) -> None:
    alice = await gw.login("alice", scope="chat:read")
    carol = await gw.login("carol", scope="chat:read")
    bob = await gw.login("bob", scope="chat:write")
    for ws in (alice, carol):
        reply = await subscribe(ws, "chat:general")
        assert reply == {
            "type": "subscribed",
            "channel": "chat:general",
            "id": "chat:general",
            "position": {"offset": 0, "epoch": reply["position"]["epoch"]},  # type: ignore[index]
        }
    before = int(time.time() * 1000)
    await send(
        bob,
        {
            "type": "publish",
            "channel": "chat:general",
            "data": {"t": "hi"},
            "from": "x",
            "from_username": "Mallory",
            "id": 9,
        },
    )
    assert await recv(bob) == {"type": "published", "channel": "chat:general", "id": 9}
    for ws in (alice, carol):
        message = await recv(ws)
        assert message == {
            "type": "message",
            "channel": "chat:general",
            "data": {"t": "hi"},
            "from": "bob",
            "from_username": "Bob",
            "ts": message["ts"],
            "offset": 1,
            "epoch": message["epoch"],
        }
        assert before <= message["ts"] <= int(time.time() * 1000)


async def test_publisher_without_a_username_is_sent_as_null(gw: Harness) -> None:
    alice = await gw.login("alice")
    await subscribe(alice, "chat:general")
    anonymous = await gw.login("svc", preferred_username=None)
    await send(anonymous, {"type": "publish", "channel": "chat:general", "data": 1})
    assert (await recv(anonymous))["type"] == "published"
    message = await recv(alice)
    assert (message["from"], message["from_username"]) == ("svc", None)


async def test_unsubscribed_socket_gets_nothing_more(gw: Harness) -> None:
    alice = await gw.login("alice")
    await subscribe(alice, "chat:a")
    await send(alice, {"type": "unsubscribe", "channel": "chat:a"})
    assert await recv(alice) == {"type": "unsubscribed", "channel": "chat:a"}
    await send(alice, {"type": "publish", "channel": "chat:a", "data": 1})
    assert (await recv(alice))["type"] == "published"
    await expect_open(alice)


async def test_replicas_sharing_a_bus_deliver_each_others_messages(
    make_gateway: MakeGateway,
) -> None:
    bus = InProcessBus()
    one = await make_gateway(bus=bus)
    two = await make_gateway(bus=bus)
    listener = await one.login("alice")
    await subscribe(listener, "chat:x")
    sender = await two.login("bob")
    await send(sender, {"type": "publish", "channel": "chat:x", "data": "across"})
    assert (await recv(listener))["data"] == "across"
    await send(listener, {"type": "unsubscribe", "channel": "chat:x"})
    await recv(listener)
    assert "chan:{chat:x}" not in bus._handlers


@pytest.mark.parametrize(
    ("scope", "frame", "code"),
    [
        ("", {"type": "subscribe", "channel": "chat:general"}, "forbidden"),
        ("chat:write", {"type": "subscribe", "channel": "chat:general"}, "forbidden"),
        ("chat:read", {"type": "publish", "channel": "chat:general", "data": 1}, "forbidden"),
        ("user:read user:write", {"type": "subscribe", "channel": "user:bob"}, "forbidden"),
        (
            "user:read user:write",
            {"type": "publish", "channel": "user:alice", "data": 1},
            "forbidden",
        ),
        ("user:write", {"type": "publish", "channel": "user:bob", "data": 1}, "forbidden"),
        ("chat:read", {"type": "subscribe", "channel": "general"}, "invalid_channel"),
        ("chat:read", {"type": "subscribe", "channel": "chat:gen eral"}, "invalid_channel"),
        ("chat:read", {"type": "subscribe", "channel": "chat:" + "a" * 124}, "invalid_channel"),
        ("chat:read", {"type": "subscribe", "channel": 5}, "invalid_channel"),
        ("chat:read", {"type": "unsubscribe", "channel": "chat:never"}, "not_subscribed"),
        ("chat:write", {"type": "publish", "channel": "chat:general"}, "bad_request"),
        ("chat:read", {"type": "dance"}, "bad_request"),
        ("chat:read", {"type": "ping", "id": True}, "bad_request"),
        ("chat:read", {"type": "ping", "id": 2**53}, "bad_request"),
        ("chat:read", {"type": "ping", "id": -(2**53)}, "bad_request"),
    ],
)
async def test_channel_errors_keep_the_socket_open(
    gw: Harness, scope: str, frame: dict[str, object], code: str
) -> None:
    ws = await gw.login("alice", scope=scope)
    await send(ws, {**frame, "id": "req"} if "id" not in frame else frame)
    reply = await recv(ws)
    assert (reply["type"], reply["code"]) == ("error", code)
    assert isinstance(reply["message"], str) and reply["message"]
    assert reply["id"] == ("req" if "id" not in frame else None)
    await expect_open(ws)


async def test_the_largest_ids_javascript_reads_exactly_are_echoed(gw: Harness) -> None:
    ws = await gw.login("alice", scope="chat:read")
    for request_id in (2**53 - 1, -(2**53 - 1), 0):
        await send(ws, {"type": "ping", "id": request_id})
        assert (await recv(ws)) == {"type": "pong", "id": request_id}


async def test_own_user_channel_needs_no_scope_and_longest_name_is_valid(gw: Harness) -> None:
    ws = await gw.login("alice", scope="")
    assert (await subscribe(ws, "user:alice"))["type"] == "subscribed"
    ws2 = await gw.login("bob", scope="chat:read")
    assert (await subscribe(ws2, "chat:" + "a" * 123))["type"] == "subscribed"


async def test_subscription_limit(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(max_subscriptions=2)
    ws = await gw.login("alice")
    assert (await subscribe(ws, "chat:1"))["type"] == "subscribed"
    assert (await subscribe(ws, "chat:2"))["type"] == "subscribed"
    assert (await subscribe(ws, "chat:2"))["type"] == "subscribed"
    assert await subscribe(ws, "chat:3") == {
        "type": "error",
        "code": "too_many_subscriptions",
        "message": "subscription limit reached",
        "id": "chat:3",
    }
