"""The subscribe and publish proxies on fakes and a fake clock: the namespace rule first, then the
application; both must allow; no answer fails closed; identical subscribes in flight share one
call and answers are remembered briefly, so a storm of re-subscribes reaches the app once per
user and channel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from realtime_gateway_protocol.access_token import Claims
from tests.support.clock import FakeClock
from tests.unit.ws.fakes import FakeAppProxy, FakePeer, build_gateway
from ws_service.domain import proxy as proxy_module
from ws_service.domain.commands import DisconnectUser, UnsubscribeUser
from ws_service.domain.connection import Connection
from ws_service.domain.gateway import Gateway
from ws_service.domain.history import HistoryPolicy
from ws_service.domain.namespaces import Namespace, Namespaces
from ws_service.domain.proxy import DENY_TTL, ProxyGate, Verdict

SUBSCRIBE_URL = "http://app.test/rt/subscribe"
PUBLISH_URL = "http://app.test/rt/publish"
TTL = 5.0


class World:
    """A gateway whose ``doc`` namespace has both proxies, on a fake app and a fake clock."""

    def __init__(self, *, ttl: float = TTL, gate: bool = True) -> None:
        self.clock = FakeClock()
        self.app = FakeAppProxy()
        doc = Namespace("doc", subscribe_proxy=SUBSCRIBE_URL, publish_proxy=PUBLISH_URL)
        notes = Namespace(
            "notes", history=HistoryPolicy(100, 300.0), presence=True, subscribe_proxy=SUBSCRIBE_URL
        )
        self.gateway: Gateway = build_gateway(
            clock=self.clock,
            namespaces=Namespaces([doc, notes]),
            proxies=ProxyGate(self.app, self.clock, allow_ttl=ttl) if gate else None,
            rate_per_second=1e9,
            rate_burst=10**9,
        )

    async def socket(self, sub: str = "alice", scope: str = "doc:read doc:write") -> Socket:
        peer = FakePeer()
        conn = self.gateway.connect(peer, None)
        now = int(self.clock.time())
        claims = Claims(sub, f"s-{sub}", now, now + 900, frozenset(scope.split()), None, "k")
        await conn.authenticated_at_handshake(claims)
        assert peer.take()[0]["type"] == "auth_success"
        return Socket(conn, peer)


async def turns(n: int = 20) -> None:
    """Let every ready task run ``n`` times (no time passes: the fake clock stands still)."""
    for _ in range(n):
        await asyncio.sleep(0)


class Socket:
    def __init__(self, conn: Connection, peer: FakePeer) -> None:
        self.conn, self.peer = conn, peer

    async def send(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        await self.conn.on_text(json.dumps(frame))
        return self.peer.take()

    async def subscribe(self, channel: str = "doc:1") -> dict[str, Any]:
        [reply] = await self.send({"type": "subscribe", "channel": channel, "id": 1})
        return reply


async def test_an_allowed_subscribe_asks_the_app_once_with_who_and_what() -> None:
    world = World()
    alice = await world.socket()
    assert await alice.subscribe() == {"type": "subscribed", "channel": "doc:1", "id": 1}
    [call] = world.app.calls
    assert (call.url, call.action, call.channel, call.claims.sub) == (
        SUBSCRIBE_URL,
        "subscribe",
        "doc:1",
        "alice",
    )


async def test_the_apps_denial_is_forbidden_with_its_reason() -> None:
    world = World()
    world.app.verdicts["doc:1"] = Verdict(False, "not a member of doc 1")
    alice = await world.socket()
    reply = await alice.subscribe()
    assert (reply["code"], reply["message"]) == ("forbidden", "not a member of doc 1")
    assert "doc:1" not in alice.conn.channels
    world.app.verdicts["doc:2"] = Verdict(False)
    assert (await alice.subscribe("doc:2"))["message"] == "the application refused"


async def test_history_and_presence_ask_the_app_as_a_subscribe_would() -> None:
    """What a user may not subscribe to, it may not read: history and presence in a namespace
    whose subscribes the app decides went by the namespace rule alone, so a refused user read
    the channel's messages and who was in it."""
    world = World()
    scope = "notes:read notes:write"
    member = await world.socket("bob", scope)
    assert (await member.subscribe("notes:secret"))["type"] == "subscribed"
    await member.send({"type": "publish", "channel": "notes:secret", "data": "confidential"})
    world.app.verdicts["notes:secret"] = Verdict(False, "not a member")
    mallory = await world.socket("mallory", scope)
    calls = len(world.app.calls)
    [bad] = await mallory.send({"type": "history", "channel": "notes:secret", "limit": -1})
    assert bad["code"] == "bad_request" and len(world.app.calls) == calls, "checks come first"
    for kind in ("history", "presence"):
        [reply] = await mallory.send({"type": kind, "channel": "notes:secret", "id": 2})
        assert (reply["type"], reply["code"], reply["message"]) == (
            "error",
            "forbidden",
            "not a member",
        ), kind
    asked = len(world.app.calls)
    replies = await member.send({"type": "history", "channel": "notes:secret", "id": 3})
    assert [m["data"] for m in replies[0]["publications"]] == ["confidential"]
    await member.send({"type": "presence", "channel": "notes:secret", "id": 4})
    assert len(world.app.calls) == asked, "a subscribed socket was asked at its subscribe"


