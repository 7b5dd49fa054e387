"""Connections accepted while the event loop is busy, so a burst is never dropped by the kernel.

The loop accepts between its iterations. When one iteration is long (a reconnect storm puts
thousands of handshakes in each), the kernel's listen queue fills, capped at
``net.core.somaxconn`` (4,096 by default), and every further attempt is dropped: the client's TCP
tries again only after 1 s, then 3 s, 7 s. A storm of 10,000 clients onto one replica read 14,000
to 42,000 such drops and up to 8 s of waiting beyond its CPU (docs/performance.md).

A thread looks at the listening socket every :data:`PERIOD` seconds (through its own duplicate of
the descriptor, so the loop closing its own never leaves this one on a reused number). When
connections are waiting, the loop is behind: the thread accepts them all and hands them to the
loop, which serves them as its own (``loop.connect_accepted_socket``) as soon as it can. While the
loop keeps up, the thread finds the queue empty and only ever wakes up to look; a connection it
takes by chance is served the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable

__all__ = ["PERIOD", "Acceptor"]

PERIOD = 0.02
"""Seconds between two looks at the queue: 4,096 places fill in 20 ms only at 200,000 new
connections a second."""
_BATCH = 1024
"""Connections handed over at once, so that the loop gets them before the thread takes more."""
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

log = logging.getLogger(__name__)


class Acceptor:
    """Accepts from ``listener`` in a thread whenever connections wait, and passes them to
    ``protocol_factory`` on ``loop``, as the loop's own server would (``ssl_context`` included)."""

    def __init__(
        self,
        listener: socket.socket,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._listener = socket.socket(fileno=os.dup(listener.fileno()))
        self._listener.setblocking(False)  # shared with the loop's descriptor, which already is
        self._loop = loop
        self._factory = protocol_factory
        self._ssl = ssl_context
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acceptor", daemon=True)
        self._adopting: set[asyncio.Task[None]] = set()
        self.taken = 0
        """Connections this acceptor took (read by tests and the bench)."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop looking and close this descriptor; the loop's own still listens until its server
        closes. Connections already handed over are served. Waits for the thread: at most one
        look at the queue, well under :data:`PERIOD`."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._listener.close()

    def _run(self) -> None:
        waiting = select.poll()
        waiting.register(self._listener.fileno(), select.POLLIN)
        while not self._stopping.wait(PERIOD):
            while waiting.poll(0) and not self._stopping.is_set():
                accepted = self._accept()
                if not accepted:
                    break
                try:
                    self._loop.call_soon_threadsafe(self._adopt, accepted)
                except RuntimeError:  # the loop is closed: nobody will serve them
                    for connection in accepted:
                        connection.close()
                    return

    def _accept(self) -> list[socket.socket]:
        accepted: list[socket.socket] = []
        while len(accepted) < _BATCH:
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionError:  # reset by its client while it waited: the next one
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    log.warning("accepting a connection failed", extra={"error": str(exc)})
                break  # out of descriptors: the rest wait in the kernel's queue
            connection.setblocking(False)
            accepted.append(connection)
        self.taken += len(accepted)
        return accepted

    def _adopt(self, accepted: list[socket.socket]) -> None:
        for connection in accepted:
            task = self._loop.create_task(self._serve(connection))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _serve(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, connection, ssl=self._ssl)
        except (TimeoutError, OSError, ssl.SSLError):
            # Gone before it was served, or a failed TLS handshake: what the loop's own server
            # drops silently too.
            with contextlib.suppress(OSError):
                connection.close()
