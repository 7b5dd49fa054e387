"""The check in front of aiohttp's WebSocket reader (ws_service.frames): it follows the frame
headers in the bytes as they arrive, however the reads cut them, and refuses a frame that is not
masked and a message in more than MAX_FRAMES_PER_MESSAGE frames; everything else reaches aiohttp's
reader unchanged."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from aiohttp import WebSocketError, WSMsgType, web, web_ws
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import WebSocketReader

from tests.support.raw_ws import CLOSE, CONTINUATION, PING, TEXT, client_frame, fragmented
from ws_service.frames import MAX_FRAMES_PER_MESSAGE, ClientFrames

Received = list[tuple[WSMsgType, object]]


def client_frames() -> tuple[ClientFrames, WebSocketDataQueue]:
    loop = asyncio.get_running_loop()
    queue = WebSocketDataQueue(BaseProtocol(loop), 1 << 20, loop=loop)
    return ClientFrames(queue, 1 << 17, compress=False, decode_text=True), queue


def feed(frames: ClientFrames, stream: bytes, chunk: int) -> bool:
    """``stream`` in reads of ``chunk`` bytes; whether aiohttp was told to close the connection."""
    closing = False
    for start in range(0, len(stream), chunk):
        closing, _ = frames.feed_data(stream[start : start + chunk])
        if closing:
            break
    return closing


async def received(queue: WebSocketDataQueue) -> tuple[Received, WebSocketError | None]:
    """The messages queued, and the error that ended them (None if the stream is still open)."""
    messages: Received = []
    while True:
        try:
            async with asyncio.timeout(0.1):
                message = await queue.read()
        except TimeoutError:
            return messages, None
        except WebSocketError as exc:
            return messages, exc
        messages.append((message.type, message.data))


HONEST = (
    client_frame(TEXT, b"a" * 300)  # a 16-bit length
    + client_frame(TEXT, b"b" * 70_000)  # a 64-bit length
    + client_frame(TEXT, b"x", fin=False)
    + client_frame(CONTINUATION, b"", fin=False) * (MAX_FRAMES_PER_MESSAGE // 2 - 1)
    + client_frame(PING, b"p")  # a control frame between fragments is no part of the message
    + client_frame(CONTINUATION, b"", fin=False) * (MAX_FRAMES_PER_MESSAGE // 2 - 2)
    + client_frame(CONTINUATION, b"y")
)
HONEST_MESSAGES: Received = [
    (WSMsgType.TEXT, "a" * 300),
    (WSMsgType.TEXT, "b" * 70_000),
    (WSMsgType.PING, b"p"),
    (WSMsgType.TEXT, "xy"),
]


@pytest.mark.parametrize("chunk", [1, 2, 5, 13, 4096, len(HONEST)])
async def test_messages_of_up_to_128_frames_are_read_however_the_reads_cut_them(
    chunk: int,
) -> None:
    frames, queue = client_frames()
    assert MAX_FRAMES_PER_MESSAGE == 128
    assert not feed(frames, HONEST + fragmented(b"z", MAX_FRAMES_PER_MESSAGE), chunk)
    assert await received(queue) == ([*HONEST_MESSAGES, (WSMsgType.TEXT, "z")], None)


@pytest.mark.parametrize("chunk", [1, 5, 13, 4096, 1 << 20])
async def test_a_message_in_more_than_128_frames_is_refused_1009(chunk: int) -> None:
    """Before the fix, empty continuation frames were read without end: no limit counted them."""
    frames, queue = client_frames()
    too_many = fragmented(b"z", MAX_FRAMES_PER_MESSAGE + 1)
    assert feed(frames, HONEST + too_many + client_frame(TEXT, b"after"), chunk)
    messages, error = await received(queue)
    assert messages == HONEST_MESSAGES  # what came before it, even in the same read
    assert error is not None
    assert (error.code, str(error)) == (1009, "a message in more than 128 frames")
    assert frames.feed_data(client_frame(TEXT, b"later"))[0]  # nothing is read after it
    assert await received(queue) == ([], error)


@pytest.mark.parametrize(
    "unmasked",
    [
        client_frame(TEXT, b"plain", masked=False),
        client_frame(PING, b"", masked=False),
        client_frame(TEXT, b"a", fin=False) + client_frame(CONTINUATION, b"", masked=False),
    ],
    ids=["text", "ping", "continuation"],
)
@pytest.mark.parametrize("chunk", [1, 5, 4096, 1 << 20])
async def test_a_frame_that_is_not_masked_is_refused_1002(unmasked: bytes, chunk: int) -> None:
    """RFC 6455 section 5.1: the server must close on it. aiohttp's reader read it, so a whole
    session could run unmasked."""
    frames, queue = client_frames()
    assert feed(frames, HONEST + unmasked + client_frame(TEXT, b"after"), chunk)
    messages, error = await received(queue)
    assert messages == HONEST_MESSAGES
    assert error is not None
    assert (error.code, str(error)) == (1002, "a client frame that is not masked")


@pytest.mark.parametrize("code", [1006, 5000, 65535])
@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 4096])
async def test_a_close_frame_with_a_code_no_endpoint_may_send_is_refused_1002(
    code: int, chunk: int
) -> None:
    """aiohttp's reader refuses 1005, 1015 and unassigned codes below 3000 itself, but reads 1006
    (RFC 6455 section 7.4.1 forbids it in a close frame) and codes from 5000 (section 7.4.2
    defines none) as a client's close. The code is masked and may arrive a byte at a time."""
    frames, queue = client_frames()
    close = client_frame(CLOSE, code.to_bytes(2, "big") + b"network blip")
    assert feed(frames, HONEST + close + client_frame(TEXT, b"after"), chunk)
    messages, error = await received(queue)
    assert messages == HONEST_MESSAGES
    assert error is not None
    assert (error.code, str(error)) == (1002, f"Invalid close code: {code}")


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
async def test_a_close_frame_with_a_valid_code_reaches_aiohttp(code: int, chunk: int) -> None:
    frames, queue = client_frames()
    close = client_frame(CLOSE, code.to_bytes(2, "big") + b"bye")
    feed(frames, HONEST + close, chunk)
    messages, error = await received(queue)
    assert (messages, error) == ([*HONEST_MESSAGES, (WSMsgType.CLOSE, code)], None)


async def test_the_refusal_comes_with_the_frame_that_makes_the_message_too_long() -> None:
    frames, queue = client_frames()
    assert not feed(frames, client_frame(TEXT, b"z", fin=False), 1 << 20)
    for _ in range(MAX_FRAMES_PER_MESSAGE - 2):
        assert frames.feed_data(client_frame(CONTINUATION, b"", fin=False)) == (False, b"")
    closing, _ = frames.feed_data(client_frame(CONTINUATION, b"", fin=False))
    assert closing
    assert (await received(queue))[1] is not None


def test_aiohttp_still_makes_its_reader_by_the_name_client_websocket_swaps() -> None:
    """ClientWebSocket puts ClientFrames under aiohttp.web_ws's global ``WebSocketReader`` while
    ``_post_start`` runs (aiohttp has no setting for the reader). An upgrade that moves either
    fails here by name, besides the socket tests that would see no check at all."""
    assert vars(web_ws)["WebSocketReader"] is WebSocketReader
    assert "WebSocketReader(" in inspect.getsource(web.WebSocketResponse._post_start)