async def test_the_namespace_rule_comes_first_and_the_app_is_not_asked() -> None:
    world = World()
    reader = await world.socket(scope="doc:read")
    [reply] = await reader.send({"type": "publish", "channel": "doc:1", "data": 1})
    assert reply["code"] == "forbidden"
    outsider = await world.socket("bob", scope="chat:read")
    assert (await outsider.subscribe())["code"] == "forbidden"
    assert world.app.calls == []


async def test_no_answer_fails_closed_and_is_not_remembered() -> None:
    world = World()
    world.app.down = True
    alice = await world.socket()
    reply = await alice.subscribe()
    assert (reply["code"], reply["message"]) == (
        "proxy_unavailable",
        "the application could not be asked; try again",
    )
    assert "doc:1" not in alice.conn.channels
    world.app.down = False
    assert (await alice.subscribe())["type"] == "subscribed"
    assert len(world.app.calls) == 2


async def test_a_proxied_namespace_without_a_way_to_ask_allows_nothing() -> None:
    world = World(gate=False)
    alice = await world.socket()
    assert (await alice.subscribe())["code"] == "proxy_unavailable"
    [reply] = await alice.send({"type": "publish", "channel": "doc:1", "data": 1})
    assert reply["code"] == "proxy_unavailable"


async def test_allows_are_remembered_per_user_and_channel_for_the_ttl() -> None:
    world = World()
    alice, alice_again, bob = await world.socket(), await world.socket(), await world.socket("bob")
    for socket in (alice, alice_again, alice, bob):
        assert (await socket.subscribe())["type"] == "subscribed"
    assert [call.claims.sub for call in world.app.calls] == ["alice", "bob"]
    world.clock.advance(TTL - 0.01)
    await alice.subscribe()
    assert len(world.app.calls) == 2
    world.clock.advance(0.02)
    await alice.subscribe()
    assert len(world.app.calls) == 3


async def test_denials_are_remembered_briefly() -> None:
    world = World()
    world.app.verdicts["doc:1"] = Verdict(False, "no")
    alice = await world.socket()
    await alice.subscribe()
    await alice.subscribe()
    assert len(world.app.calls) == 1
    world.app.verdicts.clear()
    world.clock.advance(DENY_TTL)
    assert (await alice.subscribe())["type"] == "subscribed"
    assert len(world.app.calls) == 2


async def test_a_zero_ttl_remembers_nothing() -> None:
    world = World(ttl=0)
    alice = await world.socket()
    await alice.subscribe()
    await alice.subscribe()
    assert len(world.app.calls) == 2


