"""auth_service on Redis: revocations are recorded in the ledger and announced on the bus; while
Redis is down they wait in the outbox, and both happen once it is back."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from aiohttp import web

from auth_service.app import create_app
from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import REVOCATIONS_TOPIC, SessionRevoked, decode_event
from shared.redis.bus import RedisBus
from shared.redis.ledger import RedisRevocationLedger
from tests.integration.auth.conftest import AuthClient, login, register
from tests.integration.bus.support import Inbox, PrivateRedis


async def test_logout_reaches_ledger_and_bus_even_across_a_redis_outage(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Any],
    private_redis: PrivateRedis,
) -> None:
    settings = dataclasses.replace(make_settings(), redis_url=private_redis.url)
    client = await aiohttp_client(create_app(settings))
    listener = RedisBus(private_redis.url, backoff_base=0.05, backoff_cap=0.2)
    inbox = Inbox()
    listener.subscribe(REVOCATIONS_TOPIC, inbox)
    await listener.start()
    await listener.wait_synced()
    ledger = RedisRevocationLedger(private_redis.url)
    try:
        await register(client)
        first, second = await login(client), await login(client)
        await client.post(
            "/v1/logout", headers={"Authorization": f"Bearer {first['access_token']}"}
        )
        _, payload = await inbox.next()
        claims = jwt.decode(first["access_token"], options={"verify_signature": False})
        assert decode_event(payload) == SessionRevoked(
            sid=claims["sid"], sub=claims["sub"], until=decode_event(payload).until
        )
        assert await ledger.revoked([TokenRef(claims["sid"], claims["sub"], claims["iat"])]) == [
            True
        ]

        await private_redis.kill()
        resp = await client.post(
            "/v1/logout", headers={"Authorization": f"Bearer {second['access_token']}"}
        )
        assert resp.status == 200
        ready = await (await client.get("/readyz")).json()
        assert ready["ready"] is True and "event_bus" in ready["degraded"]

        await private_redis.start()
        await listener.wait_synced()
        _, payload = await asyncio.wait_for(inbox.next(), 10)
        claims = jwt.decode(second["access_token"], options={"verify_signature": False})
        event = decode_event(payload)
        assert isinstance(event, SessionRevoked) and event.sid == claims["sid"]
        assert event.until >= claims["exp"] and event.until <= time.time() + 301
        assert await ledger.revoked([TokenRef(claims["sid"], claims["sub"], claims["iat"])]) == [
            True
        ]
    finally:
        await ledger.close()
        await listener.close()
