"""RedisBus against a real Redis: fan-out between replicas, refcounting, and a Redis restart."""

from __future__ import annotations

import asyncio

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.bus import BusOutcomeUnknown, BusUnavailable, InProcessBus
from shared.redis.bus import BusRefused, RedisBus, open_bus
from tests.integration.bus.support import BusMaker, Inbox, PrivateRedis, eventually
from tests.support.delaying_proxy import DelayingProxy

pytestmark = pytest.mark.redis


async def numsub(url: str, topic: str) -> int:
    client = Redis.from_url(url)
    try:
        [(_, count)] = await client.pubsub_numsub(topic)
        return int(count)
    finally:
        await client.aclose()


async def test_message_fans_out_once_to_every_replica(
    redis_url: str, make_bus: BusMaker, topic: str
) -> None:
    publisher, replica_a, replica_b = [await make_bus(redis_url) for _ in range(3)]
    inbox_a, inbox_b = Inbox(), Inbox()
    replica_a.subscribe(topic, inbox_a)
    replica_b.subscribe(topic, inbox_b)
    await replica_a.wait_synced()
    await replica_b.wait_synced()

    await publisher.publish(topic, '{"n":1}')
    await publisher.publish(topic, '{"n":2}')

    for inbox in (inbox_a, inbox_b):
        assert await inbox.next() == (topic, '{"n":1}')
        assert await inbox.next() == (topic, '{"n":2}')


async def test_publisher_own_handlers_receive_through_redis(
    redis_url: str, make_bus: BusMaker, topic: str
) -> None:
    bus = await make_bus(redis_url)
    inbox = Inbox()
    bus.subscribe(topic, inbox)
    await bus.wait_synced()

    await bus.publish(topic, "first")
    await bus.publish(topic, "second")

    assert await inbox.next() == (topic, "first")
    assert await inbox.next() == (topic, "second")


async def test_a_publish_whose_reply_is_lost_is_reported_and_never_sent_twice(
    redis_url: str, make_bus: BusMaker, topic: str, proxy: DelayingProxy
) -> None:
    # Its subscriber connection (through the proxy too) stays silent: no topic, no ping due.
    slow = await make_bus(proxy.url, socket_timeout=0.3, ping_interval=60)
    receiver = await make_bus(redis_url)
    inbox = Inbox()
    receiver.subscribe(topic, inbox)
    await receiver.wait_synced()
    await slow.publish(topic, "warm")  # the publisher's connection is open and pooled
    assert await inbox.next() == (topic, "warm")

    proxy.hold_replies(1)
    with pytest.raises(BusOutcomeUnknown):
        await slow.publish(topic, "once")
    await receiver.publish(topic, "after")
    assert await inbox.next() == (topic, "once")
    assert await inbox.next() == (topic, "after")
    assert proxy.held == 1


async def test_subscription_is_reference_counted(
    redis_url: str, make_bus: BusMaker, topic: str
) -> None:
    bus, publisher = await make_bus(redis_url), await make_bus(redis_url)
    first, second = Inbox(), Inbox()
    drop_first = bus.subscribe(topic, first)
    drop_second = bus.subscribe(topic, second)
    await bus.wait_synced()
    assert await numsub(redis_url, topic) == 1

    drop_first()
    drop_first()
    await bus.wait_synced()
    await publisher.publish(topic, "still subscribed")
    assert await second.next() == (topic, "still subscribed")
    assert first.queue.empty()
    assert await numsub(redis_url, topic) == 1

    drop_second()
    await bus.wait_synced()
    assert await numsub(redis_url, topic) == 0


async def test_a_topic_taken_again_before_redis_confirms_its_drop_is_synced_only_once_retaken(
    redis_url: str, make_bus: BusMaker, topic: str
) -> None:
    """A channel's last local subscriber leaves and another socket subscribes at once (an outside
    probe: a room switch on one replica). The unsubscription had left, unconfirmed, so the topic
    still counted as confirmed and ``wait_synced`` returned while Redis had dropped it: what was
    published until the new subscription arrived never came, after the socket was told
    ``subscribed`` (a gap in mid-stream, 1 toggle in 100 under load)."""
    bus = await make_bus(redis_url)
    drop = bus.subscribe(topic, Inbox())
    await bus.wait_synced()
    blocking = SyncRedis.from_url(redis_url)  # blocks the loop: the bus reads no confirmation
    try:
        drop()
        for _ in range(100):  # the link sends the unsubscription; Redis runs it
            await asyncio.sleep(0)
            if blocking.pubsub_numsub(topic)[0][1] == 0:
                break
        assert blocking.pubsub_numsub(topic)[0][1] == 0
        inbox = Inbox()
        bus.subscribe(topic, inbox)
        await bus.wait_synced()
        blocking.publish(topic, "published once synced")
    finally:
        blocking.close()
    assert await inbox.next() == (topic, "published once synced")


