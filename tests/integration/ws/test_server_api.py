"""The server API (disconnect, subscribe, unsubscribe, presence, channels, connections,
broadcast) through the real app: embedded on the in-process bus, and across two replicas on
Redis, where a call made to one replica acts on the sockets of the other."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from multidict import CIMultiDict
from redis.asyncio import Redis

from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, expect_close, expect_open, recv, send
from ws_service.api import CONTROL_BODY_BYTES
from ws_service.appkeys import GATEWAY
from ws_service.domain.commands import SubscribeUser

KEY = {"Authorization": "Bearer test-api-key-0123456789"}


def unique() -> str:
    return uuid.uuid4().hex[:12]


async def call(gw: Harness, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    response = await gw.client.request(method, path, headers=KEY, **kwargs)
    return response.status, await response.json()


async def subscribe(ws: Any, channel: str, **extra: Any) -> None:
    await send(ws, {"type": "subscribe", "channel": channel, **extra})
    reply = await recv(ws)
    assert (reply["type"], reply["channel"]) == ("subscribed", channel), reply


async def test_disconnect_closes_every_socket_of_the_user_with_4403_disconnected(
    gw: Harness,
) -> None:
    tabs = [await gw.login("alice"), await gw.login("alice")]
    bob = await gw.login("bob")
    status, body = await call(gw, "POST", "/v1/disconnect", json={"user": "alice"})
    assert (status, body) == (200, {"user": "alice", "disconnected": 2, "complete": True})
    for ws in tabs:
        await expect_close(ws, 4403, "disconnected")
    await expect_open(bob)


async def test_disconnect_of_one_session_leaves_the_others(gw: Harness) -> None:
    phone = await gw.login("alice", sid="phone")
    laptop = await gw.login("alice", sid="laptop")
    status, body = await call(
        gw, "POST", "/v1/disconnect", json={"user": "alice", "session": "phone"}
    )
    assert (status, body["disconnected"], body["session"]) == (200, 1, "phone")
    await expect_close(phone, 4403, "disconnected")
    await expect_open(laptop)


@pytest.mark.parametrize(
    ("method", "path", "body", "answer"),
    [
        ("POST", "/v1/disconnect", {"user": "nobody"}, {"disconnected": 0}),
        ("POST", "/v1/unsubscribe", {"user": "nobody", "channel": "chat:a"}, {"unsubscribed": 0}),
        ("POST", "/v1/subscribe", {"user": "nobody", "channel": "chat:a"}, {"subscribed": 0}),
        ("GET", "/v1/connections?user=nobody", None, {"connections": 0, "sessions": []}),
        ("GET", "/v1/presence?channel=chat:nobody", None, {"members": []}),
        ("GET", "/v1/channels?prefix=nothing:", None, {"channels": [], "cursor": None}),
    ],
)
async def test_unknown_users_and_channels_answer_200_with_nothing(
    gw: Harness, method: str, path: str, body: Any, answer: dict[str, Any]
) -> None:
    status, got = await call(gw, method, path, json=body)
    assert status == 200
    assert {key: got[key] for key in answer} == answer


async def test_unsubscribe_takes_the_users_sockets_out_of_the_channel(gw: Harness) -> None:
    channel = f"chat:{unique()}"
    alice, bob = await gw.login("alice"), await gw.login("bob")
    for ws in (alice, bob):
        await subscribe(ws, channel)
    status, body = await call(
        gw, "POST", "/v1/unsubscribe", json={"user": "alice", "channel": channel}
    )
    assert (status, body["unsubscribed"]) == (200, 1)
    assert await recv(alice) == {"type": "unsubscribed", "channel": channel, "reason": "server"}
    await call(gw, "POST", "/v1/publish", json={"channel": channel, "data": "after"})
    assert (await recv(bob))["data"] == "after"
    await expect_open(alice)  # the pong is the next frame: the message did not reach alice


async def test_subscribe_subscribes_the_users_sockets_without_asking_their_scopes(
    gw: Harness,
) -> None:
    channel = f"private:{unique()}"
    alice = await gw.login("alice")
    status, body = await call(
        gw, "POST", "/v1/subscribe", json={"user": "alice", "channel": channel}
    )
    assert (status, body["subscribed"]) == (200, 1)
    assert await recv(alice) == {"type": "subscribed", "channel": channel, "reason": "server"}
    await call(gw, "POST", "/v1/publish", json={"channel": channel, "data": "hi"})
    assert (await recv(alice))["data"] == "hi"
    _, again = await call(gw, "POST", "/v1/subscribe", json={"user": "alice", "channel": channel})
    assert again["subscribed"] == 0, "already subscribed"


async def test_subscribe_never_puts_a_user_on_another_users_inbox(gw: Harness) -> None:
    """``user:<sub>`` is readable by that user alone, whoever asks: a backend that passes on a
    channel its user chose must not leak another user's private messages (an outside probe
    subscribed alice to bob's inbox and read a message meant for him)."""
    alice = await gw.login("alice")
    status, body = await call(
        gw, "POST", "/v1/subscribe", json={"user": "alice", "channel": "user:bob"}
    )
    assert (status, body["error"]) == (403, "forbidden"), body
    await call(gw, "POST", "/v1/publish", json={"channel": "user:bob", "data": "reset link"})
    await expect_open(alice)  # the pong is the next frame: nothing reached alice
    status, body = await call(
        gw, "POST", "/v1/subscribe", json={"user": "alice", "channel": "user:alice"}
    )
    assert (status, body["subscribed"]) == (200, 1)
    # A replica never acts on such a command either, whoever put it on the control topic.
    bob = await gw.login("bob")
    assert await gw.app[GATEWAY].execute(SubscribeUser("bob", "user:alice")) == {"count": 0}
    assert await gw.app[GATEWAY].execute(SubscribeUser("bob", "user:bob")) == {"count": 1}
    assert (await recv(bob))["channel"] == "user:bob"


