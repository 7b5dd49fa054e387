"""The webhook events the domain reports, on fakes: what each step of a socket's life emits, the
presence transitions once per user, publish events only where a namespace asks, and the sink's
bounded queue that drops, counts and logs rather than wait."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_gateway_protocol.access_token import Claims
from tests.support.clock import FakeClock
from tests.unit.ws.fakes import (
    FakeMetrics,
    FakePeer,
    HeldPresence,
    RecordingSink,
    build_gateway,
)
from ws_service.domain.commands import SubscribeUser, UnsubscribeUser
from ws_service.domain.connection import Connection
from ws_service.domain.gateway import Gateway
from ws_service.domain.namespaces import Namespace, Namespaces
from ws_service.domain.webhooks import Events
from ws_service.webhooks.delivery import QueueSink, bodies
from ws_service.webhooks.queue import MemoryQueue

NAMESPACES = Namespaces(
    [Namespace("chat", presence=True, webhook_publish=True), Namespace("news", presence=True)]
)


def setup(**kwargs: Any) -> tuple[Gateway, RecordingSink, FakeClock]:
    clock, sink = FakeClock(), RecordingSink()
    ids = itertools.count(1)
    events = Events(sink, clock=clock, new_id=lambda: f"e{next(ids)}")
    gateway = build_gateway(clock=clock, events=events, namespaces=NAMESPACES, **kwargs)
    return gateway, sink, clock


def claims(sub: str = "alice", sid: str = "s1") -> Claims:
    scopes = frozenset({"chat:read", "chat:write", "news:read"})
    return Claims(sub, sid, 1_800_000_000, 1_800_000_900, scopes, sub.title(), "k")


async def login(gateway: Gateway, sub: str = "alice") -> tuple[Connection, FakePeer]:
    peer = FakePeer()
    conn = gateway.connect(peer, "203.0.113.1")
    await conn.authenticated_at_handshake(claims(sub))
    return conn, peer


async def send(conn: Connection, **frame: Any) -> None:
    await conn.on_text(json.dumps(frame))


def brief(events: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Type, channel and reason of each event but the presence ones."""
    return [
        (e["type"], e.get("channel"), e.get("reason"))
        for e in events
        if not e["type"].startswith("presence")
    ]


async def test_a_sockets_life_in_events() -> None:
    gateway, sink, clock = setup()
    conn, _ = await login(gateway)
    [connect] = sink.take()
    assert connect == {
        "id": "e1",
        "type": "connect",
        "ts": int(clock.time() * 1000),
        "user": "alice",
        "session": "s1",
    }
    await send(conn, type="subscribe", channel="news:a")
    await send(conn, type="subscribe", channel="news:a")  # again: no second event
    await send(conn, type="unsubscribe", channel="news:a")
    await send(conn, type="subscribe", channel="news:b")
    conn.on_binary()
    conn.disconnected()
    events = sink.take()
    assert brief(events) == [
        ("subscribe", "news:a", "client"),
        ("unsubscribe", "news:a", "client"),
        ("subscribe", "news:b", "client"),
        ("unsubscribe", "news:b", "disconnect"),
        ("disconnect", None, "bad_request"),
    ]
    assert events[-1]["code"] == 4400


async def test_a_token_without_a_sid_is_a_null_session_as_in_auth_success() -> None:
    """A trusted identity provider's token may carry no ``sid``: the events said ``""`` where
    ``auth_success`` and the proxy say null (an outside probe)."""
    gateway, sink, _ = setup()
    peer = FakePeer()
    conn = gateway.connect(peer, "203.0.113.1")
    await conn.authenticated_at_handshake(claims(sid=""))
    conn.disconnected()
    assert [(e["type"], e["session"]) for e in sink.take()] == [
        ("connect", None),
        ("disconnect", None),
    ]


async def test_a_client_that_leaves_is_connection_closed_and_an_unauthenticated_one_is_silent() -> (
    None
):
    gateway, sink, _ = setup()
    conn, _ = await login(gateway)
    sink.take()
    conn.disconnected()
    [event] = sink.take()
    assert (event["type"], event["code"], event["reason"]) == (
        "disconnect",
        None,
        "connection_closed",
    )
    waiting = gateway.connect(FakePeer(), "203.0.113.1")
    waiting.disconnected()
    assert sink.take() == []


async def test_server_side_subscriptions_report_their_reason() -> None:
    gateway, sink, _ = setup()
    conn, _ = await login(gateway)
    sink.take()
    assert await conn.subscribe_by_server("news:a")
    assert conn.unsubscribe_by_server("news:a")
    assert brief(sink.take()) == [
        ("subscribe", "news:a", "server"),
        ("unsubscribe", "news:a", "server"),
    ]


