"""Scale-out scenarios on real processes: 2 auth replicas on PostgreSQL, 3 ws replicas on a
private Redis, nginx with TLS in front. The cluster is shared by the module; a scenario that kills
a process restarts it before it ends."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import jwt
import pytest

from realtime_gateway_client import GatewayClient
from tests.system.cluster import Cluster, running_cluster, wait_for_port
from tests.system.procs import run_cli
from tests.system.wire import (
    PASSWORD,
    channel,
    connected,
    expect_close,
    frame,
    publish_api,
    request,
    sub_of,
    tokens_for,
)

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


async def test_1_messages_cross_replicas(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        alice = await tokens_for(http, cluster.auth_url(0), "s1-alice")
        bob = await tokens_for(http, cluster.auth_url(1), "s1-bob")
        room = channel()
        async with (
            connected(http, cluster.ws_url(1), alice["access_token"]) as sub,
            connected(http, cluster.ws_url(2), bob["access_token"]) as pub,
        ):
            assert (await request(sub, {"type": "subscribe", "channel": room}))[
                "type"
            ] == "subscribed"
            ack = await request(pub, {"type": "publish", "channel": room, "data": {"n": 1}})
            assert ack["type"] == "published"
            message = await frame(sub)
            assert (message["type"], message["data"], message["from"]) == (
                "message",
                {"n": 1},
                sub_of(bob),
            )
            await publish_api(
                http, f"http://127.0.0.1:{cluster.ws_ports[0]}/v1/publish", room, "hi"
            )
            message = await frame(sub)
            assert (message["data"], message["from"]) == ("hi", None)


async def test_2_logout_on_one_replica_closes_the_socket_on_another(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        tokens = await tokens_for(http, cluster.auth_url(0), "s2-carol")
        async with connected(http, cluster.ws_url(1), tokens["access_token"]) as ws:
            started = time.monotonic()
            async with http.post(
                f"{cluster.auth_url(1)}/v1/logout",
                headers={"Authorization": f"Bearer {tokens['access_token']}"},
            ) as resp:
                assert resp.status == 200
            assert (await frame(ws, within=1))["type"] == "revoked"
            assert await expect_close(ws, within=1) == (4403, "session_revoked")
            assert time.monotonic() - started < 1.0
        async with http.ws_connect(cluster.ws_url(2)) as ws:
            await ws.send_json({"type": "auth", "token": tokens["access_token"]})
            refusal = await frame(ws)
            assert (refusal["type"], refusal["code"]) == ("auth_error", "session_revoked")
            assert (await expect_close(ws))[0] == 4403


async def test_3_concurrent_refreshes_across_auth_replicas_have_one_winner(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as http:
        tokens = await tokens_for(http, cluster.auth_url(0), "s3-dave")
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}

        async def refresh(i: int) -> int:
            async with http.post(f"{cluster.auth_url(i % 2)}/v1/token", data=form) as resp:
                return resp.status

        statuses = await asyncio.gather(*(refresh(i) for i in range(20)))
        assert sorted(statuses) == [200] + [400] * 19


async def test_4_key_rotation_reaches_every_ws_replica(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        old = await tokens_for(http, cluster.auth_url(0), "s4-erin")
        out = run_cli("auth_service", ["keys", "rotate"], cluster.auth_env)
        new_kid = out.split()[2]
        assert jwt.get_unverified_header(old["access_token"])["kid"] != new_kid
        deadline = time.monotonic() + 20
        while True:
            new = await tokens_for(http, cluster.auth_url(1), "s4-erin")
            if jwt.get_unverified_header(new["access_token"])["kid"] == new_kid:
                break
            assert time.monotonic() < deadline, "the rotated key never started signing"
            await asyncio.sleep(0.2)
        for index in range(len(cluster.ws)):
            for token in (new["access_token"], old["access_token"]):
                async with connected(http, cluster.ws_url(index), token):
                    pass


async def test_6_redis_restart_resumes_traffic_and_delivers_a_logout_made_while_down(
    cluster: Cluster,
) -> None:
    async with aiohttp.ClientSession() as http:
        victim = await tokens_for(http, cluster.auth_url(0), "s6-frank")
        reader = await tokens_for(http, cluster.auth_url(0), "s6-grace")
        room = channel()
        async with (
            connected(http, cluster.ws_url(0), victim["access_token"]) as doomed,
            connected(http, cluster.ws_url(2), reader["access_token"]) as sub,
            connected(http, cluster.ws_url(1), reader["access_token"]) as pub,
        ):
            assert (await request(sub, {"type": "subscribe", "channel": room}))[
                "type"
            ] == "subscribed"
            cluster.redis.stop()
            async with http.post(
                f"{cluster.auth_url(0)}/v1/logout",
                headers={"Authorization": f"Bearer {victim['access_token']}"},
            ) as resp:
                assert resp.status == 200, "logout works while Redis is down"
            cluster.restart(cluster.redis)
            assert (await frame(doomed, within=15))["type"] == "revoked"
            assert (await expect_close(doomed))[0] == 4403
            received = None
            for n in range(100):
                await request(pub, {"type": "publish", "channel": room, "data": {"n": n}})
                try:
                    received = await frame(sub, within=0.2)
                    break
                except TimeoutError:
                    continue
            assert received is not None and received["type"] == "message", "traffic never resumed"


async def logged_out_then_redis_killed(
    http: aiohttp.ClientSession, cluster: Cluster, username: str, *, logout_on: int
) -> dict[str, Any]:
    """Tokens of a session logged out on auth replica ``logout_on``, after which Redis is
    killed with SIGKILL (left down: the caller restarts it)."""
    assert cluster.redis is not None
    tokens = await tokens_for(http, cluster.auth_url(0), username)
    async with http.post(
        f"{cluster.auth_url(logout_on)}/v1/logout",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    ) as resp:
        assert resp.status == 200
    cluster.redis.send(signal.SIGKILL)
    cluster.redis.wait(10)
    return tokens


async def test_6b_a_redis_that_restarts_empty_gets_the_logouts_written_again(
    cluster: Cluster,
) -> None:
    """Redis keeps nothing on disk: a restart came back without the revocation records, and a
    ws replica started since admitted a logged-out session's access token until it expired (the
    replicas that ran through it still knew). auth_service keeps what is in force and writes it
    again once the ledger's mark is gone."""
    assert cluster.redis is not None
    async with aiohttp.ClientSession() as http:
        tokens = await logged_out_then_redis_killed(http, cluster, "s6b-heidi", logout_on=1)
        cluster.restart(cluster.redis)
        cluster.restart(cluster.ws[2])
        answers = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with http.ws_connect(cluster.ws_url(2)) as ws:
                await ws.send_json({"type": "auth", "token": tokens["access_token"]})
                answers.append(await frame(ws))
            if answers[-1]["type"] == "auth_error":
                break
            await asyncio.sleep(0.2)
        assert (answers[-1]["type"], answers[-1].get("code")) == (
            "auth_error",
            "session_revoked",
        ), answers[-1]
        assert len(answers) <= 15, f"{len(answers)} handshakes before the records were back"


