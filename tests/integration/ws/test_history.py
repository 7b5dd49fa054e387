"""History, recovery and presence through the real app, embedded (in-process bus and backends)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, recv, send
from ws_service.appkeys import METRICS
from ws_service.domain.history import HistoryPolicy


async def request(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await send(ws, {**frame, "id": "req"})
    while True:
        reply = await recv(ws)
        if reply.get("id") == "req":
            return reply


async def publish(ws: Any, channel: str, n: int) -> None:
    assert (await request(ws, {"type": "publish", "channel": channel, "data": n}))["type"] == (
        "published"
    )


async def messages(ws: Any, count: int) -> list[dict[str, Any]]:
    return [await recv(ws) for _ in range(count)]


def offsets(frames: list[dict[str, Any]]) -> list[int]:
    return [frame["offset"] for frame in frames]


async def test_messages_carry_gap_free_offsets_and_reconnects_recover_exactly_what_was_missed(
    gw: Harness,
) -> None:
    alice = await gw.login("alice")
    bob = await gw.login("bob")
    subscribed = await request(alice, {"type": "subscribe", "channel": "chat:a"})
    position = subscribed["position"]
    assert position["offset"] == 0 and "recovered" not in subscribed
    for n in range(3):
        await publish(bob, "chat:a", n)
    live = await messages(alice, 3)
    assert offsets(live) == [1, 2, 3]
    epoch = live[0]["epoch"]
    assert {frame["epoch"] for frame in live} == {epoch}
    await alice.close()
    for n in range(3, 7):
        await publish(bob, "chat:a", n)
    again = await gw.login("alice")
    since = {"offset": 3, "epoch": epoch}
    reply = await request(again, {"type": "subscribe", "channel": "chat:a", "since": since})
    assert reply["recovered"] is True
    assert reply["position"] == {"offset": 7, "epoch": epoch}
    assert [(p["type"], p["offset"], p["data"]) for p in reply["publications"]] == [
        ("message", 4, 3),
        ("message", 5, 4),
        ("message", 6, 5),
        ("message", 7, 6),
    ]
    await publish(bob, "chat:a", 7)
    assert offsets(await messages(again, 1)) == [8]
    metrics = gw.app[METRICS].registry
    assert metrics.get_sample_value("ws_recoveries_total", {"outcome": "recovered"}) == 1


async def test_subscribing_again_loses_nothing_published_meanwhile(gw: Harness) -> None:
    """A socket subscribed already stays live while a second subscribe (no ``since``) is
    handled: what is published meanwhile is held, then delivered after the reply, whose position
    is the last one the socket was sent. The reply said the stream's newest position and the
    held messages at or below it were dropped, in neither the reply nor the stream: 40 of 50
    lost (an outside probe), and a client recovering from that position never got them."""
    alice = await gw.login("alice")
    bob = await gw.login("bob")
    first = await request(alice, {"type": "subscribe", "channel": "chat:a"})
    for k in range(4):  # 32 publishes: under the publish rate's burst
        await send(alice, {"type": "subscribe", "channel": "chat:a", "id": f"again{k}"})
        for n in range(8 * k, 8 * k + 8):
            await send(bob, {"type": "publish", "channel": "chat:a", "data": n})
    start = first["position"]["offset"]
    got: list[int] = []
    replies = 0
    while len(got) < 32 or replies < 4:
        frame = await recv(alice)
        if frame["type"] == "message":
            got.append(frame["offset"])
            continue
        assert frame["type"] == "subscribed", frame
        replies += 1  # where the socket's stream is: the last message it was sent before
        assert frame["position"]["offset"] == (got[-1] if got else start), frame
    assert got == list(range(start + 1, start + 33)), "in order, no gap, no repeat"


async def test_another_epoch_or_a_position_too_old_is_not_recovered(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(history={"chat": HistoryPolicy(size=3, ttl=300)})
    alice = await gw.login("alice")
    bob = await gw.login("bob")
    await request(alice, {"type": "subscribe", "channel": "chat:a"})
    for n in range(5):
        await publish(bob, "chat:a", n)
    epoch = (await messages(alice, 5))[0]["epoch"]
    for since, recovered in [
        ({"offset": 1, "epoch": epoch}, False),  # offset 2 was trimmed
        ({"offset": 2, "epoch": epoch}, True),
        ({"offset": 2, "epoch": "other"}, False),
        ({"offset": 9, "epoch": epoch}, False),
    ]:
        reply = await request(alice, {"type": "subscribe", "channel": "chat:a", "since": since})
        assert reply["recovered"] is recovered, since
        assert offsets(reply["publications"]) == ([3, 4, 5] if recovered else [])
        assert reply["position"] == {"offset": 5, "epoch": epoch}


async def test_recovery_while_messages_are_published_has_no_gap_and_no_repeat(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        rate_per_second=10_000.0,
        rate_burst=10_000,
        history={"chat": HistoryPolicy(size=1000, ttl=300)},
    )
    alice = await gw.login("alice")
    bob = await gw.login("bob")
    await request(alice, {"type": "subscribe", "channel": "chat:a"})
    total = 300

    async def publisher() -> None:
        for n in range(total):
            await send(bob, {"type": "publish", "channel": "chat:a", "data": n})
            if n % 10 == 0:
                await asyncio.sleep(0)

    publishing = asyncio.create_task(publisher())
    live = await messages(alice, 20)
    seen = offsets(live)
    await alice.close()
    again = await gw.login("alice")
    since = {"offset": seen[-1], "epoch": live[-1]["epoch"]}
    await send(again, {"type": "subscribe", "channel": "chat:a", "since": since})
    reply = await recv(again)
    assert reply["recovered"] is True
    seen += offsets(reply["publications"])
    await publishing
    while seen[-1] < total:
        seen += offsets(await messages(again, 1))
    assert seen == list(range(1, total + 1))


async def test_history_request_returns_recent_messages_oldest_first(gw: Harness) -> None:
    alice = await gw.login("alice")
    for n in range(5):
        await publish(alice, "chat:h", n)
    reply = await request(alice, {"type": "history", "channel": "chat:h", "limit": 2})
    assert reply["type"] == "history" and reply["channel"] == "chat:h"
    assert [(p["offset"], p["data"]) for p in reply["publications"]] == [(4, 3), (5, 4)]
    epoch = reply["position"]["epoch"]
    assert reply["position"]["offset"] == 5 and "recovered" not in reply
    since = await request(
        alice, {"type": "history", "channel": "chat:h", "since": {"offset": 1, "epoch": epoch}}
    )
    assert (since["recovered"], offsets(since["publications"])) == (True, [2, 3, 4, 5])


async def test_history_and_presence_refusals(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(max_violations=100)
    alice = await gw.login("alice", scope="chat:read")
    own = "user:alice"
    for frame, code in [
        ({"type": "history", "channel": own}, "not_enabled"),
        ({"type": "presence", "channel": own}, "not_enabled"),
        (
            {"type": "subscribe", "channel": own, "since": {"offset": 0, "epoch": "x"}},
            "not_enabled",
        ),
        ({"type": "subscribe", "channel": own, "presence_events": True}, "not_enabled"),
        ({"type": "history", "channel": "news:a"}, "forbidden"),
        ({"type": "presence", "channel": "news:a"}, "forbidden"),
        ({"type": "history", "channel": "chat:a", "limit": -1}, "bad_request"),
        ({"type": "history", "channel": "chat:a", "limit": True}, "bad_request"),
        ({"type": "history", "channel": "chat:a", "limit": 2**63}, "bad_request"),
        ({"type": "subscribe", "channel": "chat:a", "since": 3}, "bad_request"),
        ({"type": "subscribe", "channel": "chat:a", "since": {"offset": 1}}, "bad_request"),
        (
            {"type": "subscribe", "channel": "chat:a", "since": {"offset": 2**63, "epoch": "x"}},
            "bad_request",
        ),
        # An epoch's digits were read as an integer: 5,000 of them raised ValueError (1011).
        (
            {"type": "history", "channel": "chat:a", "since": {"offset": 0, "epoch": "9" * 65}},
            "bad_request",
        ),
        (
            {"type": "subscribe", "channel": "chat:a", "since": {"offset": 0, "epoch": ""}},
            "bad_request",
        ),
        ({"type": "subscribe", "channel": "chat:a", "presence_events": 1}, "bad_request"),
    ]:
        reply = await request(alice, frame)
        assert (reply["type"], reply["code"]) == ("error", code), frame
    # a channel without history: no position, as before
    assert await request(alice, {"type": "subscribe", "channel": own}) == {
        "type": "subscribed",
        "channel": own,
        "id": "req",
    }


async def test_presence_lists_users_and_join_leave_fire_once_per_user(gw: Harness) -> None:
    watcher = await gw.login("carol")
    reply = await request(
        watcher, {"type": "subscribe", "channel": "chat:p", "presence_events": True}
    )
    assert reply["type"] == "subscribed"
    carol = {"id": "carol", "username": "Carol"}
    assert await recv(watcher) == {"type": "join", "channel": "chat:p", "user": carol}
    tabs = [await gw.login("alice") for _ in range(2)]
    for tab in tabs:
        await request(tab, {"type": "subscribe", "channel": "chat:p"})
    alice = {"id": "alice", "username": "Alice"}
    assert await recv(watcher) == {"type": "join", "channel": "chat:p", "user": alice}
    listed = await request(watcher, {"type": "presence", "channel": "chat:p"})
    assert listed == {
        "type": "presence",
        "channel": "chat:p",
        "id": "req",
        "members": [{"user": alice, "connections": 2}, {"user": carol, "connections": 1}],
    }
    await request(tabs[0], {"type": "unsubscribe", "channel": "chat:p"})
    await tabs[1].close()
    assert await recv(watcher) == {"type": "leave", "channel": "chat:p", "user": alice}
    listed = await request(watcher, {"type": "presence", "channel": "chat:p"})
    assert listed["members"] == [{"user": carol, "connections": 1}]


async def unsubscribe_then_presence(ws: Any, channel: str) -> dict[str, Any]:
    """``unsubscribe`` and ``presence`` sent together (the server reads both in one read): the
    ``presence`` answer, once ``unsubscribed`` came first."""
    await send(ws, {"type": "unsubscribe", "channel": channel, "id": "leave"})
    await send(ws, {"type": "presence", "channel": channel, "id": "look"})
    assert await recv(ws) == {"type": "unsubscribed", "channel": channel, "id": "leave"}
    return await recv(ws)


async def test_presence_asked_right_after_unsubscribed_no_longer_lists_the_socket(
    gw: Harness,
) -> None:
    alice = await gw.login("alice")
    await request(alice, {"type": "subscribe", "channel": "chat:p"})
    listed = await unsubscribe_then_presence(alice, "chat:p")
    assert (listed["type"], listed["members"]) == ("presence", [])


async def test_a_full_history_refuses_publishes_with_history_full_and_keeps_what_it_holds(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        history_max_bytes=1_000_000, rate_per_second=10_000.0, rate_burst=10_000
    )
    alice, mallory = await gw.login("alice"), await gw.login("mallory")
    for n in range(3):
        await publish(alice, "chat:victim", n)
    codes = []
    for n in range(40):
        reply = await request(
            mallory, {"type": "publish", "channel": f"chat:m{n}", "data": "x" * 60_000}
        )
        codes.append(reply.get("code", reply["type"]))
    assert codes.count("published") < 17 and codes[-1] == "history_full"
    kept = await request(alice, {"type": "history", "channel": "chat:victim"})
    assert [p["data"] for p in kept["publications"]] == [0, 1, 2]
    response = await gw.client.post(
        "/v1/publish",
        json={"channel": "chat:m99", "data": "x" * 60_000},
        headers={"Authorization": "Bearer test-api-key-0123456789"},
    )
    assert (response.status, (await response.json())["error"]) == (503, "history_full")


async def over_budget(gw: Harness, other: Harness | None = None) -> None:
    """One user publishing 60 KB messages to fresh channels, on ``gw`` (and ``other``): what it
    keeps stops at its budget; the server's publishes and another user's go on."""
    tabs = [await gw.login("mallory")] + ([await other.login("mallory")] if other else [])
    codes = []
    for n in range(30):
        reply = await request(
            tabs[n % len(tabs)], {"type": "publish", "channel": f"chat:m{n}", "data": "x" * 60_000}
        )
        codes.append(reply.get("code", reply["type"]))
    assert codes.count("published") == 1_000_000 // (60_000 + 200)
    assert set(codes[codes.index("history_full") :]) == {"history_full"}
    response = await gw.client.post(
        "/v1/publish",
        json={"channel": "chat:m0", "data": "x" * 60_000},
        headers={"Authorization": "Bearer test-api-key-0123456789"},
    )
    assert response.status == 202
    await publish(await (other or gw).login("alice"), "chat:m0", 1)


async def test_a_user_over_its_history_budget_gets_history_full(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(history_user_bytes=1_000_000, rate_per_second=1000.0, rate_burst=1000)
    await over_budget(gw)