async def test_identical_subscribes_in_flight_share_one_call() -> None:
    world = World()
    sockets = [await world.socket() for _ in range(5)]
    release = world.app.hold()
    pending = [asyncio.ensure_future(socket.subscribe()) for socket in sockets]
    await turns()
    assert len(world.app.calls) == 1
    release.set()
    assert {reply["type"] for reply in await asyncio.gather(*pending)} == {"subscribed"}
    assert len(world.app.calls) == 1


async def test_a_socket_that_closes_while_the_app_answers_joins_nothing() -> None:
    world = World()
    alice = await world.socket()
    release = world.app.hold()
    pending = asyncio.ensure_future(alice.send({"type": "subscribe", "channel": "doc:1"}))
    await turns()
    alice.conn.disconnected()
    release.set()
    assert await pending == []
    assert alice.conn.channels == {}
    assert "doc:1" not in world.gateway.hub._local


async def test_a_storm_of_resubscribes_reaches_the_app_once_per_user_and_channel() -> None:
    """100 sockets of 50 users subscribe to 5 channels, close, reconnect and re-subscribe 20
    times: 10,000 re-subscribes, 250 calls to the app (one per user and channel)."""
    world = World(ttl=60.0)
    users = [f"u{n}" for n in range(50)]
    channels = [f"doc:{n}" for n in range(5)]

    async def subscribe_all(rounds: int) -> int:
        sockets = [await world.socket(user) for user in users for _ in range(2)]
        replies = await asyncio.gather(
            *(s.subscribe(c) for s in sockets for c in channels for _ in range(rounds))
        )
        for socket in sockets:
            socket.conn.disconnected()
        assert {reply["type"] for reply in replies} == {"subscribed"}
        return len(replies)

    await subscribe_all(1)
    assert len(world.app.calls) == 250
    assert await subscribe_all(20) == 10_000
    assert len(world.app.calls) == 250


async def test_remembered_answers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_module, "MAX_REMEMBERED", 3)
    world = World()
    alice = await world.socket()
    for n in range(5):
        await alice.subscribe(f"doc:{n}")
    gate = world.gateway.context.proxies
    assert gate is not None and len(gate._remembered) == 3
    await alice.subscribe("doc:0")
    assert len(world.app.calls) == 6, "the oldest answer was forgotten"


async def test_the_apps_unsubscribe_forgets_the_remembered_allow() -> None:
    """The app un-shares a channel: its proxy now denies and it calls ``/v1/unsubscribe``. The
    allow remembered for the user let it subscribe straight back, unasked, for good."""
    world = World()
    alice = await world.socket()
    assert (await alice.subscribe())["type"] == "subscribed"
    world.app.verdicts["doc:1"] = Verdict(False, "no longer shared")
    assert await world.gateway.execute(UnsubscribeUser("alice", "doc:1")) == {"count": 1}
    assert alice.peer.take()[0]["type"] == "unsubscribed"
    reply = await alice.subscribe()
    assert (reply["code"], reply["message"]) == ("forbidden", "no longer shared")
    assert len(world.app.calls) == 2


async def test_the_apps_disconnect_forgets_the_users_remembered_allows() -> None:
    world = World()
    bob = await world.socket("bob")
    await bob.subscribe("doc:1")
    await bob.subscribe("doc:2")
    alice = await world.socket()
    await alice.subscribe("doc:1")
    world.app.verdicts["doc:1"] = world.app.verdicts["doc:2"] = Verdict(False, "removed")
    assert await world.gateway.execute(DisconnectUser("bob")) == {"count": 1}
    again = await world.socket("bob")
    assert (await again.subscribe("doc:1"))["code"] == "forbidden"
    assert (await again.subscribe("doc:2"))["code"] == "forbidden"
    assert (await alice.subscribe("doc:1"))["type"] == "subscribed", "another user's is kept"
    assert len(world.app.calls) == 5


