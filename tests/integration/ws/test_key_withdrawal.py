"""A withdrawn signing key in the real app: the announcement on `auth.keys` drops it at once (no
JWKS fetch, however the key set is cached), the sockets its tokens opened must renew within the
grace or are closed `token_expired`, and a replica that missed the announcement while Redis was
down drops the key when it reconnects."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from realtime_gateway_protocol.key_events import KEYS_TOPIC, KeyWithdrawn, encode_key_event
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
from ws_service.appkeys import JWKS

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
    gw: Harness, other_key: RSAPrivateKey
) -> None:
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


async def test_a_replica_that_missed_the_withdrawal_drops_the_key_when_redis_is_back(
    private_redis: PrivateRedis,
    make_gateway: MakeGateway,
    rsa_key: RSAPrivateKey,
    other_key: RSAPrivateKey,
) -> None:
    bus = RedisBus(private_redis.url, backoff_base=0.05, backoff_cap=0.2)
    await bus.start()
    try:
        keyset = KeySet({KID: rsa_key, "key-2": other_key}, cache_control="public, max-age=3600")
        gw = await make_gateway(
            bus=bus, keyset=keyset, jwks_min_ttl=600, key_withdrawal_grace=GRACE
        )
        ws = await gw.login()
        await private_redis.kill()
        await wait_until(lambda: not bus.connected)
        del keyset.keys[KID]  # withdrawn by auth_service; the announcement never came
        await expect_open(ws)
        await private_redis.start()
        await expiring(ws)
        assert await recv(ws, wait=GRACE + 2) == EXPIRED
        await expect_close(ws, 4401, "token_expired")
        fresh = await gw.open()
        reply = await auth(fresh, gw.tokens.make("dave", iat=long_ago()))
        assert (reply["code"], reply["message"]) == ("invalid_token", "unknown signing key")
    finally:
        await bus.close()
