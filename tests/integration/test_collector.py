"""The collector policy of shared/collector.py, and what makes it safe: a closed WebSocket's state
is freed by reference counting alone, so that freezing what survives leaks nothing."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from shared import collector
from shared.http.serve import Site, start_site


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Whatever is still alive after this was not freed by reference counting."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_closed_websocket_is_freed_by_reference_counting(
    no_automatic_collection: None,
) -> None:
    server_side: list[weakref.ref[object]] = []
    finished = asyncio.Event()
    count = 5

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)  # the heartbeat's callback made the cycle
        await ws.prepare(request)
        server_side.extend([weakref.ref(ws), weakref.ref(request)])
        async for message in ws:
            await ws.send_str(message.data)
        if len(server_side) == 2 * count:
            finished.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner, port = await start_site(Site(app, "127.0.0.1", 0))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(count):
                async with http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                    await ws.send_str("ping")
                    reply = await ws.receive()
                    assert reply.data == "ping", reply
        await asyncio.wait_for(finished.wait(), 5)
        await asyncio.sleep(0.1)  # the last handler's task returns and lets go
        alive = [ref() for ref in server_side if ref() is not None]
        assert alive == []
    finally:
        await runner.cleanup()


def test_survivors_are_frozen_and_still_freed_when_released() -> None:
    collector.freeze_survivors()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        survivor = [object()]
        gc.collect(1)  # a generation-1 collection: what survived it is frozen
        assert gc.get_freeze_count() > frozen
        ref = weakref.ref(survivor_holder := _Holder(survivor))
        gc.collect(1)
        del survivor_holder
        assert ref() is None  # a frozen object still goes with its last reference
    finally:
        collector.release()
    assert gc.get_freeze_count() == 0
    assert not any(callback.__module__ == collector.__name__ for callback in gc.callbacks)


class _Holder:
    def __init__(self, value: object) -> None:
        self.value = value
