"""History, recovery and presence on real processes: 3 ws replicas on a private Redis, presence
entries living WS_PRESENCE_TTL = 2 s so that a SIGKILLed replica's users leave within seconds,
join/leave frames debounced over WS_PRESENCE_DEBOUNCE = 0.5 s. A scenario that kills or restarts
a process restarts it before it ends."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.system.cluster import Cluster, running_cluster
from tests.system.wire import (
    API_KEY,
    channel,
    connected,
    frame,
    publish_api,
    request,
    sub_of,
    tokens_for,
)

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.redis]

PRESENCE_TTL = 2.0
DEBOUNCE = 0.5
LATENESS = 0.25
"""What a leave may take beyond WS_PRESENCE_TTL and the debounce window: scheduling of three
processes on a busy host."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path_factory.mktemp("cluster"),
        ws_env={"WS_PRESENCE_TTL": str(PRESENCE_TTL), "WS_PRESENCE_DEBOUNCE": str(DEBOUNCE)},
        auth_replicas=1,
    ) as cluster:
        yield cluster


async def say(ws: aiohttp.ClientWebSocketResponse, room: str, data: Any) -> None:
    reply = await request(ws, {"type": "publish", "channel": room, "data": data})
    assert reply["type"] == "published", reply


async def frames(ws: aiohttp.ClientWebSocketResponse, count: int, within: float) -> list[Any]:
    async with asyncio.timeout(within):
        return [await frame(ws, within) for _ in range(count)]


API = {"Authorization": f"Bearer {API_KEY}"}


def api(cluster: Cluster, index: int) -> str:
    return f"http://127.0.0.1:{cluster.ws_ports[index]}/v1/publish"


async def test_1_a_subscriber_moving_to_another_replica_recovers_exactly_what_it_missed(
    cluster: Cluster,
) -> None:
    room = channel()
    async with aiohttp.ClientSession() as http:
        alice = await tokens_for(http, cluster.auth_url(0), "h1-alice")
        bob = await tokens_for(http, cluster.auth_url(0), "h1-bob")
        async with (
            connected(http, cluster.ws_url(0), bob["access_token"]) as bob_a,
            connected(http, cluster.ws_url(1), bob["access_token"]) as bob_b,
        ):
            async with connected(http, cluster.ws_url(0), alice["access_token"]) as sub:
                subscribed = await request(sub, {"type": "subscribe", "channel": room})
                assert subscribed["position"]["offset"] == 0
                await say(bob_a, room, 0)
                seen = await frame(sub)
                epoch = seen["epoch"]
                assert (seen["offset"], seen["data"]) == (1, 0)
            # Each publish is acknowledged before the next, so offsets follow this order.
            await say(bob_a, room, 1)
            await say(bob_b, room, 2)
            await publish_api(http, api(cluster, 0), room, 3)
            await publish_api(http, api(cluster, 1), room, 4)
            await say(bob_b, room, 5)
            await publish_api(http, api(cluster, 2), room, 6)
            await say(bob_a, room, 7)
            async with connected(http, cluster.ws_url(1), alice["access_token"]) as again:
                since = {"offset": 1, "epoch": epoch}
                reply = await request(again, {"type": "subscribe", "channel": room, "since": since})
                assert (reply["type"], reply["recovered"]) == ("subscribed", True), reply
                assert reply["position"] == {"offset": 8, "epoch": epoch}
                bob_id = sub_of(bob)
                assert [
                    (p["offset"], p["epoch"], p["data"], p["from"]) for p in reply["publications"]
                ] == [
                    (2, epoch, 1, bob_id),
                    (3, epoch, 2, bob_id),
                    (4, epoch, 3, None),
                    (5, epoch, 4, None),
                    (6, epoch, 5, bob_id),
                    (7, epoch, 6, None),
                    (8, epoch, 7, bob_id),
                ]
                await publish_api(http, api(cluster, 0), room, 8)
                await say(bob_b, room, 9)
                live = await frames(again, 2, within=5)
                assert [(m["type"], m["offset"], m["epoch"], m["data"]) for m in live] == [
                    ("message", 9, epoch, 8),
                    ("message", 10, epoch, 9),
                ]


def event(kind: str, room: str, tokens: dict[str, Any], username: str) -> dict[str, Any]:
    return {"type": kind, "channel": room, "user": {"id": sub_of(tokens), "username": username}}


