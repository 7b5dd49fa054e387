"""Dropping a connection together with what the kernel still holds for it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["reset"]


def reset(transport: asyncio.Transport) -> None:
    """Close with a reset: ``abort`` alone closes the socket, and the kernel then keeps sending
    what it holds, to a peer that never reads, for minutes (a zero window is probed, never timed
    out). A zero linger time makes the close a RST that drops the kernel's send queue too."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
