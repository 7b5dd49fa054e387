"""The server API's commands: their strict encoding, what a replica does with each on its own
sockets (on fakes), and how the asker merges the answers of several replicas."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from realtime_gateway_protocol.access_token import Claims
from shared.bus import InProcessBus
from tests.support.clock import FakeClock
from tests.unit.ws.fakes import FakePeer, build_gateway
from ws_service.domain.commands import (
    CountConnections,
    DisconnectUser,
    ListChannels,
    Request,
    SubscribeUser,
    UnsubscribeUser,
    decode_reply,
    decode_request,
    encode_request,
)
from ws_service.domain.connection import Connection
from ws_service.domain.control import ControlPlane, LocalReplicas
from ws_service.domain.gateway import Gateway


@pytest.mark.parametrize(
    "command",
    [
        DisconnectUser("alice"),
        DisconnectUser("alice", "sid-1"),
        UnsubscribeUser("alice", "chat:a"),
        SubscribeUser("alice", "chat:a"),
        CountConnections("alice"),
        ListChannels("chat:", "chat:b", 10),
    ],
)
def test_every_command_survives_its_encoding(command: Any) -> None:
    request = Request("r1", "ws.reply:x", command)
    assert decode_request(encode_request(request)) == request


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        '{"id": "r", "reply_to": "t"}',
        '{"id": "r", "reply_to": "t", "command": {"type": "reboot"}}',
        '{"id": "r", "reply_to": "t", "command": {"type": "disconnect", "user": 1, "session": null}}',
        '{"id": "r", "reply_to": "t", "command": {"type": "disconnect", "user": "a"}}',
        '{"id": "r", "reply_to": "t", "command": {"type": "connections", "user": null}}',
        '{"id": "r", "reply_to": "t", "command": {"type": "channels", "prefix": "", '
        '"after": "", "limit": true}}',
        '{"id": "r", "reply_to": "t", "command": {"type": "subscribe", "user": "a", '
        '"channel": "chat:a", "extra": 1}}',
        '{"id": 1, "reply_to": "t", "command": {"type": "connections", "user": "a"}}',
        # Once TypeError (hashed for the table of commands), not the ValueError callers catch.
        '{"id": "r", "reply_to": "t", "command": {"type": ["connections"], "user": "a"}}',
        '{"id": "r", "reply_to": "t", "command": {"type": {}, "user": "a"}}',
    ],
)
def test_malformed_requests_are_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        decode_request(payload)


def test_malformed_replies_are_refused() -> None:
    with pytest.raises(ValueError):
        decode_reply('{"id": "r", "replica": "x", "result": []}')


def claims(sub: str, sid: str = "s1") -> Claims:
    return Claims(
        sub=sub,
        sid=sid,
        iat=1_800_000_000,
        exp=1_800_000_900,
        kid="k",
        scopes=frozenset({"chat:read"}),
        username=sub.title(),
    )


async def login(gateway: Gateway, sub: str, sid: str = "s1") -> tuple[Connection, FakePeer]:
    peer = FakePeer()
    conn = gateway.connect(peer, "203.0.113.1")
    await conn.authenticated_at_handshake(claims(sub, sid))
    peer.take()
    return conn, peer


async def test_disconnect_closes_only_live_sockets_of_the_session_asked() -> None:
    gateway = build_gateway()
    _, phone = await login(gateway, "alice", "phone")
    _, laptop = await login(gateway, "alice", "laptop")
    waiting = FakePeer()
    gateway.connect(waiting, "203.0.113.1")  # not authenticated: never acted on

    assert await gateway.execute(DisconnectUser("alice", "phone")) == {"count": 1}
    assert phone.closed == (4403, "disconnected") and laptop.closed is None
    assert await gateway.execute(DisconnectUser("alice")) == {"count": 1}, "phone is closing"
    assert laptop.closed == (4403, "disconnected") and waiting.closed is None


async def test_server_side_subscribe_and_unsubscribe_send_their_frames() -> None:
    gateway = build_gateway()
    conn, peer = await login(gateway, "alice")
    assert await gateway.execute(SubscribeUser("alice", "news:a")) == {"count": 1}
    assert peer.take() == [{"type": "subscribed", "channel": "news:a", "reason": "server"}]
    assert "news:a" in conn.channels
    assert await gateway.execute(SubscribeUser("alice", "news:a")) == {"count": 0}
    assert gateway.hub.channels("", "", 10) == [("news:a", 1)]

    assert await gateway.execute(UnsubscribeUser("alice", "news:a")) == {"count": 1}
    assert peer.take() == [{"type": "unsubscribed", "channel": "news:a", "reason": "server"}]
    assert await gateway.execute(UnsubscribeUser("alice", "news:a")) == {"count": 0}
    assert gateway.hub.channels("", "", 10) == []


async def test_server_side_subscribe_keeps_the_sockets_subscription_limit() -> None:
    gateway = build_gateway(max_subscriptions=1)
    _, peer = await login(gateway, "alice")
    assert await gateway.execute(SubscribeUser("alice", "news:a")) == {"count": 1}
    assert await gateway.execute(SubscribeUser("alice", "news:b")) == {"count": 0}
    assert [frame["channel"] for frame in peer.take()] == ["news:a"]


async def test_a_closing_socket_is_not_subscribed_by_the_server() -> None:
    gateway = build_gateway()
    conn, _ = await login(gateway, "alice")
    conn.on_binary()  # closes 4400
    assert await gateway.execute(SubscribeUser("alice", "news:a")) == {"count": 0}
    assert await gateway.execute(CountConnections("alice")) == {"sessions": {}}


class Replica:
    """An executor with canned channels, as one replica of several sees them."""

    def __init__(self, replica: str, channels: dict[str, int], *, hangs: bool = False) -> None:
        self.replica = replica
        self._channels = channels
        self._hangs = hangs
        self.commands: list[Any] = []

    async def execute(self, command: Any) -> dict[str, Any]:
        self.commands.append(command)
        if self._hangs:
            await asyncio.Event().wait()
        if isinstance(command, ListChannels):
            names = sorted(
                n for n in self._channels if n > command.after and n.startswith(command.prefix)
            )
            return {"channels": [[n, self._channels[n]] for n in names[: command.limit]]}
        return {"count": 1}


async def planes(*replicas: Replica, clock: FakeClock | None = None) -> list[ControlPlane]:
    bus, registry = InProcessBus(), LocalReplicas()
    started = [
        ControlPlane(bus, registry, replica, timeout=1.0, clock=clock or FakeClock())
        for replica in replicas
    ]
    for plane in started:
        await plane.start()
    return started


async def test_channels_merge_the_pages_of_every_replica_exactly() -> None:
    one = Replica("one", {"chat:a": 1, "chat:c": 2, "chat:e": 1, "news:x": 1})
    two = Replica("two", {"chat:a": 3, "chat:b": 1, "chat:d": 1, "chat:f": 1})
    asker, _ = await planes(one, two)
    pages, after = [], ""
    while True:
        page = await asker.channels("chat:", after, 2)
        assert page.complete
        pages.append(page.channels)
        if page.cursor is None:
            break
        after = page.cursor
    assert pages == [
        [("chat:a", 4), ("chat:b", 1)],
        [("chat:c", 2), ("chat:d", 1)],
        [("chat:e", 1), ("chat:f", 1)],
    ]


class Forger(Replica):
    """A replica (or anyone who can publish on the bus) answering junk for the channel list."""

    async def execute(self, command: Any) -> dict[str, Any]:
        return {"channels": 5}


async def test_a_reply_whose_channels_are_not_a_list_counts_as_none() -> None:
    """``GET /v1/channels`` was a 500 (TypeError) when one reply's channels was a number."""
    honest = Replica("one", {"chat:a": 1})
    asker, _ = await planes(honest, Forger("two", {}))
    page = await asker.channels("chat:", "", 10)
    assert (page.channels, page.cursor, page.complete) == ([("chat:a", 1)], None, True)


