"""ws_service's access lines and request ids through the real app: a socket's audit lines carry
its handshake's id, and its session ends in one line saying how (code, reason, frames)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import aiohttp
import pytest

from realtime_gateway_protocol.close_codes import Disconnect
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, auth, expect_close, recv, send, wait_until
from tests.support.logs import JsonLines, json_lines
from ws_service.appkeys import SOCKETS
from ws_service.domain import gateway
from ws_service.domain.deadlines import Deadlines


def session_line(logs: JsonLines) -> dict[str, Any]:
    (line,) = logs.logged("access", "websocket session")
    return line


async def test_a_refused_token_is_audited_under_the_handshakes_id(gw: Harness) -> None:
    with json_lines() as logs:
        ws = await gw.client.ws_connect("/ws", headers={"X-Request-ID": "sock-1"})
        assert ws._response.headers["X-Request-ID"] == "sock-1"
        reply = await auth(ws, "not-a-token")
        assert reply["type"] == "auth_error"
        invalid = Disconnect.INVALID_TOKEN
        await expect_close(ws, invalid.code, invalid.reason)
        await wait_until(lambda: logs.logged("access"))
    (audit,) = logs.logged("audit", "ws_auth_failure")
    assert audit["request_id"] == "sock-1"
    line = session_line(logs)
    assert {k: line[k] for k in ("method", "path", "status", "request_id")} == {
        "method": "GET",
        "path": "/ws",
        "status": 101,
        "request_id": "sock-1",
    }
    assert (line["close_code"], line["close_reason"]) == (invalid.code, invalid.reason)
    assert (line["frames_in"], line["frames_out"]) == (1, 1)


async def test_deadlines_sharing_a_timer_are_audited_under_each_sockets_own_id(
    make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sockets whose auth deadlines share a tick share its loop timer, which runs in the
    context of the socket that set it: the other's auth timeout must not be logged under the
    request id the first one chose. A half-second tick, and the sockets opened at its start, put
    both deadlines in one tick for certain."""
    tick = 0.5
    monkeypatch.setattr(gateway, "Deadlines", functools.partial(Deadlines, tick=tick))
    gw = await make_gateway(auth_timeout=0.1)
    await asyncio.sleep(tick - asyncio.get_running_loop().time() % tick + 0.01)
    ids = ["ATTACKER-CHOSEN-ID", "victim-own-id"]
    with json_lines() as logs:
        for request_id in ids:
            await gw.client.ws_connect("/ws", headers={"X-Request-ID": request_id})
        await wait_until(lambda: len(logs.logged("access")) == 2)
    timeouts = logs.logged("audit", "ws_auth_failure")
    assert sorted(line["request_id"] for line in timeouts) == sorted(ids)
    assert {line["code"] for line in timeouts} == {"auth_timeout"}
    assert sorted(line["request_id"] for line in logs.logged("access")) == sorted(ids)


async def test_a_session_the_client_closes_reports_its_code_reason_and_frames(gw: Harness) -> None:
    with json_lines() as logs:
        ws = await gw.login()
        for n in range(3):
            await send(ws, {"type": "ping", "id": str(n)})
            assert (await recv(ws))["type"] == "pong"
        await ws.close(code=4100, message=b"done here")
        await wait_until(lambda: logs.logged("access"))
    line = session_line(logs)
    assert (line["close_code"], line["close_reason"]) == (4100, "done here")
    assert (line["frames_in"], line["frames_out"]) == (4, 4), "auth and 3 pings; their replies"
    assert line["duration_ms"] >= 0
    assert not logs.logged("access", "request"), "one line for the socket, at its end"


async def test_a_refused_upgrade_is_an_ordinary_access_line(gw: Harness) -> None:
    with json_lines() as logs:
        resp = await gw.client.get("/ws", headers={"Origin": "https://evil.example"})
    assert resp.status == 403
    (line,) = logs.logged("access", "request")
    assert (line["path"], line["status"]) == ("/ws", 403)
    assert logs.logged("audit", "ws_origin_refused")[0]["request_id"] == line["request_id"]
    assert resp.headers["X-Request-ID"] == line["request_id"]


async def test_refused_upgrades_are_audited_with_the_forwarded_address(
    make_gateway: MakeGateway,
) -> None:
    """Behind a trusted proxy the audit lines of refused upgrades named the proxy, while
    ws_auth_failure and ws_unauthenticated_limit named the client: a bad ticket's source was
    lost to the one address every client shares."""
    gw = await make_gateway(forwarded_allow_ips=("127.0.0.1",))
    forwarded = {"X-Forwarded-For": "198.51.100.23"}
    with json_lines() as logs:
        resp = await gw.client.get("/ws", headers={"Origin": "https://evil.example", **forwarded})
        assert resp.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await gw.client.ws_connect("/ws?ticket=bogus", headers=forwarded)
    (origin,) = logs.logged("audit", "ws_origin_refused")
    (ticket,) = logs.logged("audit", "ws_handshake_refused")
    assert origin["remote"] == ticket["remote"] == "198.51.100.23"


async def test_a_refused_server_api_call_is_audited_with_the_forwarded_address(
    make_gateway: MakeGateway,
) -> None:
    """Behind a trusted proxy ws_api_unauthorized named the proxy, the one address every caller
    shares, while every refused upgrade names the client: a wrong API key's source was lost."""
    gw = await make_gateway(forwarded_allow_ips=("127.0.0.1",))
    with json_lines() as logs:
        resp = await gw.client.post(
            "/v1/publish",
            json={"channel": "chat:x", "data": {}},
            headers={
                "Authorization": "Bearer wrong-key-0123456789",
                "X-Forwarded-For": "198.51.100.23",
            },
        )
        assert resp.status == 401
    (refused,) = logs.logged("audit", "ws_api_unauthorized")
    assert refused["remote"] == "198.51.100.23"


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines a suspended task is inside, outermost first."""
    names, coro = [], task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_name)
        coro = coro.cr_await
    return names


async def test_an_open_socket_keeps_no_middleware_frame_of_its_own(gw: Harness) -> None:
    """A socket's request lasts as long as the socket: a middleware awaiting it would keep a
    suspended frame per socket. The handler logs and answers for itself instead."""
    await gw.login()
    (peer,) = gw.app[SOCKETS]
    await wait_until(lambda: peer.reader is not None)
    chain = awaiting(peer.reader)
    assert "websocket" in chain, chain
    assert not {"_access", "_timed", "_json_errors", "_json_refusals"} & set(chain), chain