async def test_6c_a_socket_let_in_while_redis_was_down_is_closed_once_the_ledger_is_back(
    cluster: Cluster,
) -> None:
    """A logged-out session's token is let in while Redis is down (fail open, documented), by a
    replica that never heard the logout. When Redis came back empty, the replica's check of its
    sockets read the empty ledger before auth_service wrote the records back, and nothing
    checked them again: the socket stayed open until its token expired."""
    assert cluster.redis is not None
    async with aiohttp.ClientSession() as http:
        tokens = await logged_out_then_redis_killed(http, cluster, "s6c-ivan", logout_on=0)
        cluster.restart(cluster.ws[2])
        try:
            async with connected(http, cluster.ws_url(2), tokens["access_token"]) as ws:
                cluster.redis.start()
                wait_for_port(cluster.redis_port)
                assert (await frame(ws, within=15))["type"] == "revoked"
                assert (await expect_close(ws))[0] == 4403
        finally:
            if not cluster.redis.running:
                cluster.restart(cluster.redis)


async def test_6d_a_logout_whose_replica_dies_while_redis_hangs_still_closes_the_socket(
    cluster: Cluster,
) -> None:
    """An outside probe: a logout committed, its event waited on a Redis that hung, and its
    auth replica was killed meanwhile. The event had not reached the outbox (written only once
    Redis refused it), so nothing ever announced the logout: the socket stayed open and the
    token kept working until it expired. The logout's own transaction now writes it there."""
    assert cluster.redis is not None
    async with aiohttp.ClientSession() as http:
        # The scenarios before restart Redis: the replica must see its bus up again, or it
        # would not try Redis at all (it leaves the events to the outbox while the bus is down).
        deadline = time.monotonic() + 20
        while True:
            async with http.get(f"{cluster.auth_url(0)}/readyz") as resp:
                degraded = (await resp.json()).get("degraded", {})
            if "event_bus" not in degraded:
                break
            assert time.monotonic() < deadline, f"auth's bus never reconnected: {degraded}"
            await asyncio.sleep(0.1)
        tokens = await tokens_for(http, cluster.auth_url(0), "s6d-judy")
        async with connected(http, cluster.ws_url(1), tokens["access_token"]) as ws:
            cluster.redis.send(signal.SIGSTOP)
            try:
                logout = asyncio.ensure_future(
                    http.post(
                        f"{cluster.auth_url(0)}/v1/logout",
                        headers={"Authorization": f"Bearer {tokens['access_token']}"},
                    )
                )
                await asyncio.sleep(1.5)  # committed; its delivery waits on Redis
                assert not logout.done(), "the logout did not wait on Redis"
                cluster.auth[0].send(signal.SIGKILL)
                cluster.auth[0].wait(10)
                with contextlib.suppress(aiohttp.ClientError):
                    (await logout).release()
            finally:
                cluster.redis.send(signal.SIGCONT)
                cluster.restart(cluster.auth[0])
            assert (await frame(ws, within=20))["type"] == "revoked"
            assert (await expect_close(ws))[0] == 4403


