"""Every bad input gets its documented JSON error, never a 500, and changes nothing."""

from __future__ import annotations

import base64
import io
from typing import Any

import jwt
import pytest

from tests.integration.auth.conftest import (
    PASSWORD,
    AuthClient,
    MakeClient,
    login,
    refresh,
    register,
)

NUL_BASIC = "Basic " + base64.b64encode(b"a%00:s").decode()
"""HTTP Basic for the client id ``a\\x00`` (form-urlencoded first, RFC 6749 section 2.3.1)."""


async def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["error"] == code and body["error_description"]
    return body


@pytest.mark.parametrize(
    "username",
    [
        "ab",
        "a" * 65,
        "Alice",
        "alice smith",
        "alice'; DROP TABLE users;--",
        "ålice",
        "alice\u0000",
        "",
    ],
)
async def test_bad_usernames_are_refused(client: AuthClient, username: str) -> None:
    resp = await client.post("/v1/register", json={"username": username, "password": PASSWORD})
    await assert_error(resp, 400, "invalid_request")


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short", "at least 12"), ("x" * 257, "at most 256")],
)
async def test_bad_passwords_are_refused_not_truncated(
    client: AuthClient, password: str, reason: str
) -> None:
    resp = await client.post("/v1/register", json={"username": "alice", "password": password})
    body = await assert_error(resp, 400, "invalid_request")
    assert reason in body["error_description"]
    resp = await client.post("/v1/login", json={"username": "alice", "password": "x" * 12})
    assert resp.status == 401


async def test_a_password_of_256_chars_is_kept_whole(client: AuthClient) -> None:
    password = "p" * 255 + "q"
    await register(client, password=password)
    resp = await client.post("/v1/login", json={"username": "alice", "password": "p" * 256})
    assert resp.status == 401
    await login(client, password=password)


async def test_duplicate_username_is_409(client: AuthClient) -> None:
    await register(client)
    resp = await client.post("/v1/register", json={"username": "alice", "password": PASSWORD})
    await assert_error(resp, 409, "username_taken")


@pytest.mark.parametrize("path", ["/v1/register", "/v1/login"])
@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "invalid_request"),
        (b"username=alice", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"username": "alice"}', {"Content-Type": "application/json"}, 400, "invalid_request"),
        (
            b'{"username": 5, "password": []}',
            {"Content-Type": "application/json"},
            400,
            "invalid_request",
        ),
        (
            b'{"username": "alice", "password": "' + b"x" * 5000 + b'"}',
            {"Content-Type": "application/json"},
            400,
            "invalid_request",
        ),
    ],
)
async def test_malformed_bodies(
    client: AuthClient, path: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    resp = await client.post(path, data=body, headers=headers)
    await assert_error(resp, status, code)


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/v1/login", {"json": {"username": "ab\u0000c", "password": PASSWORD}}),
        ("/v1/register", {"json": {"username": "alice", "password": PASSWORD + "\u0000"}}),
        ("/v1/token", {"data": {"grant_type": "refresh_token", "refresh_token": "a\u0000"}}),
        ("/v1/token", {"data": {"grant_type": "refresh_token", "client_id": "ac\u0000me"}}),
        ("/v1/revoke", {"data": {"token": "t", "client_id": "x\u0000", "client_secret": "s"}}),
        ("/v1/token", {"data": {"grant_type": "x"}, "headers": {"Authorization": NUL_BASIC}}),
    ],
)
async def test_a_nul_character_in_any_field_is_a_bad_request(
    client: AuthClient, path: str, kwargs: dict[str, Any]
) -> None:
    """U+0000 is no part of any name, secret or token, and PostgreSQL's text cannot hold it: it
    answered 503 (try again) for a login or a client_id carrying one (an outside probe)."""
    await assert_error(await client.post(path, **kwargs), 400, "invalid_request")


async def test_ten_megabyte_body_is_413(client: AuthClient) -> None:
    resp = await client.post(
        "/v1/register",
        data=io.BytesIO(b"x" * (10 * 1024 * 1024)),
        headers={"Content-Type": "application/json"},
    )
    await assert_error(resp, 413, "request_too_large")


async def test_registration_can_be_switched_off(make_client: MakeClient) -> None:
    client = await make_client(allow_registration=False)
    resp = await client.post("/v1/register", json={"username": "alice", "password": PASSWORD})
    await assert_error(resp, 403, "registration_disabled")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (
            {"grant_type": "password", "username": "a", "password": "b"},
            400,
            "unsupported_grant_type",
        ),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({}, 400, "invalid_request"),
        ({"grant_type": "refresh_token"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "forged"}, 400, "invalid_grant"),
    ],
)
async def test_token_endpoint_errors(
    client: AuthClient, data: dict[str, str], status: int, code: str
) -> None:
    await assert_error(await client.post("/v1/token", data=data), status, code)


async def test_access_token_is_not_a_refresh_token_and_vice_versa(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    status, body = await refresh(client, tokens["access_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    resp = await client.post(
        "/v1/logout", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )
    await assert_error(resp, 401, "invalid_token")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    status, _ = await refresh(client, tokens["refresh_token"])
    assert status == 200, "the failed attempts changed nothing"


@pytest.mark.parametrize("mangle", ["truncate", "tamper", "garbage", "none_alg"])
async def test_forged_access_tokens_cannot_log_out(client: AuthClient, mangle: str) -> None:
    await register(client)
    tokens = await login(client)
    token = tokens["access_token"]
    if mangle == "truncate":
        forged = token[:-10]
    elif mangle == "tamper":
        head, _, sig = token.split(".")
        claims = jwt.decode(token, options={"verify_signature": False})
        claims["sub"] = "someone-else"
        forged = ".".join(
            [head, jwt.utils.base64url_encode(jwt.utils.force_bytes(str(claims))).decode(), sig]
        )
    elif mangle == "garbage":
        forged = "!!!.@@@.###"
    else:
        claims = jwt.decode(token, options={"verify_signature": False})
        forged = jwt.encode(claims, None, algorithm="none", headers={"typ": "at+jwt"})
    resp = await client.post("/v1/logout", headers={"Authorization": f"Bearer {forged}"})
    await assert_error(resp, 401, "invalid_token")
    status, _ = await refresh(client, tokens["refresh_token"])
    assert status == 200


async def test_refresh_after_logout_and_logout_errors(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    await assert_error(await client.post("/v1/logout"), 400, "invalid_request")
    await assert_error(
        await client.post("/v1/logout", headers={"Authorization": "Basic abc"}),
        401,
        "invalid_token",
    )
    await assert_error(
        await client.post(
            "/v1/logout", json={"refresh_token": tokens["refresh_token"], "all": "yes"}
        ),
        400,
        "invalid_request",
    )
    await assert_error(
        await client.post("/v1/logout", json={"refresh_token": "unknown"}), 400, "invalid_grant"
    )
    resp = await client.post("/v1/logout", json={"refresh_token": tokens["refresh_token"]})
    assert resp.status == 200
    status, body = await refresh(client, tokens["refresh_token"])
    assert status == 400 and body["error_description"] == "the session was revoked"


async def test_unknown_routes_and_methods_are_json(client: AuthClient) -> None:
    await assert_error(await client.get("/nope"), 404, "not_found")
    resp = await client.get("/v1/login")
    await assert_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]
