"""A store that goes away while the service runs: 503 JSON with Retry-After, never a 500, and
never the driver's message (a host, a path) in the body: that goes to the log."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import asyncpg
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


@pytest.mark.postgres
async def test_a_stalled_database_is_503_within_the_database_timeout(
    make_client: MakeClient, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock held elsewhere (or a partition) stalls every statement: each request hung, and once
    the pool's connections were all waiting, /readyz too. Each call is now bounded by
    AUTH_DATABASE_TIMEOUT (the statement is cancelled on the server) and answers 503."""
    client = await make_client(database_url=postgres_url, database_timeout=0.5)
    await register(client)
    holder = await asyncpg.connect(postgres_url)
    try:
        locked = holder.transaction()
        await locked.start()
        await holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                client.post("/v1/login", json={"username": "alice", "password": PASSWORD})
                for _ in range(12)  # more than the pool's 10 connections
            ),
            client.get("/readyz"),
        )
        assert time.monotonic() - started < 5
        statuses = [a.status for a in answers]
        # A login's throttle check reads the database too; concurrent ones may be throttled.
        assert set(statuses[:-1]) <= {503, 429} and 503 in statuses[:-1], statuses
        assert statuses[-1] == 200, "/readyz's SELECT 1 needs no locked table, nor a free slot"
        assert (await answers[0].json())["error"] in (
            "temporarily_unavailable",
            "too_many_attempts",
        )
        await locked.rollback()
    finally:
        await holder.close()
    assert (await login(client))["token_type"] == "Bearer", "the pool recovered"
    reasons = {r.reason for r in caplog.records if r.getMessage() == "request failed"}  # type: ignore[attr-defined]
    assert reasons and "database unavailable: " not in reasons, "a timeout's reason says what"


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
