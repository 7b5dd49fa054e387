"""The peer's write paths: at once when nothing waits (the frame's bytes straight to the
transport), queued (in order) behind a backlog."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from aiohttp import WSMsgType, web
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.base_protocol import BaseProtocol

from ws_service.peer import WebSocketPeer, text_frame


def payload_of(frame: bytes) -> str:
    """The text of one unmasked final text frame (its bytes are checked against aiohttp's below)."""
    assert frame[0] == 0x81
    size = frame[1]
    return frame[{126: 4, 127: 10}.get(size, 2) :].decode()


class Transport:
    """Takes the direct writes; ``wire`` is every frame in the order it left, either way."""

    def __init__(self) -> None:
        self.buffered = 0
        self.closing = False
        self.writes: list[bytes] = []
        self.wire: list[str] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if data[0] != 0x8A:  # a pong is not on the wire of text frames
            self.wire.append(payload_of(data))

    def get_extra_info(self, name: str) -> None:
        return None

    def abort(self) -> None:
        self.closing = True
        self.buffered = 0


class Socket:
    """Records the frames the writer task sends through aiohttp."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.sent: list[str] = []
        self.closed = False

    async def send_str(self, text: str) -> None:
        self.sent.append(text)
        self.transport.wire.append(text)


class Stuck(Socket):
    """aiohttp's writer waiting for a drain that a peer that stopped reading never lets happen."""

    async def send_str(self, text: str) -> None:
        self.sent.append(text)
        await asyncio.Event().wait()

    async def close(self, *, code: int, message: bytes) -> bool:
        await asyncio.Event().wait()  # its close frame waits for the same drain
        return True


def make_peer(
    max_bytes: int = 1000, grace: float = 5.0, ws_type: type[Socket] = Socket
) -> tuple[WebSocketPeer, Socket, Transport]:
    transport = Transport()
    ws = ws_type(transport)
    peer = WebSocketPeer(
        cast(web.WebSocketResponse, ws),
        cast(asyncio.Transport, transport),
        max_bytes,
        grace=grace,
    )
    return peer, ws, transport


async def reading(peer: WebSocketPeer) -> asyncio.Task[None]:
    """The handler's task, waiting in ``receive()``, as the peer sees it."""
    task = asyncio.ensure_future(asyncio.Event().wait())
    peer.reader = cast("asyncio.Task[object]", task)
    await asyncio.sleep(0)
    return cast("asyncio.Task[None]", task)


async def test_a_slow_consumer_is_closed_at_once_even_while_its_writer_waits_for_a_drain() -> None:
    """The 1013 was queued behind a writer stuck for good in aiohttp's drain: it never went out,
    and the socket stayed open while its client sent pings (an outside probe: 150 s and more,
    with megabytes in the kernel's buffer)."""
    peer, ws, transport = make_peer(max_bytes=10, ws_type=Stuck)
    reader = await reading(peer)
    transport.buffered = 1
    peer.send("abcd")  # queued: the writer takes it and waits for a drain for good
    await asyncio.sleep(0)
    assert ws.sent == ["abcd"]
    peer.send("x" * 20)  # over the bound
    assert peer.close_requested and peer.queued_bytes == 0
    await asyncio.sleep(0)
    assert reader.cancelled()
    await asyncio.wait_for(peer.finish(0.05), 1)  # the cancelled writer is not awaited into it
    assert transport.closing, "what the peer never read is dropped with the connection"


async def test_a_close_behind_a_writer_that_never_drains_is_forced_after_the_grace() -> None:
    """A revocation's 4403 or a disconnect waited behind such a writer for good: the socket of
    a logged-out user stayed open."""
    peer, _, transport = make_peer(grace=0.05, ws_type=Stuck)
    reader = await reading(peer)
    transport.buffered = 1
    peer.send("revoked")
    await asyncio.sleep(0)
    peer.close(4403, "session_revoked")
    await asyncio.sleep(0.01)
    assert not peer.close_requested, "the frames queued before it get the grace"
    await asyncio.sleep(0.1)
    assert peer.close_requested and reader.cancelled()
    assert peer.session_end(None, 0).close_code == 4403


class Capture:
    """A transport for aiohttp's own writer: what it would put on the wire."""

    def __init__(self) -> None:
        self.data = b""

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.data += data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("char", ["a", "\u00e9", "\U0001f600"])
async def test_a_frame_is_the_bytes_aiohttps_writer_sends(size: int, char: str) -> None:
    text = char * (size // len(char.encode()))
    capture = Capture()
    writer = WebSocketWriter(
        cast(BaseProtocol, object()), cast(asyncio.Transport, capture), limit=1 << 30
    )
    await writer.send_frame(text.encode(), WSMsgType.TEXT)
    assert text_frame(text) == capture.data


@pytest.mark.parametrize("size", [0, 1, 125])
async def test_a_pong_is_the_bytes_aiohttps_writer_sends_and_never_waits(size: int) -> None:
    """aiohttp's ``pong`` waits for a drain: a client that pinged and never read held the
    handler there, where no close could wake it."""
    capture = Capture()
    writer = WebSocketWriter(
        cast(BaseProtocol, object()), cast(asyncio.Transport, capture), limit=1 << 30
    )
    await writer.send_frame(b"p" * size, WSMsgType.PONG)
    peer, _, transport = make_peer(ws_type=Stuck)
    transport.buffered = 10**6  # a backlog the peer never takes
    peer.pong(b"p" * size)
    assert transport.writes == [capture.data]


async def test_a_frame_to_an_idle_socket_is_written_in_the_callers_step() -> None:
    peer, ws, transport = make_peer()
    peer.send("one")
    peer.send("two")
    assert transport.wire == ["one", "two"]  # no task had a chance to run
    assert ws.sent == []  # straight to the transport
    assert peer.queued_bytes == 0
    assert peer.sent == 2


async def test_a_broadcast_is_encoded_once_for_every_subscriber() -> None:
    peers = [make_peer() for _ in range(3)]
    text = '{"type":"message","channel":"chat:a","data":"' + "x" * 300 + '"}'
    for peer, _, _ in peers:
        peer.send(text)
    written = [transport.writes[0] for _, _, transport in peers]
    assert written[0] == text_frame(text)
    assert written[1] is written[0] and written[2] is written[0]


async def test_nothing_follows_the_close_aiohttp_has_begun() -> None:
    peer, ws, transport = make_peer()
    ws.closed = True  # aiohttp's close() sets it before it writes its close frame
    peer.send("late")
    assert transport.writes == []
    assert peer.queued_bytes == 0


async def test_a_backlog_queues_frames_in_order_until_the_writer_drains_it() -> None:
    peer, ws, transport = make_peer()
    transport.buffered = 10
    peer.send("one")
    assert transport.wire == []
    transport.buffered = 0
    peer.send("two")  # the writer has not run yet: this must not overtake "one"
    assert transport.wire == []
    assert peer.queued_bytes == 6
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ws.sent == ["one", "two"]
    peer.send("three")
    assert transport.wire == ["one", "two", "three"]


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
