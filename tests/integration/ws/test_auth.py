"""Every in-band authentication outcome, with its exact frame and close code."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.warnings import InsecureKeyLengthWarning

from tests.integration.ws.conftest import KID, MakeGateway
from tests.integration.ws.harness import (
    ISSUER,
    Harness,
    KeySet,
    auth,
    b64,
    expect_close,
    expect_open,
    long_ago,
    recv,
    send,
)

INVALID = {"type": "auth_error", "code": "invalid_token", "retry": False}


async def refused(gw: Harness, token: str, message: str = "the token is not valid") -> None:
    """``invalid_token``, ``retry: false``, then close 4401 invalid_token."""
    ws = await gw.open()
    assert await auth(ws, token) == {**INVALID, "message": message}
    await expect_close(ws, 4401, "invalid_token")


async def test_valid_token_authenticates(gw: Harness) -> None:
    token = gw.tokens.make("alice", ttl=120)
    ws = await gw.open()
    reply = await auth(ws, token, id=7)
    exp = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    assert reply == {
        "type": "auth_success",
        "user": {"id": "alice", "username": "Alice"},
        "session": "sid-alice",
        "expires_in": reply["expires_in"],
        "expires_at": exp,
        "limits": {
            "rate_per_second": 20.0,
            "rate_burst": 40,
            "max_subscriptions": 100,
            "max_message_bytes": 65536,
        },
        "id": 7,
    }
    assert 118 <= reply["expires_in"] <= 120
    await expect_open(ws)


async def test_audience_list_containing_ws_is_accepted(gw: Harness) -> None:
    await gw.login(token=gw.tokens.make(aud=["other", "ws"]))


async def test_jku_x5u_jwk_x5c_headers_are_ignored(
    gw: Harness, aiohttp_server: Any, other_key: RSAPrivateKey
) -> None:
    """Where a token says its key lives is the attacker's word: keys come from the configured JWKS
    alone. The headers point at a real key set holding the attacker's key, which counts fetches."""
    attacker = KeySet({"attacker-kid": other_key})
    url = str((await aiohttp_server(attacker.app())).make_url("/.well-known/jwks.json"))
    (embedded,) = attacker.document()["keys"]
    headers = {"jku": url, "x5u": url, "jwk": embedded, "x5c": ["AAAA"]}
    await gw.login(token=gw.tokens.make(headers=headers))
    assert gw.keyset.fetches == 1, "the configured key set, fetched once at start-up"
    ws = await gw.open()
    forged = gw.tokens.make(
        key=other_key, headers={**headers, "kid": "attacker-kid"}, iat=long_ago()
    )
    assert await auth(ws, forged) == {
        "type": "auth_error",
        "code": "invalid_token",
        "message": "unknown signing key",
        "retry": False,
    }
    assert gw.keyset.fetches == 2, "one refetch for the unknown kid, from the configured URL"
    assert attacker.fetches == 0


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("alg_none", "the token must be signed with RS256"),
        ("rs384", "the token must be signed with RS256"),
        ("ps256", "the token must be signed with RS256"),
        ("missing_kid", "the token has no key id"),
        ("typ_missing", "the token is not an access token"),
        ("typ_jwt", "the token is not an access token"),
        # Header parameters of the wrong JSON type once raised TypeError (hashed for a set or a
        # cache) and failed the handler; the header is refused where it is read.
        ("typ_list", "the token is malformed"),
        ("typ_object", "the token is malformed"),
        ("alg_list", "the token is malformed"),
        ("kid_number", "the token is malformed"),
        ("crit", "the token is malformed"),
        ("refresh_token", "the token is malformed"),
        ("garbage_base64", "the token is malformed"),
        ("garbage_payload", "the token is not valid"),
        ("empty", "auth needs a token"),
    ],
)
async def test_malformed_or_wrong_kind_of_token(gw: Harness, case: str, message: str) -> None:
    t = gw.tokens
    token = {
        "alg_none": lambda: t.unsigned(
            {"alg": "none", "typ": "at+jwt", "kid": KID}, t.claims(), b""
        ),
        "rs384": lambda: t.make(algorithm="RS384"),
        "ps256": lambda: t.make(algorithm="PS256"),
        "missing_kid": lambda: t.make(headers={"kid": None}),
        "typ_missing": lambda: t.make(headers={"typ": None}),
        "typ_jwt": lambda: t.make(headers={"typ": "JWT"}),
        "typ_list": lambda: t.make(headers={"typ": ["at+jwt"]}),
        "typ_object": lambda: t.make(headers={"typ": {"at+jwt": 1}}),
        "alg_list": lambda: t.unsigned({"alg": ["RS256"], "typ": "at+jwt", "kid": KID}, {}, b"s"),
        "kid_number": lambda: t.unsigned({"alg": "RS256", "typ": "at+jwt", "kid": 7}, {}, b"s"),
        "crit": lambda: t.make(headers={"crit": ["exp"]}),
        "refresh_token": lambda: "Xk3-4kT0w9vQ1bq7cF2aUe_8Zr5Ln6yHpJdMsW0tEgI",
        "garbage_base64": lambda: "%%%.***.###",
        "garbage_payload": lambda: (
            t.unsigned({"alg": "RS256", "typ": "at+jwt", "kid": KID}, {}, b"sig").split(".")[0]
            + ".bm90LWpzb24.c2ln"
        ),
        "empty": lambda: "",
    }[case]()
    await refused(gw, token, message)


