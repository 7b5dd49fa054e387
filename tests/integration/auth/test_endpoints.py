"""Discovery, health and metrics endpoints."""

from __future__ import annotations

from tests.integration.auth.conftest import AuthClient, MakeClient, login, register


async def test_jwks_publishes_public_fields_only(client: AuthClient) -> None:
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    (key,) = (await resp.json())["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "use", "alg"}
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"


async def test_jwks_max_age_follows_settings(make_client: MakeClient) -> None:
    client = await make_client(jwks_max_age=42)
    resp = await client.get("/.well-known/jwks.json")
    assert resp.headers["Cache-Control"] == "public, max-age=42"


async def test_authorization_server_metadata(client: AuthClient) -> None:
    body = await (await client.get("/.well-known/oauth-authorization-server")).json()
    assert body["issuer"] == "http://auth.test"
    assert body["jwks_uri"] == "http://auth.test/.well-known/jwks.json"
    assert body["token_endpoint"] == "http://auth.test/v1/token"
    assert body["revocation_endpoint"] == "http://auth.test/v1/revoke"
    assert "refresh_token" in body["grant_types_supported"]


async def test_health_readiness_and_metrics(client: AuthClient) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json()) == {
        "ready": True,
        "checks": {"database": "ok", "signing_key": "ok"},
        "degraded": {},
    }
    await register(client)
    await login(client)
    await client.post("/v1/login", json={"username": "alice", "password": "wrong password!"})
    text = await (await client.get("/metrics")).text()
    assert 'auth_logins_total{outcome="ok"} 1.0' in text
    assert 'auth_logins_total{outcome="invalid_grant"} 1.0' in text
    assert 'auth_tokens_issued_total{grant="password"} 1.0' in text
    assert "auth_key_rotations_total 1.0" in text
    assert (
        'auth_http_request_duration_seconds_count{method="POST",route="/v1/login",status="200"}'
        in text
    )
