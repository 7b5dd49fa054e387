"""Authenticating at the upgrade: the realtime.v1 subprotocol, the bearer subprotocol and tickets,
on the real two-service stack."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from typing import Any

import aiohttp
import jwt
import pytest
from multidict import CIMultiDict

from auth_service.appkeys import KEYRING
from realtime_gateway_protocol.tickets import TICKET_TTL, TICKET_TYP, ticket_claims
from shared.once import LocalUsedOnce, UsedOnce
from shared.redis.once import RedisUsedOnce
from tests.integration.stack import MakeStack, Stack
from tests.integration.ws.harness import auth, expect_close, recv, send

BEARER = "realtime.bearer."


async def ticket_for(stack: Stack, access_token: str) -> str:
    resp = await stack.auth.post(
        "/v1/ws-ticket", headers={"Authorization": f"Bearer {access_token}"}
    )
    assert resp.status == 200, await resp.text()
    ticket: str = (await resp.json())["ticket"]
    return ticket


async def upgrade(
    stack: Stack, query: str = "", protocols: str | list[str] = "", origin: str | None = None
) -> tuple[int, dict[str, Any]]:
    """A raw upgrade request, to read a refusal's status and JSON body; ``protocols`` as a list
    sends one ``Sec-WebSocket-Protocol`` line per item."""
    headers = CIMultiDict(
        {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        }
    )
    for line in [protocols] if isinstance(protocols, str) else protocols:
        if line:
            headers.add("Sec-WebSocket-Protocol", line)
    if origin:
        headers["Origin"] = origin
    resp = await stack.ws.get(f"/ws{query}", headers=headers)
    body: dict[str, Any] = await resp.json() if resp.status != 101 else {}
    resp.close()
    return resp.status, body


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    stack = await make_stack(ws={"allowed_origins": ("http://page.test",)})
    await stack.register("alice")
    return stack


async def test_realtime_v1_is_selected_when_offered_and_in_band_auth_still_works(
    stack: Stack,
) -> None:
    tokens = await stack.login("alice")
    ws = await stack.ws.ws_connect("/ws", protocols=("realtime.v1",))
    assert ws.protocol == "realtime.v1"
    assert (await auth(ws, tokens["access_token"]))["type"] == "auth_success"


async def test_bearer_subprotocol_authenticates_before_the_upgrade(stack: Stack) -> None:
    tokens = await stack.login("alice")
    ws = await stack.ws.ws_connect(
        "/ws", protocols=("realtime.v1", BEARER + tokens["access_token"])
    )
    assert ws.protocol == "realtime.v1"
    welcome = await recv(ws)
    assert welcome["type"] == "auth_success" and welcome["user"]["username"] == "alice"
    await send(ws, {"type": "subscribe", "channel": "chat:x", "id": 1})
    assert (await recv(ws))["type"] == "subscribed"
    # Revocation works exactly as for in-band auth.
    await stack.logout(tokens["access_token"])
    assert (await recv(ws))["type"] == "revoked"
    await expect_close(ws, 4403, "session_revoked")


async def test_bearer_subprotocol_renews_in_band(stack: Stack) -> None:
    tokens = await stack.login("alice")
    ws = await stack.ws.ws_connect(
        "/ws", protocols=("realtime.v1", BEARER + tokens["access_token"])
    )
    assert (await recv(ws))["type"] == "auth_success"
    _, fresh = await stack.refresh(tokens["refresh_token"])
    renewed = await auth(ws, fresh["access_token"])
    assert renewed["type"] == "auth_success" and renewed["renewed"] is True


@pytest.mark.parametrize(
    "protocols",
    [
        "realtime.bearer.{token}",
        "realtime.v2, realtime.bearer.{token}",
        "chat, {token}",
        ["realtime.bearer.{token}", "realtime.v1"],
    ],
    ids=["bearer-alone", "bearer-beside-v2", "no-realtime-v1", "two-header-lines"],
)
async def test_an_offer_without_realtime_v1_is_refused_before_the_library_logs_it(
    stack: Stack, caplog: pytest.LogCaptureFixture, protocols: str | list[str]
) -> None:
    """aiohttp logs every offer that shares nothing with the server's, whole: with a bearer
    entry in it, a valid access token."""
    token = (await stack.login("alice"))["access_token"]
    offer = (
        protocols.format(token=token)
        if isinstance(protocols, str)
        else [line.format(token=token) for line in protocols]
    )
    status, body = await upgrade(stack, protocols=offer)
    assert (status, body["error"]) == (400, "unsupported_subprotocol")
    ws = await stack.ws.ws_connect("/ws", protocols=("realtime.v1", BEARER + token))
    assert (await recv(ws))["type"] == "auth_success"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiohttp")] == []


@pytest.mark.parametrize(
    ("query", "protocols", "code"),
    [
        ("", "realtime.v1, realtime.bearer.not-a-token", "invalid_token"),
        ("?ticket=not-a-ticket", "realtime.v1", "invalid_token"),
        ("?token=anything", "realtime.v1", "invalid_token"),
    ],
    ids=["bad-bearer", "forged-ticket", "token-in-url"],
)
async def test_bad_credentials_get_401_json_before_any_socket(
    stack: Stack, query: str, protocols: str, code: str
) -> None:
    status, body = await upgrade(stack, query, protocols)
    assert (status, body["error"]) == (401, code)
    assert stack.ws_count("ws_connections", state="awaiting_auth") == 0


async def test_a_ticket_opens_one_socket_bound_to_its_access_token(stack: Stack) -> None:
    tokens = await stack.login("alice")
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    ticket = await ticket_for(stack, tokens["access_token"])
    ws = await stack.ws.ws_connect(f"/ws?ticket={ticket}", protocols=("realtime.v1",))
    welcome = await recv(ws)
    assert welcome["type"] == "auth_success"
    assert welcome["session"] == access["sid"] and welcome["user"]["id"] == access["sub"]
    assert welcome["expires_at"] == access["exp"]
    status, body = await upgrade(stack, f"?ticket={ticket}")
    assert (status, body["error"]) == (401, "invalid_token")
    assert "already used" in body["error_description"]


async def test_one_credential_per_request_a_repeated_one_is_refused(stack: Stack) -> None:
    """``?ticket=a&ticket=b`` took the first ticket, and two ``Authorization`` headers their
    first, where a proxy in front may check another (an outside probe)."""
    tokens = await stack.login("alice")
    ticket = await ticket_for(stack, tokens["access_token"])
    status, body = await upgrade(stack, f"?ticket={ticket}&ticket=other")
    assert (status, body["error"]) == (401, "invalid_token")
    assert "one credential" in body["error_description"]
    bearer = f"Bearer {tokens['access_token']}"
    twice = CIMultiDict([("Authorization", bearer), ("Authorization", bearer)])
    resp = await stack.auth.post("/v1/ws-ticket", headers=twice)
    assert resp.status == 401, await resp.text()
    ws = await stack.ws.ws_connect(f"/ws?ticket={ticket}", protocols=("realtime.v1",))
    assert (await recv(ws))["type"] == "auth_success", "the refusals did not spend the ticket"


@pytest.mark.parametrize("with_ticket", [False, True], ids=["in-band", "ticket"])
async def test_a_request_that_is_not_an_upgrade_is_refused_and_spends_no_ticket(
    stack: Stack, with_ticket: bool
) -> None:
    tokens = await stack.login("alice")
    ticket = await ticket_for(stack, tokens["access_token"])
    resp = await stack.ws.get(f"/ws?ticket={ticket}" if with_ticket else "/ws")
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad_request"
    ws = await stack.ws.ws_connect(f"/ws?ticket={ticket}", protocols=("realtime.v1",))
    assert (await recv(ws))["type"] == "auth_success"
    await ws.close()


async def test_tickets_and_access_tokens_are_not_interchangeable(stack: Stack) -> None:
    tokens = await stack.login("alice")
    ticket = await ticket_for(stack, tokens["access_token"])
    status, _ = await upgrade(stack, f"?ticket={tokens['access_token']}")
    assert status == 401
    status, _ = await upgrade(stack, protocols=f"realtime.v1, {BEARER}{ticket}")
    assert status == 401
    ws = await stack.open()
    reply = await auth(ws, ticket)
    assert (reply["type"], reply["code"]) == ("auth_error", "invalid_token")


def minted_at(stack: Stack, access_token: str, now: float) -> str:
    """A ticket for ``access_token`` as auth_service would have minted it at ``now``."""
    access = jwt.decode(access_token, options={"verify_signature": False})
    key = stack.auth.app[KEYRING].signing_key(time.time())
    assert key is not None and key.private_key is not None
    return jwt.encode(
        ticket_claims(access, now),
        key.private_key,
        algorithm="RS256",
        headers={"kid": key.kid, "typ": TICKET_TYP},
    )


async def test_an_expired_ticket_is_refused(stack: Stack) -> None:
    tokens = await stack.login("alice")
    expired = minted_at(stack, tokens["access_token"], time.time() - 60)
    status, body = await upgrade(stack, f"?ticket={expired}")
    assert (status, body["error"]) == (401, "token_expired")


@pytest.mark.parametrize("store", ["local", "redis"])
async def test_a_used_ticket_stays_used_while_the_leeway_still_accepts_it(
    make_stack: MakeStack, request: pytest.FixtureRequest, store: str
) -> None:
    """The verifier accepts a ticket until its ``exp`` plus ``WS_LEEWAY``; its burnt record
    must last as long, or a leaked ticket opens sockets again once ``exp`` has passed."""
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else ""
    stack = await make_stack(ws={"leeway": 10, "redis_url": redis_url})
    await stack.register("alice")
    tokens = await stack.login("alice")
    # Its exp passed a second ago: only the leeway still accepts it, for about 9 s.
    ticket = minted_at(stack, tokens["access_token"], time.time() - TICKET_TTL - 1)
    ws = await stack.ws.ws_connect(f"/ws?ticket={ticket}")
    assert (await recv(ws))["type"] == "auth_success"
    status, body = await upgrade(stack, f"?ticket={ticket}")
    assert (status, body.get("error_description")) == (401, "the ticket was already used")
    # No condition to wait on: Redis kept a ticket whose exp had passed for its 1 s minimum TTL.
    await asyncio.sleep(1.2)
    status, body = await upgrade(stack, f"?ticket={ticket}")
    assert (status, body.get("error_description")) == (401, "the ticket was already used")


async def test_a_ticket_of_a_revoked_session_is_refused_and_audited_with_its_user(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = await stack.login("alice")
    ticket = await ticket_for(stack, tokens["access_token"])
    await stack.logout(tokens["access_token"])
    with caplog.at_level(logging.INFO, logger="audit"):
        status, body = await upgrade(stack, f"?ticket={ticket}")
    assert (status, body["error"]) == (401, "session_revoked")
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "ws_handshake_refused"]
    sub = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    assert (getattr(record, "code", None), getattr(record, "sub", None)) == ("session_revoked", sub)


async def test_the_origin_is_checked_before_the_credentials(stack: Stack) -> None:
    tokens = await stack.login("alice")
    ticket = await ticket_for(stack, tokens["access_token"])
    status, body = await upgrade(stack, f"?ticket={ticket}", origin="http://evil.test")
    assert (status, body["error"]) == (403, "forbidden_origin")
    ws = await stack.ws.ws_connect(
        f"/ws?ticket={ticket}", protocols=("realtime.v1",), headers={"Origin": "http://page.test"}
    )
    assert (await recv(ws))["type"] == "auth_success"


@pytest.fixture(params=["local", "redis"])
async def used_tickets(request: pytest.FixtureRequest) -> Any:
    store: UsedOnce
    if request.param == "redis":
        store = RedisUsedOnce(request.getfixturevalue("redis_url"))
    else:
        store = LocalUsedOnce()
    yield store
    await store.close()


async def test_a_ticket_id_burns_once(used_tickets: UsedOnce) -> None:
    jti = os.urandom(8).hex()
    until = time.time() + 5
    assert await used_tickets.burn(jti, until) is True
    assert await used_tickets.burn(jti, until) is False
    assert await used_tickets.burn(os.urandom(8).hex(), until) is True


async def test_unreachable_ticket_store_fails_closed() -> None:
    store = RedisUsedOnce("redis://127.0.0.1:1/0", timeout=0.2)
    try:
        with pytest.raises(Exception, match="unreachable"):
            await store.burn("x", time.time() + 5)
    finally:
        await store.close()


async def test_bearer_handshake_with_aiohttp_client_error(stack: Stack) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.ws.ws_connect("/ws", protocols=("realtime.v1", BEARER + "x.y.z"))
    assert refused.value.status == 401