async def test_hs256_signed_with_the_public_key_is_refused(
    gw: Harness, rsa_key: RSAPrivateKey
) -> None:
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": KID}
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(gw.tokens.claims()).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    await refused(gw, f"{head}.{body}.{b64(sig)}", "the token must be signed with RS256")


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "http://evil.test"},
        {"iss": ISSUER + "/"},
        {"aud": "api"},
        {"aud": ["api", "admin"]},
        {"nbf": int(time.time()) + 3600},
        {"iat": int(time.time()) + 3600},
        {"sid": None},
        {"jti": None},
        {"sub": None},
        {"iat": None},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
async def test_wrong_claims_are_invalid(gw: Harness, overrides: dict[str, Any]) -> None:
    await refused(gw, gw.tokens.make(**overrides))


async def test_missing_exp_is_invalid(gw: Harness) -> None:
    claims = gw.tokens.claims()
    del claims["exp"]
    import jwt

    token = jwt.encode(
        claims, gw.tokens.key, algorithm="RS256", headers={"typ": "at+jwt", "kid": KID}
    )
    await refused(gw, token)


async def test_tampered_payload_is_invalid(gw: Harness) -> None:
    head, _, sig = gw.tokens.make("alice").split(".")
    forged = b64(json.dumps(gw.tokens.claims("mallory")).encode())
    await refused(gw, f"{head}.{forged}.{sig}")


async def test_token_signed_by_another_key_with_the_right_kid_is_invalid(
    gw: Harness, other_key: RSAPrivateKey
) -> None:
    await refused(gw, gw.tokens.make(key=other_key))


async def test_weak_rsa_key_in_the_jwks_is_never_used(make_gateway: MakeGateway) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    strong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gw = await make_gateway(keyset=KeySet({"weak": weak, KID: strong}))
    with pytest.warns(InsecureKeyLengthWarning):
        token = gw.tokens.make(key=weak, headers={"kid": "weak"}, iat=long_ago())
    await refused(gw, token, "unknown signing key")


async def test_expired_token_may_be_retried_on_the_same_socket(gw: Harness) -> None:
    ws = await gw.open()
    expired = gw.tokens.make(iat=int(time.time()) - 600, exp=int(time.time()) - 60)
    assert await auth(ws, expired, id="a1") == {
        "type": "auth_error",
        "code": "token_expired",
        "message": "the token has expired",
        "retry": True,
        "id": "a1",
    }
    reply = await auth(ws, gw.tokens.make())
    assert reply["type"] == "auth_success"
    await expect_open(ws)


async def test_three_failed_retryable_attempts_close_4401(gw: Harness) -> None:
    ws = await gw.open()
    expired = gw.tokens.make(iat=int(time.time()) - 600, exp=int(time.time()) - 60)
    assert (await auth(ws, expired))["retry"] is True
    assert (await auth(ws, expired))["retry"] is True
    last = await auth(ws, expired)
    assert (last["code"], last["retry"]) == ("token_expired", False)
    await expect_close(ws, 4401, "token_expired")


async def test_first_message_other_than_auth_closes_4401(gw: Harness) -> None:
    ws = await gw.open()
    await send(ws, {"type": "subscribe", "channel": "chat:general", "id": 1})
    assert await recv(ws) == {
        "type": "auth_error",
        "code": "not_authenticated",
        "message": "the first message must be auth",
        "retry": False,
        "id": 1,
    }
    await expect_close(ws, 4401, "not_authenticated")


async def test_no_auth_in_time_closes_4408(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(auth_timeout=0.3)
    ws = await gw.open()
    assert await recv(ws) == {
        "type": "auth_error",
        "code": "auth_timeout",
        "message": "no auth message in time",
        "retry": False,
    }
    await expect_close(ws, 4408, "auth_timeout")


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '{"type": 5}', "x" * (16 * 1024 + 1)])
async def test_bad_frames_before_auth_close_4400(gw: Harness, frame: str) -> None:
    ws = await gw.open()
    await ws.send_str(frame)
    await expect_close(ws, 4400, "bad_request")


async def test_binary_frame_before_auth_closes_4400(gw: Harness) -> None:
    ws = await gw.open()
    await ws.send_bytes(b'{"type": "auth"}')
    await expect_close(ws, 4400, "bad_request")


async def test_multibyte_frame_over_16_kib_before_auth_closes_4400(gw: Harness) -> None:
    ws = await gw.open()
    await ws.send_str(json.dumps({"type": "auth", "token": "é" * 9000}, ensure_ascii=False))
    await expect_close(ws, 4400, "bad_request")


async def test_too_many_connections_per_user_closes_4429_and_audits_the_user(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await make_gateway(max_connections_per_user=1)
    await gw.login("alice")
    ws = await gw.open()
    with caplog.at_level(logging.INFO, logger="audit"):
        reply = await auth(ws, gw.tokens.make("alice"))
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "ws_auth_failure"]
    assert (getattr(record, "code", None), getattr(record, "sub", None)) == (
        "too_many_connections",
        "alice",
    )
    assert reply == {
        "type": "auth_error",
        "code": "too_many_connections",
        "message": "too many connections for this user",
        "retry": False,
    }
    await expect_close(ws, 4429, "too_many_connections")
    await gw.login("bob")


async def test_auth_failures_are_audited_without_the_token(
    gw: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    token = gw.tokens.make(aud="api")
    with caplog.at_level(logging.INFO, logger="audit"):
        await refused(gw, token)
    records = [r for r in caplog.records if r.name == "audit"]
    assert [getattr(r, "code", None) for r in records] == ["invalid_token"]
    assert getattr(records[0], "event", None) == "ws_auth_failure"
    assert all(token not in json.dumps(vars(r), default=str) for r in records)
    signature = token.rsplit(".", 1)[1]
    assert all(signature not in json.dumps(vars(r), default=str) for r in records)
