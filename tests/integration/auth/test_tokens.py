"""Login, refresh rotation, reuse detection and revocation through the real app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import jwt
import pytest

from auth_service.app import create_app
from auth_service.settings import Settings
from realtime_gateway_protocol.events import RevocationEvent, SessionRevoked, UserRevoked
from shared.bus import InProcessBus
from tests.integration.auth.conftest import (
    PASSWORD,
    AuthClient,
    MakeClient,
    login,
    refresh,
    register,
)


async def test_access_token_verifies_with_plain_pyjwt_and_the_jwks(client: AuthClient) -> None:
    user_id = await register(client)
    body = await login(client)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "chat:read chat:write" and body["refresh_expires_in"] == 1209600
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(
        body["access_token"], key, algorithms=["RS256"], audience="ws", issuer="http://auth.test"
    )
    assert claims["sub"] == user_id and claims["preferred_username"] == "alice"
    assert claims["exp"] - claims["iat"] == 300
    assert {"jti", "sid", "scope"} <= claims.keys()
    assert len(body["refresh_token"]) >= 43 and "." not in body["refresh_token"]


async def test_token_responses_are_not_cached(client: AuthClient) -> None:
    await register(client)
    resp = await client.post("/v1/login", json={"username": "alice", "password": PASSWORD})
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Pragma"] == "no-cache"


async def test_wrong_password_and_unknown_user_look_the_same(client: AuthClient) -> None:
    await register(client)
    bodies = []
    for username in ("alice", "mallory"):
        resp = await client.post("/v1/login", json={"username": username, "password": "x" * 12})
        assert resp.status == 401
        bodies.append(await resp.json())
    assert (
        bodies[0]
        == bodies[1]
        == {
            "error": "invalid_grant",
            "error_description": "invalid username or password",
        }
    )


async def test_refresh_rotates_and_accepts_json_and_form(client: AuthClient) -> None:
    await register(client)
    first = await login(client)
    status, second = await refresh(client, first["refresh_token"])
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    resp = await client.post(
        "/v1/token",
        json={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
    )
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    third = await resp.json()
    old_claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    new_claims = jwt.decode(third["access_token"], options={"verify_signature": False})
    assert old_claims["sid"] == new_claims["sid"]


async def test_reuse_within_grace_is_refused_without_revoking(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    await register(client)
    first = await login(client)
    status, second = await refresh(client, first["refresh_token"])
    assert status == 200
    status, body = await refresh(client, first["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    status, _ = await refresh(client, second["refresh_token"])
    assert status == 200
    assert events == []


async def test_reuse_after_grace_revokes_the_whole_family(
    make_client: MakeClient, events: list[RevocationEvent]
) -> None:
    client = await make_client(refresh_reuse_grace=0)
    await register(client)
    first = await login(client)
    _, second = await refresh(client, first["refresh_token"])
    await asyncio.sleep(0.01)
    status, body = await refresh(client, first["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert "revoked" in body["error_description"]
    status, body = await refresh(client, second["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    assert next(e for e in events if isinstance(e, SessionRevoked)).sid == sid
    metrics = await (await client.get("/metrics")).text()
    assert "auth_refresh_reuse_detected_total 1.0" in metrics


async def test_concurrent_refreshes_yield_exactly_one_success(client: AuthClient) -> None:
    await register(client)
    first = await login(client)
    results = await asyncio.gather(*(refresh(client, first["refresh_token"]) for _ in range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [400] * 19


async def test_logout_with_access_token_revokes_the_session(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    user_id = await register(client)
    tokens = await login(client)
    resp = await client.post(
        "/v1/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 200 and (await resp.json())["status"] == "logged_out"
    status, body = await refresh(client, tokens["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    (event,) = events
    assert isinstance(event, SessionRevoked) and event.sub == user_id
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert event.sid == claims["sid"] and event.until >= claims["exp"]


async def test_logout_everywhere_revokes_every_session_and_the_user(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    user_id = await register(client)
    a, b = await login(client), await login(client)
    resp = await client.post("/v1/logout", json={"refresh_token": a["refresh_token"], "all": True})
    assert resp.status == 200
    for tokens in (a, b):
        status, _ = await refresh(client, tokens["refresh_token"])
        assert status == 400
    assert {e.sid for e in events if isinstance(e, SessionRevoked)} == {
        jwt.decode(t["access_token"], options={"verify_signature": False})["sid"] for t in (a, b)
    }
    (user_event,) = [e for e in events if isinstance(e, UserRevoked)]
    assert user_event.sub == user_id and user_event.until > user_event.issued_before


async def test_revoke_endpoint_follows_rfc7009(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    resp = await client.post("/v1/revoke", data={"token": "not-a-token"})
    assert resp.status == 200
    resp = await client.post(
        "/v1/revoke", data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}
    )
    assert resp.status == 200
    status, _ = await refresh(client, tokens["refresh_token"])
    assert status == 400
    resp = await client.post("/v1/revoke", data={})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"


async def test_revoking_an_access_token_revokes_its_session(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    resp = await client.post("/v1/revoke", json={"token": tokens["access_token"]})
    assert resp.status == 200
    status, _ = await refresh(client, tokens["refresh_token"])
    assert status == 400


async def test_expired_refresh_token_is_refused(
    aiohttp_client: Callable[..., Awaitable[AuthClient]],
    make_settings: Callable[..., Settings],
    bus: InProcessBus,
) -> None:
    now = [time.time()]
    app = create_app(make_settings(refresh_token_ttl=1), bus=bus, clock=lambda: now[0])
    client = await aiohttp_client(app)
    await register(client)
    tokens = await login(client)
    now[0] += 1.1
    status, body = await refresh(client, tokens["refresh_token"])
    assert status == 400 and body == {
        "error": "invalid_grant",
        "error_description": "the refresh token has expired",
    }


async def test_scope_can_be_narrowed_but_not_widened(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    resp = await client.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "admin",
        },
    )
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_scope"
    resp = await client.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "scope": "chat:read",
        },
    )
    assert resp.status == 200 and (await resp.json())["scope"] == "chat:read"


@pytest.mark.parametrize("scope", ["", " "])
async def test_an_empty_scope_asks_for_none(client: AuthClient, scope: str) -> None:
    """As in a token exchange (an app's token that carries its grants and nothing else): an
    empty scope narrows to no scope, it is not read as no parameter."""
    await register(client)
    tokens = await login(client)
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    resp = await client.post("/v1/token", data={**data, "scope": scope})
    assert resp.status == 200 and (await resp.json())["scope"] == ""


@pytest.mark.parametrize("addresses", [("10.0.0.1",) * 11, ("10.0.0.1",) * 10 + ("10.0.0.2",)])
async def test_failed_logins_are_throttled_per_account_and_address(
    client: AuthClient, addresses: tuple[str, ...]
) -> None:
    await register(client)
    for address in addresses[:10]:
        resp = await client.post(
            "/v1/login",
            json={"username": "alice", "password": "wrong password!"},
            headers={"X-Forwarded-For": address},
        )
        assert resp.status == 401
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": addresses[10]},
    )
    if addresses[10] == addresses[0]:
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"] == "too_many_attempts"
    else:
        assert resp.status == 200, "an attacker elsewhere must not lock the real user out"


async def test_a_forwarded_for_line_of_the_client_s_own_is_not_its_address(
    client: AuthClient,
) -> None:
    """A proxy that adds its own X-Forwarded-For line after the client's (HAProxy's ``option
    forwardfor``) names the client in the last line: the first line alone, the client's own,
    let an attacker at 10.0.0.9 lock alice out of her address by naming it there."""
    await register(client)
    for _ in range(10):
        resp = await client.post(
            "/v1/login",
            json={"username": "alice", "password": "wrong password!"},
            headers=[("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "10.0.0.9")],
        )
        assert resp.status == 401
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert resp.status == 200, "the attacker's failures were counted under alice's address"
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD},
        headers=[("X-Forwarded-For", "203.0.113.8"), ("X-Forwarded-For", "10.0.0.9")],
    )
    assert resp.status == 429, "the attacker's own address is throttled"


async def test_one_address_spraying_many_accounts_is_throttled(make_client: MakeClient) -> None:
    client = await make_client()
    for i in range(100):
        resp = await client.post(
            "/v1/login",
            json={"username": f"user{i:03}", "password": "wrong password!"},
            headers={"X-Forwarded-For": "10.9.9.9"},
        )
        assert resp.status == 401
    resp = await client.post(
        "/v1/login",
        json={"username": "someone", "password": "wrong password!"},
        headers={"X-Forwarded-For": "10.9.9.9"},
    )
    assert resp.status == 429


async def test_wildcard_trusts_forwarded_for_from_any_proxy(make_client: MakeClient) -> None:
    client = await make_client(forwarded_allow_ips=("*",))
    await register(client)
    for _ in range(10):
        await client.post(
            "/v1/login",
            json={"username": "alice", "password": "wrong password!"},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "203.0.113.8"},
    )
    assert resp.status == 200, "the forwarded address, not the proxy's, is what was throttled"
