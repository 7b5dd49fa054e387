"""`keys revoke` against a running auth_service: the announcement (taken from the outbox, as
without Redis) makes it drop the key at once, long before its reload timer; refresh goes on with
the key made to replace it, and nothing the withdrawn key signed is trusted any more."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import jwt
import pytest
from aiohttp import web

from auth_service import app as auth_app
from auth_service.__main__ import keys_command
from auth_service.app import create_app, maintenance_interval
from auth_service.appkeys import KEYRING
from auth_service.settings import Settings
from realtime_gateway_protocol.key_events import KEYS_TOPIC, KeyWithdrawn, decode_key_event
from shared.bus import InProcessBus, ReconnectListener, Unsubscribe
from tests.integration.auth.conftest import AuthClient, MakeClient, login, refresh, register


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_revoke_drops_the_key_from_a_running_service_at_once(
    make_client: MakeClient,
    make_settings: Callable[..., Settings],
    bus: InProcessBus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    announced: list[str] = []
    bus.subscribe(KEYS_TOPIC, lambda topic, payload: announced.append(payload))
    client = await make_client()
    await register(client)
    tokens = await login(client)
    leaked = kid_of(tokens["access_token"])
    settings = make_settings()
    assert maintenance_interval(settings) == 30, "only the announcement can explain a quick drop"

    started = time.monotonic()
    assert await keys_command(settings, "revoke", argparse.Namespace(kid=leaked)) == 0
    out = capsys.readouterr().out
    assert f"key {leaked} withdrawn" in out
    assert "a running service took the announcement" in out, out
    assert [decode_key_event(p) for p in announced] == [KeyWithdrawn(leaked)]

    async def published_kids() -> list[str]:
        return [
            key["kid"]
            for key in (await (await client.get("/.well-known/jwks.json")).json())["keys"]
        ]

    while leaked in (kids := await published_kids()):
        assert time.monotonic() - started < 5, "the running service kept the withdrawn key"
        await asyncio.sleep(0.05)
    (new_kid,) = kids
    assert f"new key {new_kid} (generation 2) signs from now" in out

    status, renewed = await refresh(client, tokens["refresh_token"])
    assert status == 200, renewed
    assert kid_of(renewed["access_token"]) == new_kid
    resp = await client.post(
        "/v1/ws-ticket", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 401, "a token of the withdrawn key buys no ticket"
    resp = await client.post(
        "/v1/ws-ticket", headers={"Authorization": f"Bearer {renewed['access_token']}"}
    )
    assert resp.status == 200


async def test_a_malformed_key_announcement_is_logged_and_ignored(
    make_client: MakeClient, bus: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    before = await (await client.get("/.well-known/jwks.json")).json()
    with caplog.at_level(logging.WARNING, logger="auth_service.app"):
        for payload in ("not json", '{"type":"key_withdrawn","kid":""}', '{"type":"key_lost"}'):
            await bus.publish(KEYS_TOPIC, payload)
    warnings = [r.getMessage() for r in caplog.records if r.name == "auth_service.app"]
    assert warnings == ["ignoring a malformed key announcement"] * 3
    assert await (await client.get("/.well-known/jwks.json")).json() == before


async def test_a_ticket_is_signed_by_the_key_of_its_access_token(
    client: AuthClient,
) -> None:
    """A gateway knows a socket by the key of its credential: a ticket signed by the current key
    for a token of a key that leaked would keep the socket out of reach of the withdrawal."""
    await register(client)
    tokens = await login(client)
    old = kid_of(tokens["access_token"])
    new = await client.app[KEYRING].rotate(time.time(), immediate=True)

    async def ticket_kid(access_token: str) -> str:
        resp = await client.post(
            "/v1/ws-ticket", headers={"Authorization": f"Bearer {access_token}"}
        )
        assert resp.status == 200, await resp.text()
        return kid_of((await resp.json())["ticket"])

    assert await ticket_kid(tokens["access_token"]) == old
    _, renewed = await refresh(client, tokens["refresh_token"])
    assert await ticket_kid(renewed["access_token"]) == new.kid


class DeafBus(InProcessBus):
    """A bus cut off from Redis: what is published meanwhile reaches nobody (Redis pub/sub keeps
    nothing for a subscriber not listening), until ``reconnect`` runs the reconnect listeners."""

    def __init__(self) -> None:
        super().__init__()
        self.deaf = False
        self._listeners: list[ReconnectListener] = []

    @property
    def connected(self) -> bool:
        return not self.deaf

    async def publish(self, topic: str, payload: str) -> None:
        if not self.deaf:
            await super().publish(topic, payload)

    def add_reconnect_listener(self, listener: ReconnectListener) -> Unsubscribe:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def reconnect(self) -> None:
        self.deaf = False
        for listener in list(self._listeners):
            await listener()


async def test_a_withdrawal_announced_while_cut_off_is_acted_on_at_the_reconnection(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outbox sends a withdrawal made while Redis was down as soon as Redis is back, which
    may be before this replica listens again: it then signed with the withdrawn key, and its key
    set listed it, until its reload timer (30 s; an outside probe with two replicas). The reloads
    while the bus is down (the test below) are put off here."""
    monkeypatch.setattr(auth_app, "BUS_DOWN_RELOAD", 3600.0)
    bus = DeafBus()
    settings = make_settings()
    client = await aiohttp_client(create_app(settings, bus=bus))
    await register(client)
    leaked = kid_of((await login(client))["access_token"])
    bus.deaf = True
    assert await keys_command(settings, "revoke", argparse.Namespace(kid=leaked)) == 0
    await asyncio.sleep(1.5)  # the outbox has sent it, to nobody
    assert kid_of((await login(client))["access_token"]) == leaked, "the announcement was lost"
    await bus.reconnect()
    assert kid_of((await login(client))["access_token"]) != leaked
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert leaked not in [key["kid"] for key in jwks["keys"]]


async def test_a_replica_cut_off_from_the_bus_drops_a_withdrawn_key_within_seconds(
    aiohttp_client: Callable[[web.Application], Awaitable[AuthClient]],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While Redis is down no announcement arrives, and the replica signed with a withdrawn key
    until its 30 s maintenance (an outside probe saw 5-20 s); it now reloads the ring every
    ``BUS_DOWN_RELOAD`` seconds while its bus is down, and only then."""
    monkeypatch.setattr(auth_app, "BUS_DOWN_RELOAD", 0.1)
    bus = DeafBus()
    settings = make_settings()
    assert maintenance_interval(settings) == 30
    client = await aiohttp_client(create_app(settings, bus=bus))
    await register(client)
    first = kid_of((await login(client))["access_token"])
    assert await keys_command(settings, "revoke", argparse.Namespace(kid=first)) == 0
    assert kid_of((await login(client))["access_token"]) != first, "heard on a connected bus"
    second = kid_of((await login(client))["access_token"])

    bus.deaf = True
    assert await keys_command(settings, "revoke", argparse.Namespace(kid=second)) == 0
    started = time.monotonic()
    while kid_of((await login(client))["access_token"]) == second:
        assert time.monotonic() - started < 3, "signed with the withdrawn key while cut off"
        await asyncio.sleep(0.1)
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert second not in [key["kid"] for key in jwks["keys"]]
