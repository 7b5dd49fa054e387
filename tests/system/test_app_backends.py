"""An app backend against two auth replicas sharing one PostgreSQL: a client made with the CLI,
its assertion's jti spent once across replicas."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.system.procs import run_cli
from tests.system.test_auth_processes import SECRET, post, two_replicas

pytestmark = [pytest.mark.system, pytest.mark.postgres]
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


async def test_an_assertion_works_once_across_replicas(postgres_url: str, tmp_path: Path) -> None:
    cli_env = {
        "AUTH_DATABASE_URL": postgres_url,
        "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
        "AUTH_ISSUER": "http://auth.test",
    }
    with two_replicas(postgres_url, tmp_path) as urls:
        out = run_cli(
            "auth_service",
            ["clients", "create", "acme", "--grant", "token-exchange", "--json"],
            cli_env,
        )
        created = json.loads(out)
        basic = aiohttp.encode_basic_auth(created["client_id"], created["client_secret"])
        auth = {"Authorization": basic}

        def form() -> dict[str, str]:
            claims = {
                "iss": "acme",
                "aud": "http://auth.test",
                "sub": "42",
                "exp": int(time.time()) + 60,
                "jti": uuid.uuid4().hex,
            }
            return {
                "grant_type": EXCHANGE,
                "subject_token": jwt.encode(claims, created["client_secret"], "HS256"),
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            }

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            once = form()
            status, tokens = await post(http, f"{urls[0]}/v1/token", data=once, headers=auth)
            assert status == 200, tokens
            status, body = await post(http, f"{urls[1]}/v1/token", data=once, headers=auth)
            assert (status, body["error"]) == (400, "invalid_request"), (
                "replayed on the other replica"
            )
            raced = form()
            results = await asyncio.gather(
                *(
                    post(http, f"{urls[i % 2]}/v1/token", data=raced, headers=auth)
                    for i in range(20)
                )
            )
            assert sorted(status for status, _ in results) == [200] + [400] * 19
            status, _ = await post(
                http,
                f"{urls[1]}/v1/token",
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            )
            assert status == 200, "the other replica refreshes the exchanged session"
            status, body = await post(
                http, f"{urls[1]}/v1/sessions/revoke", data={"sub": "acme:42"}, headers=auth
            )
            assert (status, body) == (200, {"revoked_sessions": 2})
