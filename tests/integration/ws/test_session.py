"""An authenticated socket over time: warnings, renewal, expiry, subject changes, revocation."""

from __future__ import annotations

import time

from realtime_gateway_protocol.events import (
    REVOCATIONS_TOPIC,
    SessionRevoked,
    UserRevoked,
    encode_event,
)
from tests.integration.ws.harness import Harness, auth, expect_close, expect_open, recv, send


async def test_warning_then_renewal_keeps_the_socket_across_several_lifetimes(
    gw: Harness,
) -> None:
    first = gw.tokens.make("alice", ttl=2)
    first_exp = gw.tokens.claims(ttl=2)["exp"]
    ws = await gw.open()
    assert (await auth(ws, first))["type"] == "auth_success"
    for round_ in range(3):
        warning = await recv(ws, wait=3)
        now = time.time()
        assert warning["type"] == "token_expiring"
        assert set(warning) == {"type", "expires_in", "expires_at"}
        assert now < warning["expires_at"]
        assert 0 <= warning["expires_in"] <= 2
        renewed = await auth(ws, gw.tokens.make("alice", ttl=2, jti=f"r{round_}"), id=round_)
        assert renewed["type"] == "auth_success"
        assert (renewed["renewed"], renewed["id"], renewed["user"]["id"]) == (True, round_, "alice")
        assert renewed["expires_at"] > warning["expires_at"] - 1
    assert time.time() > first_exp
    await expect_open(ws)


async def test_expiry_without_renewal_closes_4401_token_expired(gw: Harness) -> None:
    ws = await gw.open()
    assert (await auth(ws, gw.tokens.make(ttl=2)))["type"] == "auth_success"
    assert (await recv(ws))["type"] == "token_expiring"
    assert await recv(ws) == {
        "type": "auth_error",
        "code": "token_expired",
        "message": "the token has expired",
        "retry": False,
    }
    await expect_close(ws, 4401, "token_expired")
    metrics = await (await gw.client.get("/metrics")).text()
    assert "ws_expiries_total 1.0" in metrics
    assert "ws_expiry_warnings_total 1.0" in metrics


async def test_renewal_with_another_subject_closes_4403(gw: Harness) -> None:
    ws = await gw.login("alice")
    assert await auth(ws, gw.tokens.make("bob"), id="r") == {
        "type": "auth_error",
        "code": "subject_mismatch",
        "message": "the new token belongs to another user",
        "retry": False,
        "id": "r",
    }
    await expect_close(ws, 4403, "subject_mismatch")


async def test_failed_renewal_leaves_the_socket_open(gw: Harness) -> None:
    ws = await gw.login("alice")
    reply = await auth(ws, gw.tokens.make("alice", aud="api"))
    assert (reply["code"], reply["retry"]) == ("invalid_token", False)
    await expect_open(ws)


async def test_renewal_rechecks_channel_permissions(gw: Harness) -> None:
    ws = await gw.login("alice", scope="chat:read news:read")
    for channel in ("chat:general", "news:today", "user:alice"):
        await send(ws, {"type": "subscribe", "channel": channel})
        assert (await recv(ws))["type"] == "subscribed"
    await send(ws, {"type": "auth", "token": gw.tokens.make("alice", scope="news:read")})
    assert await recv(ws) == {
        "type": "unsubscribed",
        "channel": "chat:general",
        "reason": "permission_revoked",
    }
    assert (await recv(ws))["renewed"] is True
    await send(ws, {"type": "unsubscribe", "channel": "chat:general", "id": 1})
    assert (await recv(ws))["code"] == "not_subscribed"
    await send(ws, {"type": "unsubscribe", "channel": "news:today", "id": 2})
    assert await recv(ws) == {"type": "unsubscribed", "channel": "news:today", "id": 2}


async def test_session_revocation_closes_matching_sockets_and_refuses_the_token(
    gw: Harness,
) -> None:
    token = gw.tokens.make("alice", sid="s1")
    victim = await gw.login(token=token)
    other_session = await gw.login("alice", sid="s2")
    bystander = await gw.login("bob", sid="s1")
    event = SessionRevoked(sid="s1", sub="alice", until=int(time.time()) + 60)
    await gw.bus.publish(REVOCATIONS_TOPIC, encode_event(event))
    assert await recv(victim) == {"type": "revoked", "reason": "session_revoked"}
    await expect_close(victim, 4403, "session_revoked")
    await expect_open(other_session)
    await expect_open(bystander)

    ws = await gw.open()
    assert await auth(ws, token) == {
        "type": "auth_error",
        "code": "session_revoked",
        "message": "the session has been revoked",
        "retry": False,
    }
    await expect_close(ws, 4403, "session_revoked")
    assert (await auth(other_session, gw.tokens.make("alice", sid="s1")))["code"] == (
        "session_revoked"
    )
    await expect_close(other_session, 4403, "session_revoked")


async def test_user_revocation_covers_tokens_issued_before_the_cutoff(gw: Harness) -> None:
    now = int(time.time())
    old = await gw.login("alice", iat=now - 10, sid="a")
    fresh_token = gw.tokens.make("alice", iat=now, sid="b")
    event = UserRevoked(sub="alice", issued_before=now, until=now + 60)
    await gw.bus.publish(REVOCATIONS_TOPIC, encode_event(event))
    assert await recv(old) == {"type": "revoked", "reason": "user_revoked"}
    await expect_close(old, 4403, "session_revoked")
    ws = await gw.open()
    assert (await auth(ws, gw.tokens.make("alice", iat=now - 5)))["code"] == "session_revoked"
    await gw.login(token=fresh_token)


async def test_revocation_is_forgotten_after_until(gw: Harness) -> None:
    token = gw.tokens.make("alice", sid="s1")
    event = SessionRevoked(sid="s1", sub="alice", until=int(time.time()) - 1)
    await gw.bus.publish(REVOCATIONS_TOPIC, encode_event(event))
    await gw.login(token=token)


async def test_malformed_revocation_event_is_ignored(gw: Harness) -> None:
    ws = await gw.login("alice")
    await gw.bus.publish(REVOCATIONS_TOPIC, '{"type": "nonsense"}')
    await expect_open(ws)
