"""A store that goes away while the service runs: 503 JSON with Retry-After, never a 500."""

from __future__ import annotations

from auth_service.appkeys import STORE
from tests.integration.auth.conftest import PASSWORD, MakeClient, login, register


async def test_requests_get_503_with_retry_after_when_the_store_drops(
    make_client: MakeClient, database_url: str
) -> None:
    client = await make_client(database_url=database_url)
    await register(client)
    tokens = await login(client)
    await client.app[STORE].close()
    for path, body in (
        ("/v1/login", {"username": "alice", "password": PASSWORD}),
        ("/v1/register", {"username": "bob", "password": PASSWORD}),
        ("/v1/token", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}),
        ("/v1/logout", {"refresh_token": tokens["refresh_token"]}),
    ):
        resp = await client.post(path, json=body)
        assert resp.status == 503, (path, await resp.text())
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"] == "temporarily_unavailable"
    ready = await client.get("/readyz")
    assert ready.status == 503