async def test_connections_counts_sockets_by_session(gw: Harness) -> None:
    for sid in ("a", "a", "b"):
        await gw.login("alice", sid=sid)
    status, body = await call(gw, "GET", "/v1/connections?user=alice")
    assert (status, body) == (
        200,
        {
            "user": "alice",
            "connections": 3,
            "sessions": [{"session": "a", "connections": 2}, {"session": "b", "connections": 1}],
            "complete": True,
        },
    )


async def test_channels_pages_with_a_cursor_and_filters_by_prefix(gw: Harness) -> None:
    prefix = f"chat:{unique()}-"
    names = [f"{prefix}{n}" for n in range(5)]
    alice, bob = await gw.login("alice"), await gw.login("bob")
    for name in names:
        await subscribe(alice, name)
    await subscribe(bob, names[0])
    await subscribe(bob, f"chat:{unique()}")
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = f"/v1/channels?prefix={prefix}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page = await call(gw, "GET", query)
        assert status == 200 and len(page["channels"]) <= 2
        seen += page["channels"]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == [{"channel": n, "subscribers": 2 if n == names[0] else 1} for n in names]


async def test_presence_lists_members_and_refuses_a_namespace_without_it(gw: Harness) -> None:
    channel = f"chat:{unique()}"
    await subscribe(await gw.login("alice"), channel)
    status, body = await call(gw, "GET", f"/v1/presence?channel={channel}")
    assert (status, body) == (
        200,
        {
            "channel": channel,
            "members": [{"user": {"id": "alice", "username": "Alice"}, "connections": 1}],
        },
    )
    status, body = await call(gw, "GET", "/v1/presence?channel=news:a")
    assert (status, body["error"]) == (400, "not_enabled")


