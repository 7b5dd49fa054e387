"""The Python client against the real ws_service and a minimal real login/refresh server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from shared.events import REVOCATIONS_TOPIC, SessionRevoked, encode_event
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.fake_auth import FakeAuth
from tests.integration.ws.harness import Harness, wait_until
from ws_service.appkeys import SOCKETS
from ws_service.client import AuthenticationFailed, GatewayClient, RequestFailed

PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}
KEY = "test-api-key-0123456789"


@dataclass
class Env:
    gw: Harness
    auth: FakeAuth
    auth_url: str
    ws_url: str

    def client(self, user: str, password: str | None = None) -> GatewayClient:
        return GatewayClient(
            self.auth_url,
            self.ws_url,
            user,
            password or PASSWORDS[user],
            backoff_base=0.05,
            backoff_cap=0.2,
        )

    async def close_sockets(self, code: int, reason: str) -> None:
        for ws in tuple(self.gw.app[SOCKETS]):
            await ws.close(code=code, message=reason.encode())


@pytest.fixture
async def env(make_gateway: MakeGateway, aiohttp_server: Any) -> Env:
    gw = await make_gateway()
    auth = FakeAuth(gw.tokens, gw.keyset, PASSWORDS)
    server = await aiohttp_server(auth.app())
    return Env(gw, auth, str(server.make_url("")), str(gw.client.make_url("/ws")))


async def next_message(client: GatewayClient) -> dict[str, Any]:
    async with asyncio.timeout(3):
        async for message in client.messages():
            return message
    raise AssertionError("the message stream ended")


async def test_login_subscribe_publish_roundtrip(env: Env) -> None:
    async with env.client("alice") as alice, env.client("bob") as bob:
        assert alice.user == {"id": "alice", "username": "Alice"}
        await alice.subscribe("chat:general")
        await bob.publish("chat:general", {"text": "hi"})
        message = await next_message(alice)
        assert (message["from"], message["data"]) == ("bob", {"text": "hi"})
        with pytest.raises(RequestFailed) as err:
            await alice.subscribe("user:bob")
        assert err.value.code == "forbidden"


async def test_wrong_password_raises_authentication_failed(env: Env) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        async with env.client("alice", "wrong"):
            pass
    assert err.value.code == "invalid_grant"


async def test_renews_in_band_on_token_expiring_keeping_one_socket(env: Env) -> None:
    env.auth.ttl = 2
    async with env.client("alice") as alice:
        await wait_until(lambda: alice.refreshes >= 2, wait=6)
        await alice.subscribe("chat:general")
        assert alice.connects == 1
        assert env.auth.refreshes == alice.refreshes


async def test_concurrent_refreshes_share_one_request(env: Env) -> None:
    async with env.client("alice") as alice:
        pairs = await asyncio.gather(*(alice.refresh() for _ in range(5)))
        assert env.auth.refreshes == 1
        assert len({pair.refresh_token for pair in pairs}) == 1
        await alice.refresh()
        assert env.auth.refreshes == 2


@pytest.mark.parametrize(("code", "reason"), [(1001, "going_away"), (1011, "internal_error")])
async def test_reconnects_and_resubscribes_after_going_away(
    env: Env, code: int, reason: str
) -> None:
    async with env.client("alice") as alice:
        await alice.subscribe("chat:general")
        await env.close_sockets(code, reason)
        await wait_until(lambda: alice.connects == 2)
        await alice.publish("chat:general", "after")
        message = await next_message(alice)
        assert message["data"] == "after"
        assert alice.refreshes == 0


async def test_token_expired_close_refreshes_then_reconnects(env: Env) -> None:
    async with env.client("alice") as alice:
        await env.close_sockets(4401, "token_expired")
        await wait_until(lambda: alice.connects == 2)
        assert alice.refreshes == 1


@pytest.mark.parametrize(("code", "reason"), [(4401, "invalid_token"), (4403, "subject_mismatch")])
async def test_fatal_close_codes_stop_with_a_clear_exception(
    env: Env, code: int, reason: str
) -> None:
    async with env.client("alice") as alice:
        await env.close_sockets(code, reason)
        with pytest.raises(AuthenticationFailed) as err:
            await alice.wait_closed()
        assert (err.value.code, err.value.close_code) == (reason, code)
        with pytest.raises(AuthenticationFailed):
            await alice.publish("chat:general", 1)


async def test_logout_elsewhere_stops_the_client(env: Env) -> None:
    async with env.client("alice") as alice:
        event = SessionRevoked(sid="sid-alice", sub="alice", until=int(time.time()) + 60)
        await env.gw.bus.publish(REVOCATIONS_TOPIC, encode_event(event))
        with pytest.raises(AuthenticationFailed) as err:
            async with asyncio.timeout(3):
                async for _ in alice.messages():
                    pass
        assert (err.value.code, err.value.close_code) == ("session_revoked", 4403)


async def test_chat_cli_publishes_typed_lines_and_prints_messages(env: Env) -> None:
    from ws_service.chat import chat

    printed: list[str] = []
    typed: asyncio.Queue[str | None] = asyncio.Queue()

    async def lines() -> Any:
        while (line := await typed.get()) is not None:
            yield line

    async with env.client("alice") as alice, env.client("bob") as bob:
        alice_chat = asyncio.ensure_future(chat(alice, "chat:general", lines(), printed.append))
        bob_printed: list[str] = []
        bob_chat = asyncio.ensure_future(chat(bob, "chat:general", _never(), bob_printed.append))
        await wait_until(lambda: "chat:general" in bob.channels)
        await typed.put("hello bob\n")
        await wait_until(lambda: bool(bob_printed) and bool(printed))
        assert bob_printed == ["[chat:general] alice: hello bob"]
        response = await env.gw.client.post(
            "/v1/publish",
            json={"channel": "user:alice", "data": {"text": "direct"}},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert response.status == 202
        await wait_until(lambda: len(printed) == 2)
        assert printed == ["[chat:general] alice: hello bob", "[user:alice] server: direct"]
        await typed.put(None)
        await asyncio.wait_for(alice_chat, 3)
        bob_chat.cancel()


async def _never() -> Any:
    await asyncio.Event().wait()
    yield ""