async def test_5_killed_ws_replica_clients_reconnect_through_the_lb_and_lose_nothing(
    cluster: Cluster,
) -> None:
    room = channel()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cluster.tls)) as http:
        clients = [
            GatewayClient(
                cluster.lb_auth,
                cluster.lb_ws,
                f"s5-user{i}",
                PASSWORD,
                session=http,
                backoff_base=0.05,
                backoff_cap=0.5,
            )
            for i in range(6)
        ]
        for i in range(len(clients)):
            await tokens_for(http, cluster.lb_auth, f"s5-user{i}")
        inboxes: list[list[Any]] = [[] for _ in clients]
        all_delivered = asyncio.Event()

        async def drain(client: GatewayClient, inbox: list[Any]) -> None:
            async for message in client.messages():
                inbox.append(message["data"])
                if all(sum("seq" in d for d in box) >= 20 for box in inboxes):
                    all_delivered.set()

        for client in clients:
            await client.start()
            await client.subscribe(room)
        readers = [
            asyncio.create_task(drain(c, box)) for c, box in zip(clients, inboxes, strict=True)
        ]
        try:
            cluster.ws[1].send(signal.SIGKILL)
            cluster.ws[1].wait(5)
            publish_url = f"https://localhost:{cluster.lb_port}/v1/publish"
            for probe in range(200):
                await publish_api(http, publish_url, room, {"probe": probe})
                await asyncio.sleep(0.05)
                if all(any("probe" in d for d in box) for box in inboxes) and sum(
                    c.connects for c in clients
                ) > len(clients):
                    break
            assert sum(c.connects for c in clients) > len(clients), (
                "nobody was on the killed replica"
            )
            await asyncio.sleep(0.3)
            for box in inboxes:
                box.clear()
            for seq in range(20):
                await publish_api(http, publish_url, room, {"seq": seq})
            await asyncio.wait_for(all_delivered.wait(), 10)
            for box in inboxes:
                assert [d["seq"] for d in box if "seq" in d] == list(range(20))
        finally:
            for task in readers:
                task.cancel()
            for client in clients:
                await client.close()
            cluster.restart(cluster.ws[1])


async def test_8_sigterm_drains_the_sockets_with_1012_and_exits(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        tokens = await tokens_for(http, cluster.auth_url(0), "s8-heidi")
        try:
            async with connected(http, cluster.ws_url(2), tokens["access_token"]) as ws:
                cluster.ws[2].send(signal.SIGTERM)
                assert await expect_close(ws, within=10) == (1012, "draining")
            assert cluster.ws[2].wait(15) == 0
        finally:
            cluster.restart(cluster.ws[2])


async def test_7_ws_replicas_outlive_every_auth_replica(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        tokens = await tokens_for(http, cluster.auth_url(0), "s7-ivan")
        for proc in cluster.auth:
            proc.stop()
        try:
            deadline = time.monotonic() + 20
            while True:
                async with http.get(f"http://127.0.0.1:{cluster.ws_ports[0]}/readyz") as resp:
                    status, body = resp.status, await resp.json()
                assert status == 200, body
                if "issuer" in body.get("degraded", {}):
                    break
                assert time.monotonic() < deadline, f"issuer outage never reported: {body}"
                await asyncio.sleep(0.2)
            async with connected(http, cluster.ws_url(1), tokens["access_token"]):
                pass
        finally:
            for proc in cluster.auth:
                proc.start()
            for proc in cluster.auth:
                proc.wait_ready()
        async with http.post(
            f"{cluster.auth_url(1)}/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        ) as resp:
            assert resp.status == 200, "refresh tokens issued before the outage still work"