async def test_the_apps_unsubscribe_reaches_a_subscribe_waiting_for_the_app() -> None:
    """An unsubscribe that came while the app was being asked found no subscription (0) and the
    subscribe then completed: the app believed the user out, and it was in. The answer asked
    before the unsubscribe is not shared with a later subscribe, nor remembered."""
    world = World()
    alice = await world.socket()
    release = world.app.hold()
    waiting = asyncio.ensure_future(alice.send({"type": "subscribe", "channel": "doc:1", "id": 1}))
    await turns()
    assert await world.gateway.execute(UnsubscribeUser("alice", "doc:1")) == {"count": 1}
    world.app.verdicts["doc:1"] = Verdict(False, "removed")
    other_tab = await world.socket()
    later = asyncio.ensure_future(other_tab.subscribe())
    await turns()
    assert len(world.app.calls) == 2, "the later subscribe asked again"
    release.set()
    assert [(f["type"], f.get("id"), f.get("reason")) for f in await waiting] == [
        ("subscribed", 1, None),
        ("unsubscribed", None, "server"),
    ]
    assert alice.conn.channels == {} and "doc:1" not in world.gateway.hub._local
    assert (await later)["code"] == "forbidden"
    assert (await alice.subscribe())["code"] == "forbidden"
    assert len(world.app.calls) == 2, "the denial is remembered, the stale allow was not"


async def test_the_apps_unsubscribe_reaches_every_subscribe_it_overtook() -> None:
    """Two subscribes of one channel waiting for the app, then the app's unsubscribe: only the
    first was undone, and the second left the socket subscribed."""
    world = World()
    alice = await world.socket()
    release = world.app.hold()
    first = asyncio.ensure_future(alice.send({"type": "subscribe", "channel": "doc:1", "id": 1}))
    second = asyncio.ensure_future(alice.send({"type": "subscribe", "channel": "doc:1", "id": 2}))
    await turns()
    assert await world.gateway.execute(UnsubscribeUser("alice", "doc:1")) == {"count": 1}
    release.set()
    frames = [*(await first), *(await second)]
    assert [f["type"] for f in frames].count("subscribed") == 2
    assert frames[-1] == {"type": "unsubscribed", "channel": "doc:1", "reason": "server"}
    assert alice.conn.channels == {} and "doc:1" not in world.gateway.hub._local
    world.app.hold().set()
    assert (await alice.subscribe())["type"] == "subscribed", "a subscribe after it stands"
    assert "doc:1" in alice.conn.channels


async def test_every_publish_is_asked_with_its_data_and_may_be_replaced() -> None:
    world = World()
    alice = await world.socket()
    await alice.subscribe()
    [message, published] = await alice.send({"type": "publish", "channel": "doc:1", "data": "a"})
    assert (message["data"], published["type"]) == ("a", "published")
    world.app.verdicts["doc:1"] = Verdict(True, replaces=True, data={"text": "A", "checked": True})
    [message, _] = await alice.send({"type": "publish", "channel": "doc:1", "data": "a"})
    assert message["data"] == {"text": "A", "checked": True}
    world.app.verdicts["doc:1"] = Verdict(True, replaces=True, data=None)
    [message, _] = await alice.send({"type": "publish", "channel": "doc:1", "data": "a"})
    assert message["data"] is None
    publishes = [call for call in world.app.calls if call.action == "publish"]
    assert [(call.url, call.data) for call in publishes] == [(PUBLISH_URL, "a")] * 3


async def test_a_refused_or_unanswered_publish_delivers_nothing() -> None:
    world = World()
    alice = await world.socket()
    await alice.subscribe()
    world.app.verdicts["doc:1"] = Verdict(False, "read-only document")
    [reply] = await alice.send({"type": "publish", "channel": "doc:1", "data": 1, "id": 7})
    assert (reply["code"], reply["message"], reply["id"]) == ("forbidden", "read-only document", 7)
    world.app.verdicts.clear()
    world.app.down = True
    [reply] = await alice.send({"type": "publish", "channel": "doc:1", "data": 1, "id": 8})
    assert (reply["code"], reply["id"]) == ("proxy_unavailable", 8)


async def test_closing_the_gateway_cancels_the_calls_in_flight() -> None:
    world = World()
    alice = await world.socket()
    world.app.hold()
    pending = asyncio.ensure_future(alice.subscribe())
    await turns()
    await world.gateway.close()
    with pytest.raises(asyncio.CancelledError):
        await pending