async def test_failing_handler_does_not_stop_delivery(
    redis_url: str, make_bus: BusMaker, topic: str
) -> None:
    bus = await make_bus(redis_url)
    inbox = Inbox()

    def broken(topic: str, payload: str) -> None:
        raise RuntimeError("boom")

    bus.subscribe(topic, broken)
    bus.subscribe(topic, inbox)
    await bus.wait_synced()
    await bus.publish(topic, "m")
    assert await inbox.next() == (topic, "m")


async def test_bus_survives_a_redis_restart(
    private_redis: PrivateRedis, make_bus: BusMaker, topic: str
) -> None:
    publisher, replica = await make_bus(private_redis.url), await make_bus(private_redis.url)
    inbox = Inbox()
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    replica.add_reconnect_listener(on_reconnect)
    replica.subscribe(topic, inbox)
    await replica.wait_synced()
    await publisher.publish(topic, "before")
    assert await inbox.next() == (topic, "before")

    await private_redis.kill()
    with pytest.raises(BusUnavailable):
        await publisher.publish(topic, "while down")
    await eventually(lambda: not replica.connected)
    later_topic = f"{topic}.later"
    replica.subscribe(later_topic, inbox)

    await private_redis.start()
    async with asyncio.timeout(10):
        await reconnected.wait()
        await replica.wait_synced()
    assert replica.connected
    await publisher.publish(topic, "after")
    await publisher.publish(later_topic, "subscribed while down")
    assert await inbox.next() == (topic, "after")
    assert await inbox.next() == (later_topic, "subscribed while down")


async def test_silent_redis_is_detected_by_unanswered_pings(
    private_redis: PrivateRedis, make_bus: BusMaker, topic: str
) -> None:
    replica = await make_bus(private_redis.url, ping_interval=0.2, socket_timeout=0.5)
    inbox = Inbox()
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    replica.add_reconnect_listener(on_reconnect)
    replica.subscribe(topic, inbox)
    await replica.wait_synced()

    private_redis.pause()
    try:
        await eventually(lambda: not replica.connected)
        with pytest.raises(BusUnavailable):
            await replica.publish(topic, "while frozen")
    finally:
        private_redis.resume()

    async with asyncio.timeout(10):
        await reconnected.wait()
        await replica.wait_synced()
    await replica.publish(topic, "thawed")
    assert await inbox.next() == (topic, "thawed")


async def test_start_without_redis_is_degraded_then_recovers(
    private_redis: PrivateRedis, make_bus: BusMaker, topic: str
) -> None:
    await private_redis.kill()
    bus = await make_bus(private_redis.url)
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    bus.add_reconnect_listener(on_reconnect)
    inbox = Inbox()
    bus.subscribe(topic, inbox)
    assert not bus.connected
    with pytest.raises(BusUnavailable):
        await bus.publish(topic, "nobody hears this")

    await private_redis.start()
    async with asyncio.timeout(10):
        await reconnected.wait()
        await bus.wait_synced()
    await bus.publish(topic, "hello")
    assert await inbox.next() == (topic, "hello")


async def test_start_raises_what_reconnecting_cannot_cure(
    redis_server_binary: str, topic: str
) -> None:
    server = PrivateRedis(redis_server_binary, "--rename-command", "SUBSCRIBE", "")
    await server.start()
    bus = RedisBus(server.url)
    bus.subscribe(topic, Inbox())
    try:
        with pytest.raises(BusRefused, match="unknown command"):
            async with asyncio.timeout(10):
                await bus.start()
        assert not bus.connected
    finally:
        await bus.close()
        await server.kill()


async def test_open_bus_picks_the_backend(redis_url: str) -> None:
    for empty in (None, "", "  "):
        embedded = await open_bus(empty)
        assert isinstance(embedded, InProcessBus)
        await embedded.close()
    bus = await open_bus(redis_url)
    try:
        assert isinstance(bus, RedisBus)
        assert bus.connected
    finally:
        await bus.close()


async def test_publish_before_start_is_a_programming_error() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match="start"):
        await bus.publish("t", "p")


@pytest.mark.parametrize("password", ["wrong", None], ids=["wrong password", "none"])
async def test_credentials_redis_refuses_stop_start_up(
    redis_server_binary: str, password: str | None
) -> None:
    """Redis answers and refuses: a configuration error, not an outage. Both services started
    ready with "redis unreachable" and logouts reached no socket (an outside probe); now start()
    raises, and the services stop with one line naming REDIS_PASSWORD."""
    server = PrivateRedis(redis_server_binary, "--requirepass", "right")
    await server.start()
    try:
        url = server.url.replace("redis://", f"redis://:{password}@" if password else "redis://")
        bus = RedisBus(url)
        with pytest.raises(BusRefused, match="check REDIS_URL's user and REDIS_PASSWORD"):
            await bus.start()
        await bus.close()
        good = RedisBus(server.url.replace("redis://", "redis://:right@"))
        await good.start()
        try:
            assert good.connected
        finally:
            await good.close()
    finally:
        await server.kill()


