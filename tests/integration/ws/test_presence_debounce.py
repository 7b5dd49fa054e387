"""Debounced join/leave frames through the real app, embedded and on two replicas over Redis: a
user who leaves and comes back within WS_PRESENCE_DEBOUNCE costs a watcher no frame, and a
toggling user ends with one leave."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, recv
from tests.integration.ws.test_history import request

WINDOW = 0.3


def user(name: str) -> dict[str, str]:
    return {"id": name, "username": name.title()}


async def toggling_watched(watcher_on: Harness, toggler_on: Harness) -> None:
    room = f"chat:{uuid.uuid4().hex[:8]}"
    watch = {"type": "subscribe", "channel": room, "presence_events": True}
    watcher = await watcher_on.login("carol")
    assert (await request(watcher, watch))["type"] == "subscribed"
    assert await recv(watcher) == {"type": "join", "channel": room, "user": user("carol")}
    alice = await toggler_on.login("alice")
    assert (await request(alice, {"type": "subscribe", "channel": room}))["type"] == "subscribed"
    assert await recv(watcher) == {"type": "join", "channel": room, "user": user("alice")}
    for kind in ("unsubscribe", "subscribe") * 3 + ("unsubscribe",):
        reply = await request(alice, {"type": kind, "channel": room})
        assert reply["type"] == f"{kind}d", reply
    # Bob comes after Alice's last move: his join is shown at once, her one leave a window later.
    bob = await toggler_on.login("bob")
    assert (await request(bob, {"type": "subscribe", "channel": room}))["type"] == "subscribed"
    frames: list[dict[str, Any]] = [await recv(watcher), await recv(watcher)]
    assert frames == [
        {"type": "join", "channel": room, "user": user("bob")},
        {"type": "leave", "channel": room, "user": user("alice")},
    ]


async def test_embedded(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(presence_debounce=WINDOW)
    await toggling_watched(gw, gw)


@pytest.mark.redis
async def test_two_replicas_over_redis(make_gateway: MakeGateway, redis_url: str) -> None:
    one = await make_gateway(redis_url=redis_url, presence_debounce=WINDOW)
    two = await make_gateway(redis_url=redis_url, presence_debounce=WINDOW)
    await toggling_watched(one, two)
