"""auth_service's access lines and request ids through the real app: the id a client sends comes
back and is in the audit line of what the request did."""

from __future__ import annotations

import json
import re

from tests.integration.auth.conftest import PASSWORD, AuthClient, register
from tests.support.logs import json_lines


async def test_a_login_carries_its_request_id_into_the_audit_line(client: AuthClient) -> None:
    await register(client)
    with json_lines() as logs:
        resp = await client.post(
            "/v1/login?next=/somewhere",
            json={"username": "alice", "password": PASSWORD},
            headers={"X-Request-ID": "login-7f3a"},
        )
    assert resp.status == 200
    assert resp.headers["X-Request-ID"] == "login-7f3a"
    (audit,) = logs.logged("audit", "login_ok")
    assert audit["request_id"] == "login-7f3a"
    (line,) = logs.logged("access")
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v1/login", 200)
    assert line["request_id"] == "login-7f3a"
    tokens = await resp.json()
    text = json.dumps(logs.lines)
    assert tokens["refresh_token"] not in text and PASSWORD not in text


async def test_a_refused_login_gets_a_new_id_for_an_unsafe_one(client: AuthClient) -> None:
    with json_lines() as logs:
        resp = await client.post(
            "/v1/login",
            json={"username": "nobody", "password": PASSWORD},
            headers={"X-Request-ID": "forged\tid"},
        )
    assert resp.status == 401
    new_id = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{16}", new_id)
    assert logs.logged("audit", "login_failed")[0]["request_id"] == new_id
    assert [line["status"] for line in logs.logged("access")] == [401]
