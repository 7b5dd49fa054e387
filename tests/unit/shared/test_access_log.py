"""The access line and the request id (shared/http/access.py, shared/jsonlog.py) on a bare app:
one line per request with nothing secret in it, an id accepted only when it is a safe token."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from shared.http import access
from shared.jsonlog import REQUEST_ID, JsonFormatter
from tests.support.logs import json_lines

Client = TestClient[web.Request, web.Application]
NEW_ID = re.compile(r"[0-9a-f]{16}")


def test_the_formatter_adds_the_request_id_only_while_one_is_set() -> None:
    record = logging.makeLogRecord({"msg": "hello", "name": "x"})
    assert "request_id" not in json.loads(JsonFormatter().format(record))

    def in_a_request() -> dict[str, Any]:
        REQUEST_ID.set("req-1")
        entry: dict[str, Any] = json.loads(JsonFormatter().format(record))
        return entry

    assert contextvars.copy_context().run(in_a_request)["request_id"] == "req-1"
    assert REQUEST_ID.get() is None, "set in the request's context only"


@pytest.mark.parametrize(
    "offered",
    [None, "", "a b", "x" * 65, "id\nforged-line", "ünïcode", '"quoted"', "a;b", "a/b"],
)
def test_an_id_that_is_not_a_safe_token_is_replaced(offered: str | None) -> None:
    assert NEW_ID.fullmatch(access.request_id(offered))


@pytest.mark.parametrize(
    "offered", ["abc", "Trace-1.2_3", "x" * 64, "0af7651916cd43dd8448eb211c80319c"]
)
def test_a_safe_id_is_kept(offered: str) -> None:
    assert access.request_id(offered) == offered


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("handler bug")


async def ok(request: web.Request) -> web.Response:
    logging.getLogger("audit").info("something_happened")
    return web.json_response({"ok": True})


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    app = web.Application()
    access.setup(app)
    app.router.add_get("/ok", ok)
    app.router.add_get("/boom", boom)
    return await aiohttp_client(app)


async def test_one_line_per_request_without_query_or_headers(client: Client) -> None:
    secret_headers = {
        "Authorization": "Bearer an-api-key-0123456789",
        "Cookie": "session=a-session-cookie-value",
        "X-Request-ID": "trace-42",
    }
    with json_lines() as logs:
        resp = await client.get("/ok?ticket=a-ticket-in-the-query", headers=secret_headers)
    assert resp.headers["X-Request-ID"] == "trace-42"
    (line,) = logs.logged("access")
    assert line["msg"] == "request"
    assert {k: line[k] for k in ("method", "path", "status", "request_id")} == {
        "method": "GET",
        "path": "/ok",
        "status": 200,
        "request_id": "trace-42",
    }
    assert isinstance(line["duration_ms"], float)
    text = json.dumps(logs.lines)
    for secret in ("a-ticket", "an-api-key", "a-session-cookie"):
        assert secret not in text
    assert logs.logged("audit", "something_happened")[0]["request_id"] == "trace-42"


async def test_refusals_and_failures_have_their_line_and_id(client: Client) -> None:
    with json_lines() as logs:
        missing = await client.get("/nowhere", headers={"X-Request-ID": "bad id"})
        failed = await client.get("/boom")
    assert missing.status == 404 and failed.status == 500
    assert [line["status"] for line in logs.logged("access")] == [404, 500]
    for resp, line in zip((missing, failed), logs.logged("access"), strict=True):
        assert NEW_ID.fullmatch(resp.headers["X-Request-ID"])
        assert line["request_id"] == resp.headers["X-Request-ID"]


async def test_with_the_access_logger_off_nothing_is_logged_and_the_id_still_returns(
    client: Client,
) -> None:
    with json_lines(logging.WARNING) as logs:
        resp = await client.get("/ok", headers={"X-Request-ID": "trace-43"})
    assert resp.headers["X-Request-ID"] == "trace-43"
    assert logs.lines == []
