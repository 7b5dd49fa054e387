"""The bench's own WebSocket client against aiohttp's server: if it misframes, every figure lies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestServer

from tests.bench import procinfo
from tests.bench.loadgen import rogue_token
from tests.bench.tokens import BenchKey
from tests.bench.wsclient import WSClosed, connect


async def echo_server(compress: bool) -> tuple[TestServer, int]:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=compress, max_msg_size=1 << 20)
        await ws.prepare(request)
        await ws.ping(b"are you there")
        async for message in ws:
            if message.data == "close me":
                await ws.close(code=WSCloseCode.POLICY_VIOLATION)
            else:
                await ws.send_str(message.data * 2)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    assert server.port is not None
    return server, server.port


@pytest.mark.parametrize("compress", [False, True])
async def test_frames_of_every_length_round_trip(compress: bool) -> None:
    server, port = await echo_server(compress)
    try:
        client = await connect(port)
        assert client.deflate is compress  # offered as browsers do; used only when accepted
        for size in (1, 125, 126, 65535, 70000):
            text = "é" * (size // 2) + "x" * (size % 2)
            client.send_text(text)
            assert await client.recv(5) == text * 2
        await client.close(5)
        assert client.closed.result() == 1000
    finally:
        await server.close()


async def test_a_server_close_ends_recv_with_its_code() -> None:
    server, port = await echo_server(False)
    try:
        client = await connect(port)
        client.send_text("close me")
        with pytest.raises(WSClosed) as closed:
            await client.recv(5)
        assert closed.value.code == WSCloseCode.POLICY_VIOLATION
    finally:
        await server.close()


async def test_pushed_frames_are_counted_without_queueing() -> None:
    server, port = await echo_server(False)
    try:
        client = await connect(port)
        seen: list[str] = []
        client.on_text = lambda _, text: seen.append(text)
        client.send_text(json.dumps({"n": 1}))
        await client.close(5)
        assert seen == ['{"n": 1}{"n": 1}']
    finally:
        await server.close()


def test_rogue_tokens_name_distinct_unknown_kids(tmp_path: Path) -> None:
    import jwt

    token = BenchKey(tmp_path, "http://127.0.0.1:1").mint("u1")
    kids = {jwt.get_unverified_header(rogue_token(token, i))["kid"] for i in range(3)}
    assert kids == {"rogue-0", "rogue-1", "rogue-2"}
    assert rogue_token(token, 0).split(".")[1:] == token.split(".")[1:]


def test_process_tree_figures_include_this_process() -> None:
    assert os.getpid() in procinfo.tree(os.getpid())
    assert procinfo.cpu_seconds(os.getpid()) > 0
    assert procinfo.rss_kib(os.getpid()) > 1000
    assert procinfo.pinned(None, ["x"]) == ["x"]
