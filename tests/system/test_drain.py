"""Draining ws replicas, as real processes: SIGTERM to a replica holding 2,000 sockets makes it
unready, stops it listening, and closes its sockets with 1012 ``draining`` spread over
``WS_DRAIN_SECONDS``; the clients move to the other replica at a rate bounded by the window, and
every one of them recovers its channel without losing a message. Then a rolling restart of three
replicas, one at a time, with the Python client behind the load balancer: no message of a
history namespace is lost."""

from __future__ import annotations

import asyncio
import collections
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from realtime_gateway_client import GatewayClient
from realtime_gateway_protocol.frames import BEARER_PREFIX, SUBPROTOCOL
from tests.system.cluster import running_cluster
from tests.system.wire import PASSWORD, publish_api, tokens_for

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.redis]

SOCKETS = 2000
CHANNELS = 20
WINDOW = 10.0
CLIENT_JITTER = 0.5
"""The clients' first retry after a close: uniform in [0, backoff base), 0.5 s for both."""


def handshake_bound() -> int:
    """Handshakes the other replica may see in any one second. The drain closes at most
    ``t * SOCKETS / WINDOW + 1`` sockets in any ``t`` seconds; each client reconnects within
    ``CLIENT_JITTER`` of its close, so one second of handshakes comes from closes within
    ``1 + CLIENT_JITTER`` seconds. Doubled for a loaded machine's timers, it stays far below the
    cliff a drain-less stop makes (all 2,000 at once)."""
    return 2 * math.ceil((1 + CLIENT_JITTER) * SOCKETS / WINDOW + 1)


class Member:
    """One socket's life across the drain: its channel's offsets, live or recovered."""

    def __init__(self, channel: str, subscribed: asyncio.Semaphore) -> None:
        self.channel = channel
        self.subscribed = subscribed
        """Released once, when the socket first subscribed."""
        self.offsets: list[int] = []
        self.since: dict[str, Any] | None = None
        self.recoveries: list[bool] = []
        self.marker: int | None = None

    def saw(self, frame: dict[str, Any]) -> None:
        self.offsets.append(frame["offset"])
        self.since = {"offset": frame["offset"], "epoch": frame["epoch"]}
        if frame["data"] == "marker":
            self.marker = frame["offset"]


async def bearer_socket(
    http: aiohttp.ClientSession, url: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url, protocols=(SUBPROTOCOL, BEARER_PREFIX + token))
    welcome = await ws.receive_json(timeout=10)
    assert welcome["type"] == "auth_success", welcome
    return ws


async def live(
    http: aiohttp.ClientSession,
    urls: list[str],
    token: str,
    member: Member,
    opened: asyncio.Semaphore,
    handshakes: list[float],
) -> None:
    """Subscribe (with ``since`` after a move), read until the marker or a close; on a
    ``draining`` close, wait the client's jitter and go to the other replica."""
    for hop, url in enumerate(urls):
        async with opened:
            ws = await bearer_socket(http, url, token)
        if hop:
            handshakes.append(time.monotonic())
        request: dict[str, Any] = {"type": "subscribe", "channel": member.channel, "id": 1}
        if member.since is not None:
            request["since"] = member.since
        await ws.send_json(request)
        async for message in ws:
            frame = message.json()
            if frame.get("id") == 1:
                if member.since is not None:
                    member.recoveries.append(frame["recovered"])
                for publication in frame.get("publications", []):
                    member.saw(publication)
                if member.since is None:
                    member.since = frame["position"]
                    member.subscribed.release()
            elif frame["type"] == "message":
                member.saw(frame)
            if member.marker is not None:
                await ws.close()
                return
        assert ws.close_code == 1012, ws.close_code
        await asyncio.sleep(random.random() * CLIENT_JITTER)
    raise AssertionError("closed on the last replica too")


def test_a_drained_replica_moves_its_sockets_as_a_ramp_and_loses_nothing(
    tmp_path: Path,
) -> None:
    env = {
        "WS_DRAIN_SECONDS": str(WINDOW),
        "WS_MAX_CONNECTIONS_PER_USER": str(2 * SOCKETS),
        "WS_RATE_PER_SECOND": "200",  # the publisher's 50 a second
        "WS_HISTORY": "chat=1000/300",
    }
    with running_cluster(tmp_path, ws_env=env, auth_replicas=1, ws_replicas=2) as cluster:
        try:
            asyncio.run(_drain_scenario(cluster))
        except BaseException:
            print(cluster.logs())
            raise


