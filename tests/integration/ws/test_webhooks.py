"""Webhooks through the real app to a real aiohttp receiver that verifies every signature with
``signatures.verify``, as an app's backend would: the events, at-least-once delivery (5xx then
2xx, an endpoint that hangs), a full queue, and the Redis stream shared by replicas (a dead
consumer's batch taken over, presence events once per user)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis

from realtime_gateway_protocol.signatures import HEADER, verify
from shared.http.serve import DRAIN
from tests.integration.bus.support import PrivateRedis
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, expect_close, expect_open, recv, send, wait_until
from tests.support.poll import poll
from ws_service.app import _close_sockets as close_sockets
from ws_service.appkeys import METRICS
from ws_service.redis.client import open_redis
from ws_service.webhooks import queue as queue_module
from ws_service.webhooks.delivery import Deliverer, Target
from ws_service.webhooks.queue import Batch, RedisQueue

SECRET = "webhook-secret-0123456789"
KEY = {"Authorization": "Bearer test-api-key-0123456789"}


class Receiver:
    """The app's webhook endpoint: answers with ``statuses`` in turn (then 200), or hangs while
    ``hang`` is set; keeps every verified batch."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.hang = False
        self.batches: list[list[dict[str, Any]]] = []
        self.unsigned = 0
        self.released = asyncio.Event()
        self.on_batch: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None
        self.max_body: int | None = None
        """Bodies larger than this are refused (413), as an app's body limit does."""
        self.sizes: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(request.headers.get(HEADER), body, [SECRET]):
            self.unsigned += 1
            return web.Response(status=401)
        self.sizes.append(len(body))
        if self.max_body is not None and len(body) > self.max_body:
            return web.Response(status=413)
        if self.hang:
            await self.released.wait()
        self.batches.append((await request.json())["events"])
        if self.on_batch is not None:
            await self.on_batch(self.batches[-1])
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        return app

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event once (by id), in arrival order, as a deduplicating app keeps them."""
        seen: dict[str, dict[str, Any]] = {}
        for batch in self.batches:
            for event in batch:
                seen.setdefault(event["id"], event)
        return list(seen.values())

    def of(self, user: str, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["user"] == user and (not kinds or e["type"] in kinds)]


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[Receiver, str]:
    target = Receiver()
    server = await aiohttp_server(target.app())
    return target, str(server.make_url("/hooks"))


Hooked = Callable[..., Any]


@pytest.fixture
def hooked(make_gateway: MakeGateway, receiver: tuple[Receiver, str]) -> Hooked:
    async def make(**overrides: Any) -> Harness:
        fields = {
            "webhook_url": receiver[1],
            "webhook_secrets": (SECRET,),
            "webhook_timeout": 0.5,
            "webhook_retry_cap": 0.05,
            **overrides,
        }
        return await make_gateway(**fields)

    return make


def unique() -> str:
    return uuid.uuid4().hex[:12]


def count(gw: Harness, outcome: str, name: str = "ws_webhook_events_total") -> float:
    return gw.app[METRICS].registry.get_sample_value(name, {"outcome": outcome}) or 0.0


async def subscribe(ws: Any, channel: str) -> None:
    await send(ws, {"type": "subscribe", "channel": channel})
    assert (await recv(ws))["type"] == "subscribed"


async def test_a_sockets_life_is_reported_in_signed_batches(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    target, _ = receiver
    gw = await hooked()
    channel = f"chat:{unique()}"
    ws = await gw.login("alice", sid="s1")
    await subscribe(ws, channel)
    await send(ws, {"type": "unsubscribe", "channel": channel})
    await recv(ws)
    await subscribe(ws, channel)
    await ws.close()
    await wait_until(lambda: bool(target.of("alice", "disconnect")))
    kinds = ("connect", "subscribe", "unsubscribe", "disconnect")
    seen = [(e["type"], e.get("channel"), e.get("reason")) for e in target.of("alice", *kinds)]
    assert seen == [
        ("connect", None, None),
        ("subscribe", channel, "client"),
        ("unsubscribe", channel, "client"),
        ("subscribe", channel, "client"),
        ("unsubscribe", channel, "disconnect"),
        ("disconnect", None, "connection_closed"),
    ]
    await wait_until(lambda: target.of("alice")[-1]["type"] == "presence_leave")
    presence = [e["type"] for e in target.of("alice", "presence_join", "presence_leave")]
    assert presence in (
        ["presence_join", "presence_leave"] * 2,
        ["presence_join", "presence_leave"],
    )
    assert all(e["session"] is None for e in target.of("alice", "presence_leave"))
    connect = target.of("alice", "connect")[0]
    assert set(connect) == {"id", "type", "ts", "user", "session"}
    assert connect["session"] == "s1" and isinstance(connect["ts"], int)
    assert target.unsigned == 0
    assert count(gw, "delivered") == count(gw, "queued") == len(target.events)


@pytest.mark.redis
async def test_a_drain_is_reported_as_the_servers_close(
    hooked: Hooked, receiver: tuple[Receiver, str], redis_url: str
) -> None:
    """A drain (SIGTERM), as a shutdown (SIGINT, below), closed the sockets past their connection, whose
    ``disconnect`` event then said the client had left (null, ``connection_closed``): an app
    could not tell a rolling deploy from its users leaving (an outside probe, 20 of 20)."""
    target, _ = receiver
    gw = await hooked(redis_url=redis_url, drain_seconds=0.1)
    drained = await gw.login("nina")
    gw.app[DRAIN].begin()
    await gw.app[DRAIN].run()
    assert (await drained.receive(timeout=5)).data == 1012
    await wait_until(lambda: bool(target.of("nina", "disconnect")))
    [event] = target.of("nina", "disconnect")
    assert (event["code"], event["reason"]) == (1012, "draining")


async def test_a_shutdown_is_reported_as_the_servers_close(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    target, _ = receiver
    gw = await hooked()
    ws = await gw.login("olga")
    await close_sockets(gw.app)
    assert (await ws.receive(timeout=5)).data == 1001
    await wait_until(lambda: bool(target.of("olga", "disconnect")))
    [event] = target.of("olga", "disconnect")
    assert (event["code"], event["reason"]) == (1001, "going_away")


async def test_a_disconnect_by_the_api_is_reported_with_its_close(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    target, _ = receiver
    gw = await hooked()
    ws = await gw.login("bob")
    await gw.client.post("/v1/disconnect", json={"user": "bob"}, headers=KEY)
    await expect_close(ws, 4403, "disconnected")
    await wait_until(lambda: bool(target.of("bob", "disconnect")))
    [event] = target.of("bob", "disconnect")
    assert (event["code"], event["reason"]) == (4403, "disconnected")


async def test_publish_events_only_from_the_namespaces_that_ask(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    target, _ = receiver
    gw = await hooked(webhook_publish=frozenset({"chat"}))
    for channel in ("chat:a", "news:a"):
        await gw.client.post(
            "/v1/publish", json={"channel": channel, "data": {"n": 1}}, headers=KEY
        )
    await wait_until(lambda: bool(target.events))
    [event] = target.events
    assert (event["type"], event["channel"], event["data"], event["user"]) == (
        "publish",
        "chat:a",
        {"n": 1},
        None,
    )


async def test_5xx_then_2xx_delivers_each_event_once_after_dedupe(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    target, _ = receiver
    target.statuses = [500, 503]
    gw = await hooked()
    ws = await gw.login("carol")
    await wait_until(lambda: bool(target.batches))
    await ws.close()
    await wait_until(lambda: count(gw, "delivered") == 2)
    assert len(target.batches) == 4, "two refusals, the 2xx, then the next batch"
    assert target.batches[0] == target.batches[1] == target.batches[2], "the same ids each time"
    assert [e["type"] for e in target.events] == ["connect", "disconnect"]
    assert count(gw, "refused", "ws_webhook_posts_total") == 2


async def test_an_endpoint_that_hangs_times_out_is_retried_and_never_blocks_sockets(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    target, _ = receiver
    target.hang = True
    gw = await hooked(webhook_timeout=0.2)
    ws = await gw.login("dave")
    await wait_until(lambda: count(gw, "timeout", "ws_webhook_posts_total") >= 2)
    await expect_open(ws)
    other = await gw.login("erin")
    await expect_open(other)
    target.hang = False
    target.released.set()
    await wait_until(lambda: bool(target.of("erin", "connect")))
    assert [e["type"] for e in target.of("dave")] == ["connect"]


async def test_a_full_queue_drops_counts_and_never_blocks(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    target, _ = receiver
    target.hang = True
    gw = await hooked(webhook_queue=2)
    sockets = [await gw.login(f"user{n}") for n in range(4)]
    assert count(gw, "dropped") == 2
    for ws in sockets:
        await expect_open(ws)
    target.released.set()
    target.hang = False
    await wait_until(lambda: count(gw, "delivered") == 2)


async def publish(gw: Harness, channel: str, size: int) -> None:
    response = await gw.client.post(
        "/v1/publish", json={"channel": channel, "data": "x" * size}, headers=KEY
    )
    assert response.status == 202, await response.text()


async def test_a_batch_goes_in_bodies_the_app_takes_not_one_it_refuses_for_ever(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    """A batch counted in events only was as large as its events: with ``publish`` events past
    the app's body limit, the app refused it (413) on every attempt and every event behind it
    waited for ever (an outside probe). Bodies are cut at WS_WEBHOOK_BATCH_BYTES."""
    target, _ = receiver
    target.max_body = 8000
    target.hang = True
    gw = await hooked(webhook_publish=frozenset({"chat"}), webhook_batch_bytes=6000)
    await publish(gw, "chat:first", 10)
    await wait_until(lambda: bool(target.sizes))  # the first batch is in flight
    for n in range(10):
        await publish(gw, f"chat:{n}", 1500)
    ws = await gw.login("gina")
    target.hang = False
    target.released.set()
    await wait_until(lambda: bool(target.of("gina", "connect")))
    assert [e["channel"] for e in target.events if e["type"] == "publish"] == [
        "chat:first",
        *(f"chat:{n}" for n in range(10)),
    ]
    assert max(target.sizes) <= 6000 and 413 not in target.statuses
    assert count(gw, "too_large", "ws_webhook_posts_total") == 0
    await ws.close()


async def test_an_event_the_app_refuses_alone_is_dropped_and_the_rest_delivered(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    """A body refused as too large is halved until it fits; an event refused on its own can
    never be delivered, so it is dropped and counted (``undeliverable``), not retried for ever in
    front of the events behind it."""
    target, _ = receiver
    target.max_body = 3000
    target.hang = True
    gw = await hooked(webhook_publish=frozenset({"chat"}))
    await publish(gw, "chat:first", 10)
    await wait_until(lambda: bool(target.sizes))
    await publish(gw, "chat:small-1", 1000)
    await publish(gw, "chat:huge", 600_000)  # past WS_WEBHOOK_BATCH_BYTES too
    for n in range(2, 6):
        await publish(gw, f"chat:small-{n}", 1000)
    target.hang = False
    target.released.set()
    await wait_until(lambda: count(gw, "undeliverable") == 1)
    await wait_until(lambda: count(gw, "delivered") == 6)
    assert [e["channel"] for e in target.events] == [
        "chat:first",
        *(f"chat:small-{n}" for n in range(1, 6)),
    ]
    assert count(gw, "too_large", "ws_webhook_posts_total") >= 2, "halved, then the huge one"


async def test_a_413_for_a_body_the_app_should_take_is_retried_not_dropped(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    """A small event answered 413 (a proxy's limit for a moment, during a deploy) fits
    WS_WEBHOOK_BATCH_BYTES: the app's passing fault, retried; dropping it lost every event of a
    3 s window for good (an outside probe)."""
    target, _ = receiver
    target.statuses = [413, 413, 413]
    gw = await hooked(webhook_publish=frozenset({"chat"}))
    await publish(gw, "chat:small", 100)
    await wait_until(lambda: count(gw, "delivered") == 1)
    assert count(gw, "undeliverable") == 0
    assert count(gw, "too_large", "ws_webhook_posts_total") == 3
    assert [e["channel"] for e in target.events] == ["chat:small"]


class _KeptQueue:
    """One batch to deliver; records when it is claimed again."""

    def __init__(self) -> None:
        self.kept: list[float] = []
        self.acked = asyncio.Event()
        self._batch: Batch | None = Batch(["1-0"], ['{"id":"e1","type":"connect"}'])

    async def take(self, limit: int) -> Batch:
        if self._batch is None:
            await asyncio.Event().wait()
        batch, self._batch = self._batch, None
        assert batch is not None
        return batch

    async def keep(self, batch: Batch) -> None:
        self.kept.append(asyncio.get_running_loop().time())

    async def ack(self, batch: Batch) -> None:
        self.acked.set()

    def put(self, event: str) -> bool:
        raise AssertionError("not used")

    async def close(self) -> None:
        return


async def test_a_batch_in_delivery_is_claimed_again_however_long_its_retries_wait(
    receiver: tuple[Receiver, str],
) -> None:
    """Another replica takes a batch idle WS_WEBHOOK_CLAIM_IDLE: one claim per attempt, after a
    backoff up to WS_WEBHOOK_RETRY_CAP plus a timeout, let it go idle that long while its replica
    lived (30 s cap + 5 s timeout against a 30 s claim idle), and the app got it twice."""
    target, url = receiver
    target.statuses = [500]
    queue = _KeptQueue()
    registry = CollectorRegistry()
    events = Counter("events", "", ["outcome"], registry=registry)
    posts = Counter("posts", "", ["outcome"], registry=registry)
    delivery = Deliverer(
        aiohttp.ClientSession(),
        queue,  # type: ignore[arg-type]
        Target(url, (SECRET,), timeout=1, batch=10, retry_base=0.8, retry_cap=0.8, keep_every=0.1),
        posts=posts,
        delivered=events.labels("delivered"),
        undeliverable=events.labels("undeliverable"),
    )
    task = asyncio.create_task(delivery.run())
    try:
        await asyncio.wait_for(queue.acked.wait(), 5)
        assert len(target.batches) == 2
        gaps = [later - earlier for earlier, later in itertools.pairwise(queue.kept)]
        assert len(queue.kept) >= 4 and max(gaps) < 0.3, queue.kept
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await delivery._session.close()


# -- Redis -----------------------------------------------------------------------------------------


async def test_two_replicas_report_a_presence_transition_once(
    hooked: Hooked, receiver: tuple[Receiver, str], private_redis: PrivateRedis
) -> None:
    target, _ = receiver
    one = await hooked(redis_url=private_redis.url)
    two = await hooked(redis_url=private_redis.url)
    channel = f"chat:{unique()}"
    here, there = await one.login("frank"), await two.login("frank")
    for ws in (here, there):
        await subscribe(ws, channel)
    await wait_until(lambda: len(target.of("frank", "subscribe")) == 2)
    for ws in (here, there):
        await ws.close()
    await wait_until(lambda: len(target.of("frank", "disconnect")) == 2)
    await wait_until(lambda: bool(target.of("frank", "presence_leave")))
    assert len(target.of("frank", "presence_join")) == 1
    assert len(target.of("frank", "presence_leave")) == 1
    assert target.unsigned == 0


async def test_a_dead_consumers_batch_is_taken_over(private_redis: PrivateRedis) -> None:
    redis = open_redis(private_redis.url)
    dropped: list[int] = []
    dead = RedisQueue(redis, "dead", limit=10, claim_idle=0.5, on_dropped=dropped.append)
    alive = RedisQueue(
        redis, "alive", limit=10, claim_idle=0.5, on_dropped=dropped.append, block=0.05
    )
    dead.start()
    try:
        for n in range(3):
            assert dead.put(f'{{"n":{n}}}')
        taken = await dead.take(10)  # and then the replica dies before its ack
        assert taken.events == ['{"n":0}', '{"n":1}', '{"n":2}']
        assert (await alive.take(10)).ids == [], "not idle long enough yet"
        claimed: list[Batch] = []

        async def taken_over() -> bool:
            batch = await alive.take(10)
            claimed.extend([batch] if batch.ids else [])
            return bool(claimed)

        await poll(taken_over)
        again = claimed[0]
        assert again == taken
        await alive.ack(again)
        assert await redis.xlen("{webhooks}:events") == 0
        assert dropped == []
    finally:
        await dead.close()
        await redis.aclose()


async def test_dead_consumers_leave_the_group_and_pending_entries_never_go_with_them(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process joins the group under a name of its own, and every restart left a consumer
    behind for good. Idle ones with nothing pending are pruned, a closing replica leaves, and a
    consumer with entries pending stays whatever its idle time (they would be lost with it)."""
    monkeypatch.setattr(queue_module, "PRUNE_IDLE", 0.0)
    monkeypatch.setattr(queue_module, "PRUNE_EVERY", 0.0)
    redis = open_redis(private_redis.url)

    def queue(name: str) -> RedisQueue:
        return RedisQueue(redis, name, limit=10, claim_idle=30, on_dropped=[].append, block=0.05)

    async def consumers() -> dict[str, int]:
        found: Any = await redis.xinfo_consumers("{webhooks}:events", "delivery")
        return {c["name"]: c["pending"] for c in found}

    async def deliver(queue: RedisQueue) -> None:
        """Join the group (Redis 7.0 adds a consumer when it is first handed an entry)."""
        batch = await queue.take(1)
        assert batch.events
        await queue.ack(batch)

    holder, idle, alive = queue("holder"), queue("idle"), queue("alive")
    holder.start()
    try:
        for n in range(3):
            assert holder.put(f'{{"n":{n}}}')
        await poll(lambda: _length(redis, 3))
        assert (await holder.take(1)).events == ['{"n":0}']  # then it dies, its batch pending
        await deliver(idle)  # and then it dies
        await asyncio.sleep(0.05)
        await deliver(alive)  # prunes first
        assert await consumers() == {"holder": 1, "alive": 0}
        await alive.close()
        assert await consumers() == {"holder": 1}
        alive.start()
        await alive.close()  # leaves again: harmless
    finally:
        await holder.close()
        assert await consumers() == {"holder": 1}, "a replica with entries pending stays"
        await redis.aclose()


async def test_the_stream_refuses_events_beyond_its_limit(private_redis: PrivateRedis) -> None:
    redis = Redis.from_url(private_redis.url, decode_responses=True)
    dropped: list[int] = []
    queue = RedisQueue(redis, "one", limit=3, claim_idle=30, on_dropped=dropped.append)
    queue.start()
    try:
        for n in range(3):
            assert queue.put(str(n))
        await poll(lambda: _length(redis, 3))
        for n in range(2):
            assert queue.put(str(n))
        await wait_until(lambda: sum(dropped) == 2)
        assert await redis.xlen("{webhooks}:events") == 3
    finally:
        await queue.close()
        await redis.aclose()


async def _length(redis: Redis, expected: int) -> bool:
    return int(await redis.xlen("{webhooks}:events")) == expected


async def test_the_app_subscribes_every_new_socket_again_from_its_connect_event(
    hooked: Hooked, receiver: tuple[Receiver, str]
) -> None:
    """The recipe of docs/rest.md: a server subscription lasts as long as its socket, so the app
    makes it again for each `connect` event (its `user` is what /v1/subscribe takes). A socket
    that reconnects is subscribed again, and a socket already subscribed is left alone."""
    target, _ = receiver
    gw = await hooked()
    channel = f"orders:{unique()}"
    answered: list[int] = []

    async def on_events(events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["type"] == "connect":
                resp = await gw.client.post(
                    "/v1/subscribe", json={"user": event["user"], "channel": channel}, headers=KEY
                )
                answered.append((await resp.json())["subscribed"])

    target.on_batch = on_events
    first = await gw.login("carol")
    assert await recv(first) == {"type": "subscribed", "channel": channel, "reason": "server"}
    await first.close()  # the connection drops; its client reconnects
    again = await gw.login("carol")
    assert await recv(again) == {"type": "subscribed", "channel": channel, "reason": "server"}
    other = await gw.login("carol")  # a second tab: its connect subscribes it alone
    assert await recv(other) == {"type": "subscribed", "channel": channel, "reason": "server"}
    await gw.client.post("/v1/publish", json={"channel": channel, "data": "x"}, headers=KEY)
    for ws in (again, other):
        assert (await recv(ws))["data"] == "x"
    await wait_until(lambda: len(answered) == 3)
    assert answered == [1, 1, 1]
