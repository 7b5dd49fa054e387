"""The HTTP side: server-side publishing with API keys, health, readiness, JSON errors."""

from __future__ import annotations

import io

import pytest

from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, recv, send

KEY = "test-api-key-0123456789"


async def test_publish_with_api_key_reaches_a_user_channel_from_null(gw: Harness) -> None:
    ws = await gw.login("alice", scope="")
    await send(ws, {"type": "subscribe", "channel": "user:alice"})
    await recv(ws)
    response = await gw.client.post(
        "/v1/publish",
        json={"channel": "user:alice", "data": {"note": "hello"}},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status == 202
    assert await response.json() == {"published": True, "channel": "user:alice"}
    message = await recv(ws)
    assert (message["type"], message["from"], message["from_username"], message["data"]) == (
        "message",
        None,
        None,
        {"note": "hello"},
    )


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-key-0123456789", f"Basic {KEY}", "Bearer ", KEY]
)
async def test_publish_without_a_valid_key_is_401(gw: Harness, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await gw.client.post(
        "/v1/publish", json={"channel": "chat:a", "data": 1}, headers=headers
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await response.json() == {
        "error": "invalid_token",
        "error_description": "a valid API key is required",
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "bad_request"),
        (b"[1]", "bad_request"),
        (b'{"channel": "chat:a"}', "bad_request"),
        (b'{"channel": "nope", "data": 1}', "invalid_channel"),
        (b'{"channel": "chat:a b", "data": 1}', "invalid_channel"),
        (b"[" * 100000, "bad_request"),
    ],
)
async def test_publish_bad_input_is_a_json_400(gw: Harness, body: bytes, code: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    response = await gw.client.post("/v1/publish", data=body, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"] == code


async def test_http_errors_are_json(gw: Harness) -> None:
    for method, path, status in [("GET", "/v1/publish", 405), ("GET", "/nope", 404)]:
        response = await gw.client.request(method, path)
        assert response.status == status
        assert response.content_type == "application/json"
        assert set(await response.json()) == {"error", "error_description"}
    too_big = await gw.client.post(
        "/v1/publish",
        data=io.BytesIO(b"x" * (2 * 1024 * 1024)),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert too_big.status == 413
    assert (await too_big.json())["error"] == "request_too_large"


async def test_health_and_readiness(gw: Harness) -> None:
    health = await gw.client.get("/healthz")
    assert (health.status, await health.json()) == (200, {"status": "ok"})
    ready = await gw.client.get("/readyz")
    assert (ready.status, await ready.json()) == (
        200,
        {"ready": True, "checks": {"signing_keys": "ok"}, "degraded": {}},
    )


async def test_a_disabled_publish_api_says_so(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(api_keys=())
    response = await gw.client.post(
        "/v1/publish",
        json={"channel": "chat:a", "data": 1},
        headers={"Authorization": "Bearer some-key-0123456789"},
    )
    assert response.status == 403
    body = await response.json()
    assert body["error"] == "publish_disabled" and "WS_API_KEYS" in body["error_description"]
