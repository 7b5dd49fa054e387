"""A withdrawn signing key in the real app: the announcement on `auth.keys` drops it at once (no
JWKS fetch, however the key set is cached), the sockets its tokens opened must renew within the
grace or are closed `token_expired`, and a replica that missed the announcement while Redis was
down drops the key when it reconnects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from realtime_gateway_protocol.key_events import (
    KEYS_TOPIC,
    KeyRotated,
    KeyWithdrawn,
    encode_key_event,
)
from shared.jsonlog import REQUEST_ID
from shared.redis.bus import RedisBus
from tests.integration.bus.support import PrivateRedis
from tests.integration.ws.conftest import KID, MakeGateway
from tests.integration.ws.harness import (
    Harness,
    KeySet,
    auth,
    expect_close,
    expect_open,
    long_ago,
    recv,
    wait_until,
)
from tests.support.logs import json_lines
from ws_service import app as ws_app_module
from ws_service.appkeys import JWKS
from ws_service.domain import gateway as gateway_module

GRACE = 1
EXPIRED = {
    "type": "auth_error",
    "code": "token_expired",
    "message": "the token has expired",
    "retry": False,
}
WITHDRAWN = {
    "type": "auth_error",
    "code": "token_expired",
    "message": "the token's signing key was withdrawn; refresh the token",
    "retry": True,
}


@pytest.fixture
async def gw(
    make_gateway: MakeGateway, rsa_key: RSAPrivateKey, other_key: RSAPrivateKey
) -> Harness:
    """Two keys, a key set cached far longer than the test: only the announcement can act."""
    keyset = KeySet({KID: rsa_key, "key-2": other_key}, cache_control="public, max-age=3600")
    return await make_gateway(keyset=keyset, jwks_min_ttl=600, key_withdrawal_grace=GRACE)


def good_token(gw: Harness, other_key: RSAPrivateKey, sub: str = "alice") -> str:
    return gw.tokens.make(sub, key=other_key, headers={"kid": "key-2"})


async def withdraw(gw: Harness, kid: str) -> None:
    await gw.bus.publish(KEYS_TOPIC, encode_key_event(KeyWithdrawn(kid)))


async def expiring(ws: Any) -> int:
    warning = await recv(ws)
    assert warning["type"] == "token_expiring", warning
    assert warning["expires_in"] <= GRACE
    return int(warning["expires_at"])


async def test_sockets_of_the_withdrawn_key_renew_or_are_closed_and_its_tokens_are_refused(
    gw: Harness, other_key: RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The withdrawal needs no fetch: the one a key announcement schedules comes after the test.
    monkeypatch.setattr(gateway_module, "KEY_EVENT_SETTLE", 600.0)
    renewing = await gw.login("alice")
    silent = await gw.login("bob")
    other = await gw.login("carol", token=good_token(gw, other_key, "carol"))
    fetches = gw.keyset.fetches

    await withdraw(gw, KID)
    await expiring(renewing)
    await expiring(silent)
    reply = await auth(renewing, good_token(gw, other_key))
    assert (reply["type"], reply["renewed"]) == ("auth_success", True)

    assert await recv(silent, wait=GRACE + 2) == EXPIRED
    await expect_close(silent, 4401, "token_expired")
    await expect_open(renewing)
    await expect_open(other)

    ws = await gw.open()
    assert await auth(ws, gw.tokens.make("dave")) == WITHDRAWN
    assert await auth(other, gw.tokens.make("carol")) == WITHDRAWN, "no renewal with it either"
    await expect_open(other)
    await gw.app[JWKS].refresh()  # the issuer's copy (or a proxy's) still lists the key
    assert await auth(ws, gw.tokens.make("dave")) == WITHDRAWN
    assert gw.keyset.fetches == fetches + 1, "only the refresh above fetched"


async def test_the_close_a_withdrawal_schedules_is_audited_under_the_sockets_own_id(
    gw: Harness,
) -> None:
    """The withdrawal sets the socket's expiry from the task that heard the announcement, whose
    request id (if any) is not the socket's: the ``token_expired`` line carries the socket's."""
    ws = await gw.client.ws_connect("/ws", headers={"X-Request-ID": "bob-own-id"})
    assert (await auth(ws, gw.tokens.make("bob")))["type"] == "auth_success"
    with json_lines() as logs:
        announcer = REQUEST_ID.set("announcer-id")
        try:
            await withdraw(gw, KID)
        finally:
            REQUEST_ID.reset(announcer)
        await expiring(ws)
        assert await recv(ws, wait=GRACE + 2) == EXPIRED
        await expect_close(ws, 4401, "token_expired")
    (line,) = logs.logged("audit", "ws_auth_failure")
    assert (line["code"], line["sub"], line["request_id"]) == ("token_expired", "bob", "bob-own-id")


async def test_a_malformed_announcement_withdraws_nothing(gw: Harness) -> None:
    ws = await gw.login()
    for payload in ("", "{}", '{"type":"key_withdrawn","kid":"key 1"}', "[" * 2000):
        await gw.bus.publish(KEYS_TOPIC, payload)
    await expect_open(ws)
    await gw.login("bob")


@contextlib.asynccontextmanager
async def on_redis(
    private_redis: PrivateRedis,
    make_gateway: MakeGateway,
    keys: dict[str, RSAPrivateKey],
) -> AsyncIterator[tuple[Harness, KeySet, Any]]:
    """A gateway on Redis with a socket of ``KID``'s, and Redis killed: ``(gw, keyset, ws)``."""
    bus = RedisBus(private_redis.url, backoff_base=0.05, backoff_cap=0.2)
    await bus.start()
    try:
        keyset = KeySet(keys, cache_control="public, max-age=3600")
        gw = await make_gateway(
            bus=bus, keyset=keyset, jwks_min_ttl=600, key_withdrawal_grace=GRACE
        )
        ws = await gw.login()
        await private_redis.kill()
        await wait_until(lambda: not bus.connected)
        yield gw, keyset, ws
    finally:
        await bus.close()