async def test_broadcast_publishes_one_payload_to_each_channel(gw: Harness) -> None:
    channels = [f"chat:{unique()}" for _ in range(3)]
    alice = await gw.login("alice")
    for channel in channels:
        await subscribe(alice, channel)
    status, body = await call(
        gw, "POST", "/v1/broadcast", json={"channels": [*channels, channels[0]], "data": {"n": 1}}
    )
    assert (status, body) == (202, {"published": channels, "failed": []})
    got = [await recv(alice) for _ in channels]
    assert sorted(frame["channel"] for frame in got) == sorted(channels)
    assert all(frame["data"] == {"n": 1} and frame["from"] is None for frame in got)


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/disconnect", {}, "bad_request"),
        ("/v1/disconnect", {"user": ""}, "bad_request"),
        ("/v1/disconnect", {"user": 42}, "bad_request"),
        ("/v1/disconnect", {"user": "a", "extra": 1}, "bad_request"),
        ("/v1/disconnect", [1], "bad_request"),
        ("/v1/unsubscribe", {"user": "a", "channel": "no namespace"}, "invalid_channel"),
        ("/v1/subscribe", {"user": "a"}, "bad_request"),
        ("/v1/broadcast", {"channels": [], "data": 1}, "bad_request"),
        ("/v1/broadcast", {"channels": ["chat:a"] * 101, "data": 1}, "bad_request"),
        ("/v1/broadcast", {"channels": ["chat:a", "bad"], "data": 1}, "invalid_channel"),
        ("/v1/broadcast", {"channels": ["chat:a"]}, "bad_request"),
    ],
)
async def test_bad_bodies_get_400_with_their_code(
    gw: Harness, path: str, body: Any, code: str
) -> None:
    status, got = await call(gw, "POST", path, json=body)
    assert (status, got["error"]) == (400, code)


@pytest.mark.parametrize(
    "query",
    [
        "/v1/connections",
        "/v1/connections?user=a&user=b",
        "/v1/presence",
        "/v1/presence?channel=bad",
        "/v1/channels?limit=0",
        "/v1/channels?limit=1001",
        "/v1/channels?limit=99999999999999999999",
        "/v1/channels?prefix=a%20b",
        "/v1/channels?cursor=not-a-channel",
    ],
)
async def test_bad_queries_get_400(gw: Harness, query: str) -> None:
    status, body = await call(gw, "GET", query)
    assert status == 400, body


async def test_a_body_naming_a_member_twice_is_refused(gw: Harness) -> None:
    """``{"channel": "user:x", "channel": "chat:a"}`` published to ``chat:a``: a proxy or
    gateway in front that keeps the first name would have judged another channel."""
    body = b'{"channel": "user:alice", "channel": "chat:a", "data": 1}'
    headers = {**KEY, "Content-Type": "application/json"}
    response = await gw.client.post("/v1/publish", data=body, headers=headers)
    got = await response.json()
    assert (response.status, got["error"]) == (400, "bad_request")
    assert "names a member twice" in got["error_description"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/x-www-form-urlencoded",
    ],
)
async def test_a_body_that_is_not_utf8_json_is_refused_415(
    gw: Harness, content_type: str | None
) -> None:
    """Any Content-Type was read as UTF-8 JSON (``text/plain``, JSON labelled Latin-1: 202),
    where auth_service answers 415 (an outside probe). Nothing is published."""
    listener = await gw.login("alice")
    await send(listener, {"type": "subscribe", "channel": "chat:typed"})
    await recv(listener)
    headers = {**KEY, **({"Content-Type": content_type} if content_type else {})}
    body = b'{"channel": "chat:typed", "data": 1}'
    response = await gw.client.post("/v1/publish", data=body, headers=headers)
    got = await response.json()
    assert (response.status, got["error"]) == (415, "unsupported_media_type"), got
    await expect_open(listener)  # no message came first
    headers = {**KEY, "Content-Type": "application/json; charset=UTF-8"}
    response = await gw.client.post("/v1/publish", data=body, headers=headers)
    assert response.status == 202, await response.text()


@pytest.mark.parametrize(
    "query",
    [
        "/v1/connections?user=%ff",
        "/v1/connections?user=a%ed%a0%80",
        "/v1/presence?channel=chat:%c3",
        "/v1/channels?prefix=%80",
        "/v1/connections?user=a&other=%ff",
    ],
)
async def test_a_query_in_invalid_utf8_is_refused(gw: Harness, query: str) -> None:
    """It was read as U+FFFD (``?user=%ff`` answered 200 for the user ``\ufffd``) while a body
    in invalid UTF-8 was refused: both are now."""
    status, body = await call(gw, "GET", query)
    assert (status, body["error"], body["error_description"]) == (
        400,
        "bad_request",
        "the query is not valid UTF-8",
    )


