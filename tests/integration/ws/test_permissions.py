"""Per-channel permissions in the token (RFC 9396 ``authorization_details``) on the real app:
granted actions work without scopes, renewal re-checks them, a malformed claim is an invalid
token, and a ticket keeps the grants of its access token."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from realtime_gateway_protocol.tickets import TICKET_TYP, ticket_claims
from tests.integration.ws.conftest import KID
from tests.integration.ws.harness import Harness, auth, expect_close, expect_open, recv, send


def grant(*channels: str, actions: tuple[str, ...] = ("subscribe", "publish")) -> dict[str, Any]:
    return {"type": "realtime_channels", "channels": list(channels), "actions": list(actions)}


async def test_a_grant_opens_channels_the_scopes_do_not(gw: Harness) -> None:
    ws = await gw.login("alice", scope="", authorization_details=[grant("doc:1", "team:7.*")])
    for channel in ("doc:1", "team:7.board"):
        await send(ws, {"type": "subscribe", "channel": channel, "id": 1})
        assert await recv(ws) == {"type": "subscribed", "channel": channel, "id": 1}
    await send(ws, {"type": "publish", "channel": "doc:1", "data": "hi", "id": 2})
    assert sorted([(await recv(ws))["type"], (await recv(ws))["type"]]) == ["message", "published"]
    await send(ws, {"type": "subscribe", "channel": "doc:2", "id": 3})
    reply = await recv(ws)
    assert (reply["code"], reply["id"]) == ("forbidden", 3)


async def test_renewal_leaves_the_channels_no_longer_granted(gw: Harness) -> None:
    ws = await gw.login("alice", scope="chat:read", authorization_details=[grant("doc:1", "doc:2")])
    for channel in ("chat:general", "doc:1", "doc:2"):
        await send(ws, {"type": "subscribe", "channel": channel})
        assert (await recv(ws))["type"] == "subscribed"
    narrower = gw.tokens.make("alice", scope="chat:read", authorization_details=[grant("doc:2")])
    await send(ws, {"type": "auth", "token": narrower})
    assert await recv(ws) == {
        "type": "unsubscribed",
        "channel": "doc:1",
        "reason": "permission_revoked",
    }
    assert (await recv(ws))["renewed"] is True
    await expect_open(ws)


async def test_a_malformed_claim_makes_the_token_invalid(gw: Harness) -> None:
    ws = await gw.open()
    token = gw.tokens.make("alice", authorization_details=[grant("doc:1", actions=("write",))])
    reply = await auth(ws, token)
    assert (reply["type"], reply["code"], reply["retry"]) == ("auth_error", "invalid_token", False)
    assert "actions" in reply["message"]
    await expect_close(ws, 4401, "invalid_token")


async def test_a_ticket_keeps_the_grants_of_its_access_token(
    gw: Harness, rsa_key: RSAPrivateKey
) -> None:
    access = gw.tokens.claims("alice", scope="", authorization_details=[grant("doc:1")])
    ticket = jwt.encode(
        ticket_claims(access, time.time()),
        rsa_key,
        algorithm="RS256",
        headers={"kid": KID, "typ": TICKET_TYP},
    )
    ws = await gw.client.ws_connect(f"/ws?ticket={ticket}")
    assert (await recv(ws))["type"] == "auth_success"
    await send(ws, {"type": "subscribe", "channel": "doc:1", "id": 1})
    assert await recv(ws) == {"type": "subscribed", "channel": "doc:1", "id": 1}