async def told_then_closed(ws: Any) -> None:
    await expiring(ws)
    assert await recv(ws, wait=GRACE + 2) == EXPIRED
    await expect_close(ws, 4401, "token_expired")


async def test_a_replica_that_missed_the_withdrawal_drops_the_key_when_redis_is_back(
    private_redis: PrivateRedis,
    make_gateway: MakeGateway,
    rsa_key: RSAPrivateKey,
    other_key: RSAPrivateKey,
) -> None:
    keys = {KID: rsa_key, "key-2": other_key}
    async with on_redis(private_redis, make_gateway, keys) as (gw, keyset, ws):
        del keyset.keys[KID]  # withdrawn by auth_service; the announcement never came
        await expect_open(ws)
        await private_redis.start()
        await told_then_closed(ws)
        fresh = await gw.open()
        reply = await auth(fresh, gw.tokens.make("dave", iat=long_ago()))
        assert (reply["code"], reply["message"]) == ("invalid_token", "unknown signing key")


async def test_a_replica_drops_a_key_missed_meanwhile_even_if_its_first_fetch_still_lists_it(
    private_redis: PrivateRedis,
    make_gateway: MakeGateway,
    rsa_key: RSAPrivateKey,
    other_key: RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis came back, and the key set fetched at the reconnection came from an auth replica
    that had missed the withdrawal too (the outbox's announcement went before it listened again)
    and had not reloaded yet: the gateway accepted the withdrawn key until the key set's TTL,
    minutes (an outside probe). It fetches the key set again after the reconnection."""
    monkeypatch.setattr(gateway_module, "RECONNECT_REFETCHES", (0.5, 1.0))
    keys = {KID: rsa_key, "key-2": other_key}
    async with on_redis(private_redis, make_gateway, keys) as (_, keyset, ws):
        fetched = keyset.fetches
        await private_redis.start()
        await wait_until(lambda: keyset.fetches > fetched)  # the fetch at the reconnection
        del keyset.keys[KID]  # the auth replica reloads only now
        await told_then_closed(ws)


async def test_a_replica_cut_off_from_redis_drops_a_withdrawn_key_without_waiting_for_redis(
    private_redis: PrivateRedis,
    make_gateway: MakeGateway,
    rsa_key: RSAPrivateKey,
    other_key: RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The withdrawal was announced while Redis was down and stays down: the gateway trusted the
    key until the key set's TTL (an hour here, five minutes by default). While its bus is down it
    fetches the key set every ``BUS_DOWN_KEY_REFETCH`` seconds."""
    monkeypatch.setattr(ws_app_module, "BUS_DOWN_KEY_REFETCH", 0.3)
    keys = {KID: rsa_key, "key-2": other_key}
    async with on_redis(private_redis, make_gateway, keys) as (gw, keyset, ws):
        del keyset.keys[KID]  # withdrawn by auth_service; the announcement never came
        await told_then_closed(ws)
        fresh = await gw.open()
        reply = await auth(fresh, gw.tokens.make("dave", iat=long_ago()))
        assert (reply["code"], reply["message"]) == ("invalid_token", "unknown signing key")


async def test_a_new_keys_tokens_verify_soon_after_its_rotation_is_announced(
    make_gateway: MakeGateway,
    rsa_key: RSAPrivateKey,
    other_key: RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``keys rotate --immediate``: one auth replica signs with the new key while the key set this
    gateway fetched on its first token came from one that reloaded a moment later; the refetch an
    unknown kid may cause is limited to one per 10 s, so its tokens were refused that long (an
    outside probe: 1,752 refusals in 8 s). The announcement makes the gateway fetch again."""
    monkeypatch.setattr(gateway_module, "KEY_EVENT_SETTLE", 0.2)
    keyset = KeySet({KID: rsa_key}, cache_control="public, max-age=3600")
    gw = await make_gateway(keyset=keyset, jwks_min_ttl=600)
    ws = await gw.open()
    reply = await auth(ws, good_token(gw, other_key))
    assert (reply["code"], reply["retry"]) == ("keys_unavailable", True)
    keyset.keys["key-2"] = other_key  # the other auth replica reloaded, a moment late
    await gw.bus.publish(KEYS_TOPIC, encode_key_event(KeyRotated("key-2", 2)))
    await wait_until(lambda: keyset.fetches >= 3)
    ws = await gw.open()
    assert (await auth(ws, good_token(gw, other_key, "bob")))["type"] == "auth_success"
