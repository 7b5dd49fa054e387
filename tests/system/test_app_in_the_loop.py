"""The app in the loop on real processes: the server API acting on a socket of another replica,
and webhooks that survive the SIGKILL of the replica that was delivering them.

3 ws replicas on a private Redis; the app's webhook endpoint is an aiohttp server on its own
thread (so it outlives each test's event loop) that verifies every signature."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from realtime_gateway_protocol.signatures import HEADER, verify
from tests.services import free_port
from tests.support.poll import poll
from tests.system.cluster import API_KEY, Cluster, running_cluster
from tests.system.wire import channel, connected, expect_close, frame, request, sub_of, tokens_for

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.redis]

SECRET = "system-webhook-secret-0123456789"
KEY = {"Authorization": f"Bearer {API_KEY}"}


class Receiver:
    """The app's webhook endpoint on a thread of its own; answers ``status`` (503 refuses)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.events: dict[str, dict[str, Any]] = {}
        self.unsigned = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            if not verify(request.headers.get(HEADER), body, [SECRET]):
                self.unsigned += 1
                return web.Response(status=401)
            if self.status == 200:
                for event in (await request.json())["events"]:
                    self.events.setdefault(event["id"], event)
            return web.Response(status=self.status)

    def of(self, user: str, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events.values() if e["user"] == user and e["type"] == kind]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    target = Receiver()
    target.start()
    yield target
    target.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Cluster]:
    env = {
        "WS_WEBHOOK_URL": receiver.url,
        "WS_WEBHOOK_SECRET": SECRET,
        "WS_WEBHOOK_BATCH": "1",
        "WS_WEBHOOK_CLAIM_IDLE": "1",
        "WS_WEBHOOK_RETRY_CAP": "0.2",
        "WS_PRESENCE_TTL": "3",
    }
    with running_cluster(
        tmp_path_factory.mktemp("loop"), ws_env=env, auth_replicas=1, ws_replicas=3
    ) as cluster:
        yield cluster


async def api(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body, headers=KEY) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def test_disconnect_and_unsubscribe_reach_a_socket_on_another_replica(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as http:
        tokens = await tokens_for(http, cluster.auth_url(0), "loop-alice")
        user, room = sub_of(tokens), channel()
        api_base = f"http://127.0.0.1:{cluster.ws_ports[0]}"
        async with connected(http, cluster.ws_url(2), tokens["access_token"]) as ws:
            assert (await request(ws, {"type": "subscribe", "channel": room}))["type"] == (
                "subscribed"
            )
            answer = await api(http, f"{api_base}/v1/unsubscribe", {"user": user, "channel": room})
            assert (answer["unsubscribed"], answer["complete"]) == (1, True)
            assert await frame(ws) == {"type": "unsubscribed", "channel": room, "reason": "server"}
            answer = await api(http, f"{api_base}/v1/disconnect", {"user": user})
            assert (answer["disconnected"], answer["complete"]) == (1, True)
            assert await expect_close(ws) == (4403, "disconnected")


async def test_webhook_events_queued_on_a_killed_replica_are_delivered_by_another(
    cluster: Cluster, receiver: Receiver
) -> None:
    """Every replica holds one refused batch (WS_WEBHOOK_BATCH=1); the first is SIGKILLed with
    its batch unacknowledged; once the app answers again, the others take it over."""
    receiver.status = 503
    redis = Redis.from_url(cluster.redis_url, decode_responses=True)
    killed = cluster.ws[0]
    try:
        async with aiohttp.ClientSession() as http:
            users = []
            for n in range(6):
                tokens = await tokens_for(http, cluster.auth_url(0), f"loop-kill-{n}")
                users.append(sub_of(tokens))
                async with connected(http, cluster.ws_url(n % 3), tokens["access_token"]):
                    pass

        async def all_queued_and_every_replica_holds_a_batch() -> bool:
            queued = {
                (event["user"], event["type"])
                for _, fields in await redis.xrange("{webhooks}:events")
                for event in [json.loads(fields["e"])]
            }
            wanted = {(user, kind) for user in users for kind in ("connect", "disconnect")}
            consumers = await redis.xinfo_consumers("{webhooks}:events", "delivery")
            return wanted <= queued and sum(1 for c in consumers if c["pending"]) >= 3

        await poll(all_queued_and_every_replica_holds_a_batch, within=10)
        killed.send(signal.SIGKILL)
        killed.wait(5)
        receiver.status = 200

        def delivered() -> bool:
            return all(receiver.of(u, "disconnect") and receiver.of(u, "connect") for u in users)

        await poll(_async(delivered), within=20)
        await poll(_async_redis(redis), within=10)
        assert receiver.unsigned == 0
    finally:
        receiver.status = 200
        await redis.aclose()
        cluster.restart(killed)


def _async_redis(redis: Redis) -> Any:
    async def empty() -> bool:
        return int(await redis.xlen("{webhooks}:events")) == 0

    return empty


def _async(check: Any) -> Any:
    async def wrapped() -> bool:
        return bool(check())

    return wrapped