async def test_presence_is_reported_once_per_user() -> None:
    gateway, sink, _ = setup()
    tabs = [await login(gateway) for _ in range(2)]
    for conn, _ in tabs:
        await send(conn, type="subscribe", channel="news:a")
    for conn, _ in tabs:
        conn.disconnected()
    for _ in range(3):
        await asyncio.sleep(0)  # the hub removes presence entries in the background
    presence = [e for e in sink.take() if e["type"].startswith("presence")]
    assert [(e["type"], e["user"], e["session"], e["username"]) for e in presence] == [
        ("presence_join", "alice", None, "Alice"),
        ("presence_leave", "alice", None, "Alice"),
    ]


async def test_publish_events_only_where_the_namespace_asks() -> None:
    gateway, sink, _ = setup()
    await gateway.hub.publish("chat:a", {"n": 1}, claims("bob", "s9"))
    await gateway.hub.publish("news:a", {"n": 2}, None)
    [event] = sink.take()
    assert (event["type"], event["channel"], event["data"], event["user"], event["session"]) == (
        "publish",
        "chat:a",
        {"n": 1},
        "bob",
        "s9",
    )


def test_a_full_queue_drops_counts_and_logs_at_most_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    metrics = FakeMetrics()
    queue = MemoryQueue(2)
    sink = QueueSink(queue, metrics.auth, monotonic=lambda: now[0])  # any labelled counter
    for n in range(5):
        sink.emit({"n": n})
    assert (len(queue), metrics.counts["auth:queued"], metrics.counts["auth:dropped"]) == (2, 2, 3)
    now[0] = 1.0
    sink.emit({"n": 5})
    drops = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.__dict__["dropped"] for r in drops] == [1, 3]


def held_presence(gateway: Gateway) -> HeldPresence:
    presence = gateway.hub._presence
    assert isinstance(presence, HeldPresence)
    return presence


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_server_unsubscribe_during_the_join_leaves_no_ghost_and_keeps_events_in_order() -> (
    None
):
    """The join awaits the presence backend; an unsubscribe from the app's backend meanwhile left
    before the presence entry existed, which the join then added: a member nothing removed
    (refreshed by its replica forever), ``presence_join`` without ``presence_leave``, and an
    ``unsubscribe`` event without its ``subscribe``."""
    gateway, sink, _ = setup(presence=HeldPresence)
    conn, peer = await login(gateway)
    sink.take()
    peer.take()
    joining = asyncio.ensure_future(gateway.execute(SubscribeUser("alice", "news:a")))
    await turns()
    assert await gateway.execute(UnsubscribeUser("alice", "news:a")) == {"count": 1}
    held_presence(gateway).release.set()
    assert await joining == {"count": 1}
    await turns()
    assert await gateway.hub.members("news:a") == []
    assert "news:a" not in conn.channels and "news:a" not in gateway.hub._local
    assert [(e["type"], e.get("reason")) for e in sink.take()] == [
        ("subscribe", "server"),
        ("presence_join", None),
        ("unsubscribe", "server"),
        ("presence_leave", None),
    ]
    assert [(f["type"], f.get("reason")) for f in peer.take()] == [
        ("subscribed", "server"),
        ("unsubscribed", "server"),
    ]


async def test_a_socket_that_closes_during_the_join_leaves_no_ghost() -> None:
    gateway, sink, _ = setup(presence=HeldPresence)
    conn, _ = await login(gateway)
    sink.take()
    joining = asyncio.ensure_future(send(conn, type="subscribe", channel="news:a", id=1))
    await turns()
    conn.disconnected()
    held_presence(gateway).release.set()
    await joining
    await turns()
    assert await gateway.hub.members("news:a") == []
    assert [(e["type"], e.get("reason")) for e in sink.take()] == [
        ("subscribe", "client"),
        ("unsubscribe", "disconnect"),
        ("disconnect", "connection_closed"),
        ("presence_join", None),
        ("presence_leave", None),
    ], "each unsubscribe after its subscribe"


@given(
    st.lists(st.text(alphabet="ab\u00e9", min_size=0, max_size=40), max_size=30),
    st.integers(min_value=20, max_value=120),
)
def test_bodies_keep_every_event_in_order_each_body_within_the_limit_or_alone(
    events: list[str], limit: int
) -> None:
    runs = list(bodies(events, limit))
    assert [event for run in runs for event in run] == events
    for run in runs:
        size = len(('{"events":[' + ",".join(run) + "]}").encode())
        assert run and (size <= limit or len(run) == 1)
    for run, after in itertools.pairwise(runs):  # cut only where the next event would not fit
        joined = len(('{"events":[' + ",".join([*run, after[0]]) + "]}").encode())
        assert joined > limit