async def test_2_presence_spans_replicas_and_a_killed_replicas_users_leave_within_the_ttl(
    cluster: Cluster,
) -> None:
    """Carol watches on A, Alice has a tab on A and one on C, Bob and Dave (two tabs) are only on
    C; Erin asks from B without subscribing. Then C is SIGKILLed."""
    room = channel()
    names = ["carol", "alice", "bob", "dave", "erin"]
    async with aiohttp.ClientSession() as http:
        users = {n: await tokens_for(http, cluster.auth_url(0), f"p2-{n}") for n in names}
        events: list[dict[str, Any]] = []
        # Carol's join and leave frames, also those that come while she awaits a reply.

        def joined(name: str) -> dict[str, Any]:
            return event("join", room, users[name], f"p2-{name}")

        def left(name: str) -> dict[str, Any]:
            return event("leave", room, users[name], f"p2-{name}")

        def members(*entries: tuple[str, int]) -> list[dict[str, Any]]:
            listed = [
                {"user": {"id": sub_of(users[n]), "username": f"p2-{n}"}, "connections": count}
                for n, count in entries
            ]
            return sorted(listed, key=lambda m: m["user"]["id"])

        async def presence_on(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
            reply = await request(ws, {"type": "presence", "channel": room}, events)
            assert reply["type"] == "presence", reply
            listed: list[dict[str, Any]] = reply["members"]
            return listed

        async with (
            connected(http, cluster.ws_url(0), users["carol"]["access_token"]) as carol,
            connected(http, cluster.ws_url(0), users["alice"]["access_token"]) as alice_a,
            connected(http, cluster.ws_url(2), users["alice"]["access_token"]) as alice_c,
            connected(http, cluster.ws_url(2), users["bob"]["access_token"]) as bob_c,
            connected(http, cluster.ws_url(2), users["dave"]["access_token"]) as dave_c1,
            connected(http, cluster.ws_url(2), users["dave"]["access_token"]) as dave_c2,
            connected(http, cluster.ws_url(1), users["erin"]["access_token"]) as erin_b,
        ):
            watch = {"type": "subscribe", "channel": room, "presence_events": True}
            assert (await request(carol, watch))["type"] == "subscribed"
            # In this order: on C, Alice's entry never expires later than Bob's or Dave's.
            for ws in (alice_a, alice_c, bob_c, dave_c1, dave_c2):
                reply = await request(ws, {"type": "subscribe", "channel": room})
                assert reply["type"] == "subscribed", reply
            everyone = members(("carol", 1), ("alice", 2), ("bob", 1), ("dave", 2))
            for ws in (carol, erin_b, bob_c):
                assert await presence_on(ws) == everyone
            events += await frames(carol, 4 - len(events), within=5)
            assert events == [joined(n) for n in ("carol", "alice", "bob", "dave")]

            events.clear()
            killed_at = time.monotonic()
            cluster.ws[2].send(signal.SIGKILL)
            try:
                cluster.ws[2].wait(5)
                bound = PRESENCE_TTL + DEBOUNCE + LATENESS
                events += await frames(carol, 2, within=bound + 2)
                took = time.monotonic() - killed_at
                assert sorted(events, key=str) == sorted([left("bob"), left("dave")], key=str)
                assert took <= bound, f"the leaves came {took:.2f}s after the kill"
                events.clear()
                survivors = members(("carol", 1), ("alice", 1))
                for ws in (carol, erin_b):
                    assert await presence_on(ws) == survivors
                reply = await request(alice_a, {"type": "unsubscribe", "channel": room})
                assert reply["type"] == "unsubscribed", reply
                assert await frame(carol) == left("alice")
                assert events == []
            finally:
                cluster.restart(cluster.ws[2])


async def wait_for_bus(cluster: Cluster, index: int, connected: bool) -> None:
    """Until replica ``index`` reports its event bus (dis)connected from Redis."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:
            async with http.get(f"http://127.0.0.1:{cluster.ws_ports[index]}/readyz") as resp:
                body = await resp.json()
            if ("event_bus" not in body.get("degraded", {})) == connected:
                return
            await asyncio.sleep(0.05)


async def test_3_a_redis_restart_starts_a_new_epoch_and_recovery_says_so(
    cluster: Cluster,
) -> None:
    room = channel()
    async with aiohttp.ClientSession() as http:
        alice = await tokens_for(http, cluster.auth_url(0), "r3-alice")
        async with connected(http, cluster.ws_url(0), alice["access_token"]) as sub:
            await request(sub, {"type": "subscribe", "channel": room})
            await publish_api(http, api(cluster, 1), room, 0)
            first = await frame(sub)
            epoch = first["epoch"]
            assert first["offset"] == 1
        cluster.redis.stop()
        for index in (0, 1):
            await wait_for_bus(cluster, index, connected=False)
        cluster.restart(cluster.redis)
        for index in (0, 1):
            await wait_for_bus(cluster, index, connected=True)
        async with connected(http, cluster.ws_url(1), alice["access_token"]) as again:
            since = {"offset": 1, "epoch": epoch}
            reply = await request(again, {"type": "subscribe", "channel": room, "since": since})
            assert (reply["recovered"], reply["publications"]) == (False, []), reply
            fresh = reply["position"]
            assert fresh["epoch"] != epoch and fresh["offset"] == 0, reply
            await publish_api(http, api(cluster, 0), room, 1)
            message = await frame(again)
            assert (message["offset"], message["data"]) == (1, 1)
            assert message["epoch"] != epoch


async def test_3b_a_socket_that_missed_a_new_epoch_s_first_messages_is_told(
    cluster: Cluster,
) -> None:
    """An outside probe: Redis restarted empty while publishes went on. The first ones after it
    came back went into the new stream (offsets 1..N) before the replicas' bus listened again,
    and subscribers that stayed connected got offset N+1 of the new epoch as if a stream began
    there: never told, their position moved past what they never got. Every socket now either
    sees each stream whole from offset 1 or is closed 1012 missed_messages to recover."""
    room = channel()
    async with aiohttp.ClientSession() as http:
        alice = await tokens_for(http, cluster.auth_url(0), "r3b-alice")
        async with (
            connected(http, cluster.ws_url(0), alice["access_token"]) as near,
            connected(http, cluster.ws_url(2), alice["access_token"]) as far,
        ):
            for ws in (near, far):
                await request(ws, {"type": "subscribe", "channel": room})
            stop = asyncio.Event()

            async def publish_steadily() -> int:
                accepted, n = 0, 0
                while not stop.is_set():
                    n += 1
                    body = {"channel": room, "data": n}
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.post(api(cluster, 1), json=body, headers=API) as resp:
                            accepted += resp.status == 202
                    await asyncio.sleep(0.01)
                return accepted

            publishing = asyncio.ensure_future(publish_steadily())
            await asyncio.sleep(0.3)
            assert cluster.redis is not None
            cluster.redis.send(signal.SIGKILL)
            cluster.redis.wait(10)
            await asyncio.sleep(0.5)
            cluster.restart(cluster.redis)
            for index in (0, 1, 2):
                await wait_for_bus(cluster, index, connected=True)
            await asyncio.sleep(1.0)
            stop.set()
            assert await publishing > 0
            for ws in (near, far):
                seen: list[tuple[str, int]] = []
                while True:
                    try:
                        message = await ws.receive(timeout=2)
                    except TimeoutError:
                        break  # every message delivered
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        break
                    body = message.json()
                    if body.get("type") == "message" and "offset" in body:
                        seen.append((body["epoch"], body["offset"]))
                    if len(seen) > 1 and seen[-1][0] == seen[-2][0]:
                        assert seen[-1][1] == seen[-2][1] + 1, seen
                    elif len(seen) > 1:
                        assert seen[-1][1] == 1, f"a new epoch from {seen[-1][1]}: {seen}"
                assert seen, "no message reached the socket"
                if ws.close_code is not None:
                    assert (ws.close_code, message.extra) == (1012, "missed_messages")


TOGGLING = 3.0
TOGGLES = 25


async def test_4_three_accounts_toggling_cost_a_watcher_a_bounded_number_of_frames(
    cluster: Cluster,
) -> None:
    """Three accounts subscribe and unsubscribe as fast as they can on two replicas while Carol
    watches on a third: at most one frame per account per window reaches her, and her view ends
    with all three gone."""
    room = channel()
    names = ["t4-a", "t4-b", "t4-c"]
    async with aiohttp.ClientSession() as http:
        carol = await tokens_for(http, cluster.auth_url(0), "t4-carol")
        users = {n: await tokens_for(http, cluster.auth_url(0), n) for n in names}
        ids = {sub_of(users[n]) for n in names}
        frames: list[dict[str, Any]] = []
        all_gone = asyncio.Event()

        async def watch(ws: aiohttp.ClientWebSocketResponse) -> None:
            present: dict[str, bool] = {}
            while True:
                seen = await frame(ws, within=TOGGLING + 10)
                frames.append(seen)
                present[seen["user"]["id"]] = seen["type"] == "join"
                if present.keys() >= ids and not any(present[i] for i in ids):
                    all_gone.set()

        async def toggle(ws: aiohttp.ClientWebSocketResponse) -> None:
            """About 8 toggles a second: within the socket's message rate (20/s)."""
            for _ in range(TOGGLES):
                for kind in ("subscribe", "unsubscribe"):
                    reply = await request(ws, {"type": kind, "channel": room})
                    assert reply["type"] == f"{kind}d", reply
                await asyncio.sleep(TOGGLING / TOGGLES)

        async with (
            connected(http, cluster.ws_url(0), carol["access_token"]) as watcher,
            connected(http, cluster.ws_url(1), users["t4-a"]["access_token"]) as a,
            connected(http, cluster.ws_url(2), users["t4-b"]["access_token"]) as b,
            connected(http, cluster.ws_url(1), users["t4-c"]["access_token"]) as c,
        ):
            watch_events = {"type": "subscribe", "channel": room, "presence_events": True}
            assert (await request(watcher, watch_events))["type"] == "subscribed"
            assert (await frame(watcher))["type"] == "join"  # her own
            watching = asyncio.ensure_future(watch(watcher))
            try:
                started = time.monotonic()
                await asyncio.gather(toggle(a), toggle(b), toggle(c))
                stopped = time.monotonic()
                await asyncio.wait_for(all_gone.wait(), DEBOUNCE + LATENESS + 5)
                took = time.monotonic() - stopped
            finally:
                watching.cancel()
        per_account = (stopped - started) / DEBOUNCE + 2
        assert len(frames) <= 3 * per_account, f"{len(frames)} frames for {3 * TOGGLES} toggles"
        assert took <= DEBOUNCE + LATENESS, f"the last leaves came {took:.2f}s after the last move"