async def test_control_bodies_are_bounded_in_bytes(gw: Harness) -> None:
    status, body = await call(
        gw, "POST", "/v1/disconnect", data=b'{"user": "' + b"a" * CONTROL_BODY_BYTES + b'"}'
    )
    assert (status, body["error"]) == (413, "request_too_large")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/disconnect"),
        ("POST", "/v1/subscribe"),
        ("POST", "/v1/unsubscribe"),
        ("POST", "/v1/broadcast"),
        ("GET", "/v1/presence?channel=chat:a"),
        ("GET", "/v1/channels"),
        ("GET", "/v1/connections?user=a"),
    ],
)
async def test_every_endpoint_needs_an_api_key(gw: Harness, method: str, path: str) -> None:
    alice = await gw.login("alice")
    right = "Bearer test-api-key-0123456789"
    for headers in (
        CIMultiDict(),
        CIMultiDict(Authorization="Bearer wrong-key-0123456789"),
        CIMultiDict([("Authorization", right), ("Authorization", right)]),  # once the first
    ):
        response = await gw.client.request(method, path, headers=headers, json={"user": "alice"})
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    await expect_open(alice)


async def test_metrics_with_a_token_need_exactly_that_one_bearer(make_gateway: MakeGateway) -> None:
    """WS_METRICS_TOKEN: as every credential, one ``Authorization`` header only (two once passed
    on their first, after the one-credential change missed this reader)."""
    gw = await make_gateway(metrics_token="metrics-token-0123456789")
    right = "Bearer metrics-token-0123456789"
    for headers, status in [
        (CIMultiDict(), 401),
        (CIMultiDict(Authorization="Bearer wrong-token-0123456789"), 401),
        (CIMultiDict([("Authorization", right), ("Authorization", right)]), 401),
        (CIMultiDict(Authorization=right), 200),
    ]:
        assert (await gw.client.get("/metrics", headers=headers)).status == status, headers


# -- across replicas -----------------------------------------------------------------------------


async def test_calls_to_one_replica_act_on_the_sockets_of_the_other(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    one = await make_gateway(redis_url=redis_url)
    two = await make_gateway(redis_url=redis_url)
    user, channel = unique(), f"chat:{unique()}"
    here, there = await one.login(user), await two.login(user)
    for ws in (here, there):
        await subscribe(ws, channel)

    status, body = await call(one, "GET", f"/v1/connections?user={user}")
    assert (status, body["connections"], body["complete"]) == (200, 2, True)
    _, page = await call(two, "GET", f"/v1/channels?prefix={channel}")
    assert page["channels"] == [{"channel": channel, "subscribers": 2}]

    _, body = await call(one, "POST", "/v1/unsubscribe", json={"user": user, "channel": channel})
    assert (body["unsubscribed"], body["complete"]) == (2, True)
    for ws in (here, there):
        assert await recv(ws) == {"type": "unsubscribed", "channel": channel, "reason": "server"}

    _, body = await call(two, "POST", "/v1/disconnect", json={"user": user})
    assert (body["disconnected"], body["complete"]) == (2, True)
    for ws in (here, there):
        await expect_close(ws, 4403, "disconnected")


async def test_a_registered_replica_that_does_not_answer_makes_the_answer_incomplete(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    gw = await make_gateway(redis_url=redis_url, api_timeout=0.3)
    redis = Redis.from_url(redis_url)
    ghost = f"ghost-{unique()}"
    try:
        await redis.zadd("ws:replicas", {ghost: 2**52})
        user = unique()
        await gw.login(user)
        status, body = await call(gw, "GET", f"/v1/connections?user={user}")
        assert (status, body["connections"], body["complete"]) == (200, 1, False)
    finally:
        await redis.zrem("ws:replicas", ghost)
        await redis.aclose()