async def test_counts_add_up_across_replicas_and_a_silent_one_is_left_at_the_deadline() -> None:
    clock = FakeClock()
    quick, other, silent = Replica("quick", {}), Replica("other", {}), Replica("x", {}, hangs=True)
    asker, *_ = await planes(quick, other, silent, clock=clock)
    call = asyncio.ensure_future(asker.count(DisconnectUser("alice")))
    for _ in range(10):  # the command reaches every replica, the deadline is set
        await asyncio.sleep(0)
    assert silent.commands and clock.pending == 1
    assert not call.done()
    clock.advance(0.999)
    await asyncio.sleep(0)
    assert not call.done()
    clock.advance(0.001)
    counted = await call
    assert (counted.count, counted.complete) == (2, False)
    assert silent.commands == [DisconnectUser("alice")], "the silent replica was asked too"


async def test_a_malformed_command_on_the_bus_is_ignored() -> None:
    replica = Replica("one", {})
    bus = InProcessBus()
    plane = ControlPlane(bus, LocalReplicas(), replica)
    await plane.start()
    await bus.publish("ws.control", json.dumps({"id": "x", "command": "reboot"}))
    await bus.publish(
        "ws.control",
        encode_request(Request("x", "auth.revocations", DisconnectUser("a"))),
    )
    await asyncio.sleep(0)
    assert replica.commands == [], "answers go to reply topics only"
    await plane.close()
