"""The subscribe and publish proxies against a real aiohttp application: signed calls (verified on
the receiving side with ``signatures.verify``), allow, deny, replaced data, and every way an
answer can fail to come (slow, garbage, 30 MB, an error status, a redirect, unreachable), each
refused with ``proxy_unavailable``. Also the bound on calls in flight, and the storm: 10,000
re-subscribes after a reconnect reach the application once per user and channel."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from realtime_gateway_protocol.signatures import HEADER, verify
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, expect_open, recv, send, wait_until

SECRET = "proxy-secret-0123456789"
MB = 1024 * 1024

Answer = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


async def allow(body: dict[str, Any]) -> web.StreamResponse:
    return web.json_response({"allow": True})


@dataclass
class App:
    """The application's backend: answers with ``answer``, checks every signature, keeps every
    question, and counts the calls in flight."""

    answer: Answer = allow
    questions: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not verify(request.headers.get(HEADER), raw, [SECRET]):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        body = json.loads(raw)
        self.questions.append(body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.answer(body)
        finally:
            self.in_flight -= 1

    def pairs(self) -> Counter[tuple[str, str]]:
        return Counter((q["user"]["id"], q["channel"]) for q in self.questions)


@pytest.fixture
async def backend(aiohttp_server: Any) -> tuple[App, str]:
    app = App()
    server_app = web.Application()
    server_app.router.add_post("/rt/{action}", app.handle)
    server = await aiohttp_server(server_app)
    return app, str(server.make_url("/rt"))


async def gateway_for(make_gateway: MakeGateway, base: str, **overrides: Any) -> Harness:
    proxy = {"doc": {"subscribe": f"{base}/subscribe", "publish": f"{base}/publish"}}
    settings = {"proxy": proxy, "proxy_secrets": (SECRET,), "proxy_timeout": 1.0, **overrides}
    return await make_gateway(**settings)


async def subscribe(ws: Any, channel: str = "doc:1") -> dict[str, Any]:
    await send(ws, {"type": "subscribe", "channel": channel, "id": 1})
    return await recv(ws)


@pytest.fixture
async def proxied(make_gateway: MakeGateway, backend: tuple[App, str]) -> tuple[App, Harness]:
    app, base = backend
    return app, await gateway_for(make_gateway, base)


async def test_an_allowed_subscribe_is_a_signed_question(proxied: tuple[App, Harness]) -> None:
    app, gw = proxied
    ws = await gw.login("alice", scope="doc:read")
    assert await subscribe(ws) == {"type": "subscribed", "channel": "doc:1", "id": 1}
    [question] = app.questions
    assert question.pop("id") != ""
    assert question == {
        "action": "subscribe",
        "user": {"id": "alice", "username": "Alice"},
        "session": "sid-alice",
        "channel": "doc:1",
    }
    assert app.bad_signatures == 0


async def test_a_denial_is_forbidden_with_the_apps_reason(proxied: tuple[App, Harness]) -> None:
    app, gw = proxied

    async def deny(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"allow": False, "reason": "not a member of doc 1"})

    app.answer = deny
    ws = await gw.login("alice", scope="doc:read")
    reply = await subscribe(ws)
    assert (reply["type"], reply["code"], reply["message"]) == (
        "error",
        "forbidden",
        "not a member of doc 1",
    )


async def test_the_app_may_replace_a_publishs_data(proxied: tuple[App, Harness]) -> None:
    app, gw = proxied

    async def enrich(body: dict[str, Any]) -> web.StreamResponse:
        if body["action"] == "subscribe":
            return web.json_response({"allow": True})
        return web.json_response({"allow": True, "data": {"text": body["data"], "checked": True}})

    app.answer = enrich
    ws = await gw.login("alice", scope="doc:read doc:write")
    await subscribe(ws)
    await send(ws, {"type": "publish", "channel": "doc:1", "data": "hi", "id": 2})
    message = await recv(ws)
    assert (message["type"], message["data"]) == ("message", {"text": "hi", "checked": True})
    assert await recv(ws) == {"type": "published", "channel": "doc:1", "id": 2}
    assert app.questions[-1]["data"] == "hi"


def huge(size: int) -> Answer:
    """An answer of ``size`` bytes with its Content-Length."""

    async def answer(body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(body=b'{"allow": true, "x": "' + b"a" * size + b'"}')

    return answer


def text(status: int, body: str, **headers: str) -> Answer:
    async def answer(question: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=status, text=body, headers=headers)

    return answer


async def never(body: dict[str, Any]) -> web.StreamResponse:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "answer",
    [
        never,
        text(200, "not json"),
        text(200, '{"allow": "yes"}'),
        text(200, '{"allow": true, "x": NaN}'),
        text(200, '{"allow": false, "allow": true}'),
        text(200, "[true]"),
        text(200, json.dumps({"allow": False, "reason": "r" * 257})),
        text(500, '{"allow": true}'),
        text(302, "", Location="http://elsewhere.test/"),
        huge(30 * MB),
    ],
    ids=[
        "slow",
        "garbage",
        "allow-not-bool",
        "nan",
        "allow-twice",
        "not-object",
        "long-reason",
        "500",
        "302",
        "30MB",
    ],
)
async def test_no_answer_fails_closed(proxied: tuple[App, Harness], answer: Answer) -> None:
    app, gw = proxied
    app.answer = answer
    ws = await gw.login("alice", scope="doc:read doc:write")
    reply = await subscribe(ws)
    assert (reply["type"], reply["code"]) == ("error", "proxy_unavailable")
    await send(ws, {"type": "publish", "channel": "doc:1", "data": 1, "id": 2})
    assert (await recv(ws))["code"] == "proxy_unavailable"
    await expect_open(ws)


async def test_a_30_mb_stream_is_cut_off(aiohttp_server: Any, make_gateway: MakeGateway) -> None:
    """Without a Content-Length the answer is read up to the bound, then dropped."""
    sent: list[int] = []

    async def flood(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"a" * MB
        try:
            for _ in range(30):
                await response.write(chunk)
                sent.append(len(chunk))
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    server_app = web.Application()
    server_app.router.add_post("/rt/{action}", flood)
    server = await aiohttp_server(server_app)
    gw = await gateway_for(make_gateway, str(server.make_url("/rt")))
    ws = await gw.login("alice", scope="doc:read")
    assert (await subscribe(ws))["code"] == "proxy_unavailable"
    await expect_open(ws)
    assert sum(sent) < 30 * MB, "the gateway stopped reading long before the end"


async def test_an_unreachable_app_fails_closed(make_gateway: MakeGateway) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gw = await gateway_for(make_gateway, f"http://127.0.0.1:{port}/rt")
    ws = await gw.login("alice", scope="doc:read")
    assert (await subscribe(ws))["code"] == "proxy_unavailable"
    counts = await (await gw.client.get("/metrics")).text()
    assert re.search(
        r'ws_proxy_requests_total\{action="subscribe",outcome="unavailable"\} 1', counts
    )


async def test_an_unreachable_apps_credentials_stay_out_of_the_log(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy URL may carry a user, a password and a key; the warning names the URL without
    them (an outside probe read all three in the line)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://gw:Pr0xyPassw0rd@127.0.0.1:{port}/rt"
    proxy = {"doc": {"subscribe": f"{base}/subscribe?api_key=QueryS3cret&v=1"}}
    gw = await make_gateway(proxy=proxy, proxy_secrets=(SECRET,), proxy_timeout=1.0)
    ws = await gw.login("alice", scope="doc:read")
    with caplog.at_level(logging.WARNING, logger="ws_service.proxy"):
        assert (await subscribe(ws))["code"] == "proxy_unavailable"
    [record] = [r for r in caplog.records if r.name == "ws_service.proxy"]
    assert record.url == f"http://***@127.0.0.1:{port}/rt/subscribe?api_key=***&v=1"  # type: ignore[attr-defined]
    assert "Pr0xy" not in caplog.text and "QueryS3cret" not in caplog.text


async def test_calls_in_flight_are_bounded(
    make_gateway: MakeGateway, backend: tuple[App, str]
) -> None:
    app, base = backend
    release = asyncio.Event()

    async def held(body: dict[str, Any]) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"allow": True})

    app.answer = held
    gw = await gateway_for(make_gateway, base, proxy_max_in_flight=2, proxy_timeout=5.0)
    sockets = [await gw.login(f"user{n}", scope="doc:read") for n in range(5)]
    for ws in sockets:
        await send(ws, {"type": "subscribe", "channel": "doc:1", "id": 1})
    await wait_until(lambda: app.in_flight == 2)
    await expect_open(await gw.login("other", scope="chat:read"))
    assert len(app.questions) == 2
    release.set()
    for ws in sockets:
        assert (await recv(ws))["type"] == "subscribed"
    assert app.most_in_flight == 2


async def test_a_reconnect_storm_reaches_the_app_once_per_user_and_channel(
    make_gateway: MakeGateway, backend: tuple[App, str]
) -> None:
    """The measurement: 50 users with 2 sockets each subscribe to 5 channels (250 user and
    channel pairs), every socket goes, 100 new ones come back and re-subscribe 20 times each:
    10,000 re-subscribes. The application is asked 250 times in all, once per pair."""
    app, base = backend
    gw = await gateway_for(
        make_gateway, base, proxy_cache_ttl=600.0, rate_per_second=1000.0, rate_burst=1000
    )
    users = [f"u{n}" for n in range(50)]
    channels = [f"doc:{n}" for n in range(5)]

    async def connect_and_subscribe(rounds: int) -> int:
        sockets = [await gw.login(user, scope="doc:read") for user in users for _ in range(2)]

        async def one(ws: Any) -> int:
            frames = [{"type": "subscribe", "channel": c} for c in channels for _ in range(rounds)]
            for frame in frames:
                await send(ws, frame)
            replies = [await recv(ws, wait=30) for _ in frames]
            assert {reply["type"] for reply in replies} == {"subscribed"}, replies[-1]
            await ws.close()
            return len(replies)

        return sum(await asyncio.gather(*(one(ws) for ws in sockets)))

    assert await connect_and_subscribe(1) == 500
    assert len(app.questions) == 250
    assert await connect_and_subscribe(20) == 10_000
    assert len(app.questions) == 250
    assert set(app.pairs().values()) == {1}