async def _drain_scenario(cluster: Any) -> None:
    urls = [cluster.ws_url(0), cluster.ws_url(1)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        token = (await tokens_for(http, cluster.auth_url(0), "drain-many"))["access_token"]
        subscribed = asyncio.Semaphore(0)
        members = [Member(f"chat:drain-{n % CHANNELS}", subscribed) for n in range(SOCKETS)]
        handshakes: list[float] = []
        opened = asyncio.Semaphore(32)
        tasks = [
            asyncio.create_task(live(http, urls, token, m, opened, handshakes)) for m in members
        ]
        publisher = await bearer_socket(http, urls[1], token)

        async def publish(data: Any, channel: str) -> None:
            await publisher.send_json(
                {"type": "publish", "channel": channel, "data": data, "id": 2}
            )
            reply = await publisher.receive_json(timeout=10)
            assert reply == {"type": "published", "channel": channel, "id": 2}, reply

        for _ in members:  # every socket subscribed on the first replica
            await subscribed.acquire()

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, force_close=False)
        ) as probe:
            ready = f"http://127.0.0.1:{cluster.ws_ports[0]}/readyz"
            async with probe.get(ready) as resp:
                assert resp.status == 200
            started = time.monotonic()
            cluster.ws[0].send(signal.SIGTERM)
            async with asyncio.timeout(10):
                while True:  # on the same keep-alive connection: readiness goes false first
                    async with probe.get(ready) as resp:
                        if resp.status == 503:
                            assert "draining" in (await resp.json())["checks"]
                            break
                    await asyncio.sleep(0.02)
        with pytest.raises(OSError):  # and the replica no longer accepts connections
            await asyncio.open_connection("127.0.0.1", cluster.ws_ports[0])

        n = 0
        while cluster.ws[0].running:
            await publish({"n": n}, f"chat:drain-{n % CHANNELS}")
            n += 1
            await asyncio.sleep(0.02)
        drained_in = time.monotonic() - started
        assert cluster.ws[0].wait(5) == 0
        for k in range(CHANNELS):
            await publish("marker", f"chat:drain-{k}")
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)

    per_second = collections.Counter(int(t - started) for t in handshakes)
    assert len(handshakes) == SOCKETS, "every socket moved to the other replica"
    assert max(per_second.values()) <= handshake_bound(), sorted(per_second.items())
    for member in members:
        assert member.recoveries and all(member.recoveries), "a recovery failed"
        first, last = member.offsets[0], member.marker
        assert sorted(member.offsets) == list(range(first, last + 1)), "lost or repeated"
    print(
        f"\n{SOCKETS} sockets drained over {WINDOW:.0f} s; the replica exited after "
        f"{drained_in:.1f} s; the other's handshakes per second peaked at "
        f"{max(per_second.values())} (bound {handshake_bound()}, a cliff would be {SOCKETS}); "
        f"{n} messages published meanwhile, all recovered"
    )


def test_a_rolling_restart_loses_no_message_in_a_history_namespace(tmp_path: Path) -> None:
    env = {"WS_DRAIN_SECONDS": "2"}
    with running_cluster(tmp_path, ws_env=env, auth_replicas=1, ws_replicas=3) as cluster:
        asyncio.run(_rolling_scenario(cluster))


async def _rolling_scenario(cluster: Any) -> None:
    room = "chat:rolling"
    connector = aiohttp.TCPConnector(ssl=cluster.tls)
    async with aiohttp.ClientSession(connector=connector) as http:
        clients = []
        for i in range(6):
            await tokens_for(http, cluster.lb_auth, f"roll-{i}")
            client = GatewayClient(
                cluster.lb_auth, cluster.lb_ws, f"roll-{i}", PASSWORD, session=http
            )
            await client.start()
            await client.subscribe(room)
            clients.append(client)
        inboxes: list[list[Any]] = [[] for _ in clients]

        async def read(client: GatewayClient, inbox: list[Any]) -> None:
            async for message in client.messages():
                inbox.append(message["data"])
                if message["data"] == "end":
                    return

        readers = [
            asyncio.create_task(read(c, box)) for c, box in zip(clients, inboxes, strict=True)
        ]
        published: list[int] = []
        refused: list[int] = []
        rolling = True

        publish_url = f"https://localhost:{cluster.lb_port}/v1/publish"

        async def publish() -> None:
            for seq in range(100_000):
                if not rolling:
                    return
                try:
                    await publish_api(http, publish_url, room, seq)
                    published.append(seq)
                except (AssertionError, aiohttp.ClientError):
                    refused.append(seq)  # not published (a 502 while replicas restart)
                await asyncio.sleep(0.05)

        publisher = asyncio.create_task(publish())
        for proc in cluster.ws:
            proc.send(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
            proc.start()
            await asyncio.to_thread(proc.wait_ready)
        await asyncio.sleep(1)
        rolling = False
        await publisher
        async with asyncio.timeout(30):
            while True:  # nginx may still count the replicas it found refusing as down
                try:
                    await publish_api(http, publish_url, room, "end")
                    break
                except (AssertionError, aiohttp.ClientError):
                    await asyncio.sleep(0.5)
        async with asyncio.timeout(30):
            await asyncio.gather(*readers)
        moved = sum(client.connects - 1 for client in clients)
        for client in clients:
            await client.close()
    assert moved >= len(clients), "every client moved at least once"
    for inbox in inboxes:
        assert set(published) <= set(inbox), sorted(set(published) - set(inbox))
    print(
        f"\nrolled 3 replicas; {len(published)} messages published, none lost; {len(refused)} "
        f"refused by the balancer meanwhile; {moved} reconnections"
    )
