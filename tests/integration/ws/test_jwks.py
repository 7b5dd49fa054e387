"""The key set: loaded over HTTP, refetched for unknown kids at most once per interval."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from shared.http.jwks import KeysUnavailable
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import (
    Harness,
    KeySet,
    auth,
    expect_close,
    long_ago,
    wait_until,
)
from ws_service.appkeys import JWKS

UNAVAILABLE = {
    "type": "auth_error",
    "code": "keys_unavailable",
    "message": "the signing keys are not available, try again",
}


async def test_unknown_kid_triggers_exactly_one_refetch_then_is_refused(gw: Harness) -> None:
    assert gw.keyset.fetches == 1
    ws = await gw.open()
    reply = await auth(ws, gw.tokens.make(headers={"kid": "rotated-away"}, iat=long_ago()))
    assert reply == {
        "type": "auth_error",
        "code": "invalid_token",
        "message": "unknown signing key",
        "retry": False,
    }
    await expect_close(ws, 4401, "invalid_token")
    assert gw.keyset.fetches == 2


async def test_flood_of_random_kids_is_at_most_one_fetch_per_interval(gw: Harness) -> None:
    async def attempt() -> str:
        ws = await gw.open()
        reply = await auth(ws, gw.tokens.make(headers={"kid": uuid.uuid4().hex}, iat=long_ago()))
        return str(reply["code"])

    codes = await asyncio.gather(*(attempt() for _ in range(30)))
    assert set(codes) == {"invalid_token"}
    assert gw.keyset.fetches == 2
    await gw.login()
    assert gw.keyset.fetches == 2


async def test_refetch_is_allowed_again_after_the_interval(
    make_gateway: MakeGateway, other_key: RSAPrivateKey
) -> None:
    gw = await make_gateway(jwks_refetch_interval=0.3)
    ws = await gw.open()
    unknown = gw.tokens.make(key=other_key, headers={"kid": "new"}, iat=long_ago())
    assert (await auth(ws, unknown))["code"] == "invalid_token"
    assert gw.keyset.fetches == 2
    gw.keyset.keys["new"] = other_key
    token = gw.tokens.make(key=other_key, headers={"kid": "new"})
    async with asyncio.timeout(5):  # refused without a fetch until the interval has passed
        while (await auth(await gw.open(), token))["type"] != "auth_success":
            assert gw.keyset.fetches == 2
            await asyncio.sleep(0.05)
    assert gw.keyset.fetches == 3


async def test_rotated_key_is_found_by_one_refetch(gw: Harness, other_key: RSAPrivateKey) -> None:
    gw.keyset.keys["key-2"] = other_key
    await gw.login(token=gw.tokens.make(key=other_key, headers={"kid": "key-2"}))
    assert gw.keyset.fetches == 2


async def test_no_key_set_gives_retryable_keys_unavailable_then_recovers(
    make_gateway: MakeGateway, rsa_key: RSAPrivateKey
) -> None:
    keyset = KeySet({"key-1": rsa_key}, fail=True)
    gw = await make_gateway(keyset=keyset, wait_ready=False)
    await wait_until(lambda: keyset.fetches >= 1)
    ready = await gw.client.get("/readyz")
    body = await ready.json()
    assert (ready.status, body["ready"]) == (503, False)
    assert re.fullmatch(r"unreachable since \S+\+00:00: HTTP 503", body["degraded"]["issuer"])
    ws = await gw.open()
    assert await auth(ws, gw.tokens.make()) == {**UNAVAILABLE, "retry": True}
    assert await auth(ws, gw.tokens.make()) == {**UNAVAILABLE, "retry": True}
    assert await auth(ws, gw.tokens.make()) == {**UNAVAILABLE, "retry": False}
    await expect_close(ws, 4401, "keys_unavailable")
    keyset.fail = False
    await wait_until(lambda: gw.app[JWKS].ready, wait=5)
    ready = await gw.client.get("/readyz")
    assert (ready.status, await ready.json()) == (
        200,
        {"ready": True, "checks": {"signing_keys": "ok"}, "degraded": {}},
    )
    await gw.login()


async def test_failed_refetch_is_keys_unavailable_and_keeps_the_last_good_set(
    gw: Harness, other_key: RSAPrivateKey
) -> None:
    gw.keyset.fail = True
    ws = await gw.open()
    reply = await auth(ws, gw.tokens.make(key=other_key, headers={"kid": "key-2"}))
    assert reply == {**UNAVAILABLE, "retry": True}
    assert gw.keyset.fetches == 2
    assert (await auth(ws, gw.tokens.make()))["type"] == "auth_success"


async def test_issuer_down_cached_keys_still_verify_and_readyz_reports_it(gw: Harness) -> None:
    await gw.login()
    before = datetime.now(UTC).replace(microsecond=0)
    await gw.jwks_server.close()
    with pytest.raises(KeysUnavailable):
        await gw.app[JWKS].refresh()
    ready = await gw.client.get("/readyz")
    body = await ready.json()
    assert (ready.status, body["ready"], set(body["degraded"])) == (200, True, {"issuer"})
    match = re.fullmatch(r"unreachable since (\S+): (.+)", body["degraded"]["issuer"])
    assert match is not None, body
    assert before <= datetime.fromisoformat(match[1]) <= datetime.now(UTC)
    assert "Cannot connect" in match[2]
    await gw.login()


async def test_a_token_newer_than_the_key_set_is_asked_again_not_refused_for_good(
    make_gateway: MakeGateway, other_key: RSAPrivateKey
) -> None:
    """An outside probe: during a Redis outage an operator withdrew the signing key; one auth
    replica signed with the new key at once, the key set the gateway refetched came from another
    that had not loaded it yet, and the new tokens, valid, were answered invalid_token (retry:
    false, close 4401: "log in again") until the refetch interval let it look again. A kid
    unknown to a key set fetched before the token was issued (plus NEW_KEY_SETTLE) is now
    keys_unavailable, and the next attempt, once the key set has it, succeeds."""
    gw = await make_gateway(jwks_refetch_interval=0.3)
    token = gw.tokens.make(key=other_key, headers={"kid": "newer"})
    ws = await gw.open()
    assert await auth(ws, token) == {
        "type": "auth_error",
        "code": "keys_unavailable",
        "message": "the token's signing key is not in the key set here yet; try again",
        "retry": True,
    }
    assert gw.keyset.fetches == 2, "one refetch for the unknown kid"
    gw.keyset.keys["newer"] = other_key  # the lagging replica has loaded the new key
    await asyncio.sleep(0.35)
    assert (await auth(ws, token))["type"] == "auth_success", "the same socket, a second try"
    assert gw.keyset.fetches == 3


@pytest.mark.parametrize(
    "iat",
    [10**400, -(10**400), 4_000_000_000, 1.5e300, "NaN", "soon", True, None],
    ids=["huge", "hugely negative", "future", "future float", "nan", "string", "bool", "none"],
)
async def test_an_unknown_kid_with_an_iat_no_real_token_has_is_refused_for_good(
    gw: Harness, iat: Any
) -> None:
    """An outside probe: an iat of 400 digits overflowed float on the unknown-kid path and
    closed the socket 1011 (HTTP 500 at a bearer or ticket handshake), with a traceback per try;
    an iat from the future was told to retry, and a client holding a forged or foreign token
    reconnected for ever. Both are invalid_token now, as a missing one is."""
    claims = gw.tokens.claims("alice")
    claims["iat"] = float("nan") if iat == "NaN" else iat
    if iat is None:
        del claims["iat"]
    token = jwt.encode(
        claims, gw.tokens.key, algorithm="RS256", headers={"kid": "nope", "typ": "at+jwt"}
    )
    ws = await gw.open()
    reply = await auth(ws, token)
    assert (reply["code"], reply["retry"]) == ("invalid_token", False), reply
    await expect_close(ws, 4401, "invalid_token")
