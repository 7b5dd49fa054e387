"""A store that goes away while the service runs: 503 JSON with Retry-After, never a 500, and
never the driver's message (a host, a path) in the body: that goes to the log."""

from __future__ import annotations

import json
import logging

import pytest

from auth_service.appkeys import STORE
from auth_service.domain.errors import KeyRingError
from auth_service.http import auth_error_response
from tests.integration.auth.conftest import PASSWORD, MakeClient, login, register


async def test_requests_get_503_with_retry_after_when_the_store_drops(
    make_client: MakeClient, database_url: str, caplog: pytest.LogCaptureFixture
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
        body = await resp.json()
        assert body["error"] == "temporarily_unavailable"
        assert body["error_description"].startswith("the service cannot answer this right now")
    reasons = [r.reason for r in caplog.records if r.getMessage() == "request failed"]  # type: ignore[attr-defined]
    assert len(reasons) == 4 and all(r.startswith("database unavailable: ") for r in reasons)
    ready = await client.get("/readyz")
    assert ready.status == 503


def test_a_server_side_failure_says_internal_error_and_logs_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client secret that no configured key-encryption secret opens is the operator's problem:
    the client is not told which secret or client it was."""
    reason = (
        "key client:app: none of AUTH_KEY_ENCRYPTION_SECRETS decrypts it (was a secret removed?)"
    )
    with caplog.at_level(logging.ERROR):
        response = auth_error_response(KeyRingError(reason))
    assert response.status == 500
    assert json.loads(response.text) == {
        "error": "server_error",
        "error_description": "internal error",
    }
    assert [r.reason for r in caplog.records] == [reason]  # type: ignore[attr-defined]
