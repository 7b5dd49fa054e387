"""The peer's write paths: at once when nothing waits, queued (in order) behind a backlog."""

from __future__ import annotations

import asyncio
import gc
from typing import cast

from aiohttp import web

from ws_service.peer import WebSocketPeer


class Transport:
    def __init__(self) -> None:
        self.buffered = 0
        self.closing = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


class Socket:
    """Records frames; ``send_str`` suspends (like a drain) while ``stall`` is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.stall: asyncio.Event | None = None

    async def send_str(self, text: str) -> None:
        self.sent.append(text)
        if self.stall is not None:
            await self.stall.wait()


def make_peer(max_bytes: int = 1000) -> tuple[WebSocketPeer, Socket, Transport]:
    ws, transport = Socket(), Transport()
    peer = WebSocketPeer(
        cast(web.WebSocketResponse, ws), cast(asyncio.Transport, transport), max_bytes
    )
    return peer, ws, transport


async def test_a_frame_to_an_idle_socket_is_written_in_the_callers_step() -> None:
    peer, ws, _ = make_peer()
    peer.send("one")
    peer.send("two")
    assert ws.sent == ["one", "two"]  # no task had a chance to run
    assert peer.queued_bytes == 0


async def test_a_backlog_queues_frames_in_order_until_the_writer_drains_it() -> None:
    peer, ws, transport = make_peer()
    transport.buffered = 10
    peer.send("one")
    assert ws.sent == []
    transport.buffered = 0
    peer.send("two")  # the writer has not run yet: this must not overtake "one"
    assert ws.sent == []
    assert peer.queued_bytes == 6
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ws.sent == ["one", "two"]
    peer.send("three")
    assert ws.sent == ["one", "two", "three"]


async def test_a_send_that_would_wait_for_a_drain_is_not_left_pending() -> None:
    peer, ws, _ = make_peer()
    ws.stall = asyncio.Event()
    peer.send("one")  # written, then it would wait: the wait is dropped, not leaked
    assert ws.sent == ["one"]
    ws.stall = None
    peer.send("two")
    assert ws.sent == ["one", "two"]


async def test_a_dropped_drain_wait_that_fails_later_is_not_reported() -> None:
    """aiohttp keeps the future a dropped drain waited on, and fails it when the peer goes away:
    asyncio then logged "Future exception was never retrieved" for each such peer (an error line
    per client that took one large frame and vanished, in an outside probe)."""
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        peer, ws, _ = make_peer()
        waits: list[asyncio.Future[None]] = [loop.create_future()]

        async def send_str(text: str) -> None:
            ws.sent.append(text)
            await waits[0]

        ws.send_str = send_str  # type: ignore[method-assign]
        peer.send("large")
        assert ws.sent == ["large"]
        waits.pop().set_exception(ConnectionError("Connection lost"))  # nothing holds it now
        gc.collect()
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_the_drain_waiter_a_direct_write_dropped_can_be_awaited_again() -> None:
    """aiohttp's writes share one drain waiter: the next write to wait awaits the same future."""
    peer, ws, _ = make_peer()
    drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send_str(text: str) -> None:
        ws.sent.append(text)
        await drained

    ws.send_str = send_str  # type: ignore[method-assign]
    peer.send("large")
    waiting = asyncio.ensure_future(send_str("next"))  # what the writer task would do
    await asyncio.sleep(0)
    drained.set_result(None)
    await waiting  # raised "await wasn't used with future" while the dropped await's mark stayed


async def test_a_socket_with_a_backlog_past_its_bound_is_closed_as_a_slow_consumer() -> None:
    peer, ws, transport = make_peer(max_bytes=5)
    transport.buffered = 1
    peer.send("abc")
    peer.send("defgh")  # 8 bytes queued > 5
    assert peer.queued_bytes == 0
    await asyncio.sleep(0)
    assert peer.close_requested
    assert ws.sent == []
    peer.send("late")
    assert ws.sent == []
