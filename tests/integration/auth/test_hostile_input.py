"""Hostile encodings reach the one decoding place and come back as 400/401/415 JSON, never a 500.

Each case here once produced a 500 (one of them a text/plain 500): lone UTF-16 surrogates,
nesting thousands deep, non-finite numbers, form bodies in unknown charsets or invalid UTF-8,
undecodable bytes in ``Authorization``.
"""

from __future__ import annotations

import base64
import logging
import secrets
import string
from collections.abc import Awaitable, Callable

import pytest

from tests.integration.auth.conftest import AuthClient, login, register
from tests.integration.auth.test_bad_input import assert_error
from tests.support.raw_http import raw_request

JSON = {"Content-Type": "application/json"}
FORM = "application/x-www-form-urlencoded"
DEEP = "[" * 5000 + "]" * 5000
NEAR_LIMIT = "[" * 900 + "]" * 900


@pytest.mark.parametrize("path", ["/v1/register", "/v1/login", "/v1/token", "/v1/revoke"])
@pytest.mark.parametrize(
    "body",
    [
        '{"username": "\\ud800", "password": "x", "token": "\\ud800", "grant_type": "\\udfff"}',
        '{"\\ud800": 1}',
        DEEP,
        NEAR_LIMIT,
        '{"username": 1e400, "password": "x"}',
        '{"username": "x", "password": "x", "n": ' + "9" * 400 + "}",
        '{"username": NaN}',
        '{"username": "a", "username": "b", "password": "x", "password": "y"}',
    ],
    ids=[
        "surrogate-value",
        "surrogate-key",
        "deep",
        "near-recursion-limit",
        "1e400",
        "integer-of-400-digits",
        "NaN",
        "repeated-member",
    ],
)
async def test_hostile_json_is_400(
    client: AuthClient, path: str, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        resp = await client.post(path, data=body.encode(), headers=JSON)
    refused = await assert_error(resp, 400, "invalid_request")
    # Refused by the decoder, before any field is looked at (a username rule would say 400 too).
    assert "not valid JSON" in refused["error_description"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", ["/v1/token", "/v1/revoke"])
@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        (f"{FORM}; charset=klingon", b"grant_type=refresh_token", 415, "unsupported_media_type"),
        (f"{FORM}; charset=latin-1", b"token=caf%E9", 415, "unsupported_media_type"),
        (FORM, b"grant_type=refresh_token&refresh_token=%ff%fe&token=%ff", 400, "invalid_request"),
        (
            FORM,
            b"grant_type=refresh_token&refresh_token=\xff\xfe&token=\xff",
            400,
            "invalid_request",
        ),
        (FORM, b"token=a&token=b&grant_type=x&grant_type=y", 400, "invalid_request"),
        (f"{FORM}; charset=utf-8", b"grant_type=refresh_token&refresh_token=x&token=x", 0, ""),
    ],
    ids=["unknown-charset", "latin-1", "bad-percent-utf8", "raw-bad-utf8", "repeated", "utf-8"],
)
async def test_form_bodies_are_utf8_only(
    client: AuthClient, path: str, content_type: str, body: bytes, status: int, code: str
) -> None:
    resp = await client.post(path, data=body, headers={"Content-Type": content_type})
    if status == 0:  # the charset parameter is fine when it says UTF-8
        assert resp.status in (200, 400), await resp.text()
        assert (await resp.json()).get("error") in (None, "invalid_grant")
        return
    await assert_error(resp, status, code)


@pytest.mark.parametrize("path", ["/v1/token", "/v1/revoke"])
async def test_oauth_endpoints_without_a_body_are_400_invalid_request(
    client: AuthClient, path: str
) -> None:
    """RFC 6749 section 5.2: a missing parameter is ``invalid_request``, whatever the media type."""
    await assert_error(await client.post(path), 400, "invalid_request")


@pytest.mark.parametrize("path", ["/v1/logout", "/v1/ws-ticket"])
@pytest.mark.parametrize(
    "value",
    [b"Bearer caf\xc3", b"Bearer \xff\xfe\xfd", "Bearer café".encode()],
    ids=["truncated-utf8", "not-utf8", "non-ascii"],
)
async def test_undecodable_authorization_is_401(
    client: AuthClient, path: str, value: bytes
) -> None:
    assert client.server.port is not None
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + value
        + b"\r\n\r\n"
    )
    resp = await raw_request("127.0.0.1", client.server.port, request)
    assert resp.status == 401, resp.body
    assert resp.content_type == "application/json"
    assert resp.json()["error"] == "invalid_token"


async def test_undecodable_csrf_header_is_403(client: AuthClient) -> None:
    await register(client)
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": "correct horse battery staple", "session": "cookie"},
        headers={"Origin": "http://auth.test"},
    )
    assert resp.status == 200, await resp.text()
    cookies = "; ".join(f"{c.key}={c.value}" for c in client.session.cookie_jar)
    assert client.server.port is not None
    request = (
        b"POST /v1/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Origin: http://auth.test\r\nX-CSRF-Token: \xff\xfe\r\n"
        + f"Cookie: {cookies}\r\nContent-Type: {FORM}\r\nContent-Length: 24\r\n\r\n".encode()
        + b"grant_type=refresh_token"
    )
    resp = await raw_request("127.0.0.1", client.server.port, request)
    assert resp.status == 403, resp.body
    assert resp.json()["error"] == "csrf_failed"


async def test_undecodable_forwarded_for_is_ignored(client: AuthClient) -> None:
    """A trusted proxy passes on what the client sent: a hop that is no address is not used."""
    assert client.server.port is not None
    await register(client)
    body = b'{"username": "alice", "password": "wrong password here"}'
    request = (
        b"POST /v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: \xff\xfe\r\n"
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    resp = await raw_request("127.0.0.1", client.server.port, request)
    assert resp.status == 401, resp.body
    await login(client)


async def test_json_bodies_end_with_a_newline_and_are_ascii(client: AuthClient) -> None:
    resp = await client.get("/healthz")
    assert (await resp.read()).endswith(b"}\n")
    resp = await client.post("/v1/register", json={"username": "ålice", "password": "x" * 12})
    raw = await resp.read()
    assert raw.isascii() and raw.endswith(b"\n")


async def test_a_name_too_long_for_an_index_is_refused_and_counted(
    make_client: Callable[..., Awaitable[AuthClient]], database_url: str
) -> None:
    """The throttle keys each attempt by the name typed, a login's username (up to 4,096
    characters) or a client id (an HTTP Basic header's, as long as the header): PostgreSQL's
    B-tree refuses an index entry past 2,704 bytes, so an incompressible name that long was a 503
    ("database unavailable", an error line) for anyone, counted nowhere, where a wrong name is
    401. The name is keyed by its hash past a bound: refused and counted as any wrong name."""
    client = await make_client(database_url=database_url)
    long_name = "".join(secrets.choice(string.ascii_letters) for _ in range(4000))
    address = {"X-Forwarded-For": "10.9.8.7"}
    for _ in range(10):
        resp = await client.post(
            "/v1/login", json={"username": long_name, "password": "x" * 12}, headers=address
        )
        await assert_error(resp, 401, "invalid_grant")
    resp = await client.post(
        "/v1/login", json={"username": long_name, "password": "x" * 12}, headers=address
    )
    await assert_error(resp, 429, "too_many_attempts")
    basic = base64.b64encode(f"{long_name}:secret".encode()).decode()
    resp = await client.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        headers={"Authorization": f"Basic {basic}"},
    )
    await assert_error(resp, 401, "invalid_client")