@pytest.mark.parametrize("refusal", ["acl without channels", "database out of range"])
async def test_a_connection_redis_refuses_to_set_up_stops_start_up(
    redis_server_binary: str, refusal: str
) -> None:
    """Redis answers and refuses what the URL asks for: a database it does not have (start-up
    crashed with a traceback, exit 1: an outside probe), or, for a bus started with its topics,
    an ACL user without channel access (what ``ACL SETUSER`` gives by default since Redis 7:
    ``acl-pubsub-default resetchannels``; the link said so after start() had returned, and
    stopped for good). start() raises, and the services stop with one line naming REDIS_URL."""
    server = PrivateRedis(redis_server_binary)
    await server.start()
    try:
        if refusal == "acl without channels":
            admin = Redis.from_url(server.url)
            await admin.execute_command("ACL", "SETUSER", "gw", "on", ">gw-password", "~*", "+@all")
            await admin.aclose()
            url = server.url.replace("redis://", "redis://gw:gw-password@")
        else:
            url = server.url.removesuffix("/0") + "/99"
        bus = RedisBus(url)
        bus.subscribe("revocations", Inbox())
        with pytest.raises(BusRefused, match="REDIS_URL"):
            await bus.start()
        await bus.close()
    finally:
        await server.kill()


async def test_topics_subscribed_after_start_that_redis_refuses_stop_start_up(
    redis_server_binary: str,
) -> None:
    """The services start the bus, then subscribe their topics: an ACL user without channel
    access (Redis 7's default) stopped the link for good after start() had returned, and the
    replica started "degraded", ready, deaf to revocations: a logged-out token authenticated
    (an outside probe). check_subscriptions(), which both services await once subscribed,
    raises; it returns at once for a Redis that is down (an outage, retried)."""
    server = PrivateRedis(redis_server_binary)
    await server.start()
    try:
        admin = Redis.from_url(server.url)
        await admin.execute_command("ACL", "SETUSER", "gw", "on", ">gw-password", "~*", "+@all")
        await admin.aclose()
        bus = RedisBus(server.url.replace("redis://", "redis://gw:gw-password@"))
        await bus.start()
        bus.subscribe("revocations", Inbox())
        with pytest.raises(BusRefused, match="ACL"):
            async with asyncio.timeout(5):
                await bus.check_subscriptions()
        await bus.close()
        allowed = RedisBus(server.url)
        await allowed.start()
        allowed.subscribe("revocations", Inbox())
        await allowed.check_subscriptions()
        assert allowed._synced()
        await allowed.close()
    finally:
        await server.kill()
    down = RedisBus(server.url)
    await down.start()
    down.subscribe("revocations", Inbox())
    async with asyncio.timeout(1):
        await down.check_subscriptions()
    await down.close()


async def test_something_else_answering_on_redis_address_is_an_outage_not_the_end() -> None:
    """An HTTP server where Redis should be: the link stopped for good ('redis bus link
    stopped'), at start-up a crash, and a blip of it stopped the bus until a restart."""

    attempts = []

    async def answer_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(1)
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bus = RedisBus(f"redis://127.0.0.1:{port}/0", backoff_base=0.05, backoff_cap=0.2)
    try:
        await bus.start()  # raised InvalidResponse
        assert not bus.connected
        seen = len(attempts)
        await asyncio.sleep(0.6)
        assert len(attempts) > seen, "still trying, as for a Redis that is down"
    finally:
        await bus.close()
        server.close()
        await server.wait_closed()


async def test_credentials_refused_after_start_are_retried(redis_server_binary: str) -> None:
    """A password changed under a running replica is an outage: the bus retries, and is back
    once Redis takes its credentials again (only the first connection's refusal stops start-up)."""
    server = PrivateRedis(redis_server_binary, "--requirepass", "right")
    await server.start()
    admin = Redis(port=server.port, password="right")
    bus = RedisBus(
        server.url.replace("redis://", "redis://:right@"), backoff_base=0.05, backoff_cap=0.2
    )
    try:
        await bus.start()
        assert bus.connected
        await admin.config_set("requirepass", "rotated")
        for kind in ("pubsub", "normal"):
            await admin.execute_command("CLIENT", "KILL", "TYPE", kind, "SKIPME", "yes")
        await eventually(lambda: not bus.connected)
        await asyncio.sleep(0.5)  # several refused attempts
        async with Redis(port=server.port, password="rotated") as rotated:
            await rotated.config_set("requirepass", "right")
        await eventually(lambda: bus.connected)
    finally:
        await bus.close()
        await admin.aclose()
        await server.kill()
