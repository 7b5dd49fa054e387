"""What aiohttp's WebSocket reader does not check in a client's frames: that each is masked, that
a close frame's code is one an endpoint may send, and how many frames one message takes.

RFC 6455 section 5.1: "The server MUST close the connection upon receiving a frame that is not
masked". aiohttp's reader reads either way; a frame without the mask bit closes the socket 1002.

RFC 6455 section 7.4 defines close codes up to 4999, and 7.4.1 forbids 1005, 1006 and 1015 in a
close frame. aiohttp's reader refuses 1005, 1015 and the unassigned codes below 3000, but lets
1006 through (it names it ``WSCloseCode.ABNORMAL_CLOSURE``, for a connection dropped without a
close frame) and every code from 5000: with 1006 a client could make its sessions read as network
drops in the access log. Both close the socket 1002, as aiohttp's own refusals do, with the same
reason (``Invalid close code: N``).

A message may be sent in fragments (RFC 6455 section 5.4), and aiohttp bounds the bytes of the
message (``max_msg_size``), not the frames: a client that opens a message and then sends empty
continuation frames (6 bytes each) never completes it nor grows it, so no limit of the gateway
(message rate, frames before auth, message size) sees them, and one socket kept the event loop
busy until its auth timeout. A message in more than :data:`MAX_FRAMES_PER_MESSAGE` frames closes
the socket 1009, as a message over ``WS_MAX_MESSAGE_BYTES`` does.

aiohttp has no setting for either, nor a hook into its reader (compiled; its state is not readable
from Python). So :class:`ClientFrames` stands in front of it: it reads each frame's header as the
bytes arrive, and hands aiohttp the same bytes. A read that lies within a frame's payload costs
one subtraction; a read of whole small frames, a few operations per header
(docs/performance.md, "The frame check").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import WebSocketError, WSCloseCode, web, web_ws
from aiohttp.http import WebSocketReader, WebSocketWriter

if TYPE_CHECKING:
    from aiohttp._websocket.reader import WebSocketDataQueue

__all__ = ["MAX_FRAMES_PER_MESSAGE", "ClientFrames", "ClientWebSocket"]

MAX_FRAMES_PER_MESSAGE: Final = 128
"""Browsers never fragment what they send, and client libraries only when the application streams
a message in parts or when it outgrows a buffer of kilobytes: 128 frames carry a
``WS_MAX_MESSAGE_BYTES`` message (64 KiB) even in 512-byte fragments. With the message rate limits
it bounds the frames a socket may make the loop parse (at most 128 per message allowed)."""

_FIN = 0x80
_MASK = 0x80  # in the second byte
_CONTROL = 0x8
"""The opcode bit of control frames (0x8 to 0xF): they may come between a message's frames but are
no part of it."""
_OPCODE = 0x0F
_CLOSE = 0x8
_DROPPED = 1006
"""The close code RFC 6455 section 7.4.1 forbids in a close frame that aiohttp's reader lets
through (it refuses 1005 and 1015 itself)."""
_UNDEFINED = 5000
"""The first code beyond those RFC 6455 section 7.4.2 defines."""

_TOO_MANY_FRAMES = f"a message in more than {MAX_FRAMES_PER_MESSAGE} frames"
_UNMASKED = "a client frame that is not masked"


class ClientFrames:
    """aiohttp's reader behind a check of each frame's header; made by aiohttp in its place (see
    :class:`ClientWebSocket`), with its arguments."""

    __slots__ = ("_fragments", "_head", "_queue", "_reader", "_skip")

    def __init__(
        self, queue: WebSocketDataQueue, max_msg_size: int, compress: bool, decode_text: bool
    ) -> None:
        self._reader = WebSocketReader(
            queue, max_msg_size, compress=compress, decode_text=decode_text
        )
        self._queue = queue
        self._skip = 0
        """Bytes of the current frame still to come: the next header starts after them."""
        self._head = b""
        """The start of a header that the last read cut short."""
        self._fragments = 0
        """Frames of the message being received, but its last; -1 once a frame was refused (one
        slot for both: an idle socket's state is what a gateway of many sockets pays for)."""

    def feed_eof(self) -> None:
        self._reader.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """aiohttp's ``feed_data``: whether the connection must close, and the bytes left over
        (none: the reader keeps what it has not parsed yet)."""
        skip = self._skip - len(data)
        if skip >= 0:
            self._skip = skip
            return self._reader.feed_data(data)
        fragments = self._fragments
        if fragments < 0:
            return True, data
        head = self._head
        buffer = head + data if head else data
        end = len(buffer)
        pos = self._skip
        while pos < end:
            frame = pos
            if end - pos < 2:
                break
            first = buffer[pos]
            second = buffer[pos + 1]
            if second < _MASK:
                return self._refuse(data, frame - len(head), WSCloseCode.PROTOCOL_ERROR, _UNMASKED)
            size = second & 0x7F
            if size < 126:
                pos += 6 + size
            elif size == 126:
                if end - pos < 4:
                    break
                pos += 8 + (buffer[pos + 2] << 8 | buffer[pos + 3])
            else:
                if end - pos < 10:
                    break
                pos += 14 + int.from_bytes(buffer[pos + 2 : pos + 10])
            if not first & _CONTROL:
                if first & _FIN:
                    fragments = 0
                else:
                    fragments += 1
                    if fragments >= MAX_FRAMES_PER_MESSAGE:
                        return self._refuse(
                            data, frame - len(head), WSCloseCode.MESSAGE_TOO_BIG, _TOO_MANY_FRAMES
                        )
            elif first & _OPCODE == _CLOSE and 2 <= size < 126:  # a longer one aiohttp refuses
                if end - frame < 8:  # the code, masked, follows the 4-byte mask
                    pos = frame
                    break
                code = (buffer[frame + 6] ^ buffer[frame + 2]) << 8 | (
                    buffer[frame + 7] ^ buffer[frame + 3]
                )
                if code == _DROPPED or code >= _UNDEFINED:
                    return self._refuse(
                        data,
                        frame - len(head),
                        WSCloseCode.PROTOCOL_ERROR,
                        f"Invalid close code: {code}",
                    )
        self._fragments = fragments
        if pos < end:  # the loop broke on a header (or a close frame's code) cut short
            self._head = buffer[pos:]
            self._skip = 0
        else:
            self._head = b""
            self._skip = pos - end
        return self._reader.feed_data(data)

    def _refuse(self, data: bytes, cut: int, code: WSCloseCode, reason: str) -> tuple[bool, bytes]:
        """Close with ``code`` as aiohttp closes for a frame its reader refuses: the frames before
        the offending one (``data[:cut]``) are still delivered, then the error, which
        ``receive()`` answers with a close frame of its code (``reason`` goes to the session's
        access line)."""
        self._fragments = -1
        self._skip = -1  # no read takes the fast path to the reader again
        if cut > 0 and self._reader.feed_data(data[:cut])[0]:
            return True, b""  # the reader refused an earlier frame itself
        self._queue.set_exception(WebSocketError(code, reason))
        return True, b""


class ClientWebSocket(web.WebSocketResponse):
    """aiohttp's server WebSocket, reading the client's frames through :class:`ClientFrames`."""

    def _post_start(
        self, request: web.BaseRequest, protocol: str | None, writer: WebSocketWriter
    ) -> None:
        # aiohttp makes its reader here, by the name web_ws imported, and hands it to the
        # connection (set_parser, which also feeds it what arrived after the upgrade request);
        # it has no setting for the class, so the name is ours for this one synchronous call.
        made = _WEB_WS[_READER]
        _WEB_WS[_READER] = ClientFrames
        try:
            super()._post_start(request, protocol, writer)
        finally:
            _WEB_WS[_READER] = made


_WEB_WS = vars(web_ws)
_READER = "WebSocketReader"
