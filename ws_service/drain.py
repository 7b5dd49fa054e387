"""Leaving without a stampede: on SIGTERM a replica closes its sockets spread over a window.

Closing every socket at once would send all its clients to the other replicas in the same second:
a cliff of handshakes, ledger checks and history reads. Instead the replica first goes unready
(``/readyz`` 503, so a balancer that asks sends nobody new) and stops listening (``shared.http.serve``
does both, in that order), then closes its sockets with 1012 ``draining`` (reconnect: another
replica answers, and ``since`` recovers what the move missed), one in each equal slice of
``WS_DRAIN_SECONDS``, at a random point of its slice. The other replicas see a ramp of about
``sockets / WS_DRAIN_SECONDS`` handshakes a second, never more than one more per second of it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from aiohttp import web

from realtime_gateway_protocol.close_codes import Disconnect
from ws_service.appkeys import METRICS, SETTINGS, SOCKETS

__all__ = ["SocketDrain", "close_times"]

log = logging.getLogger(__name__)


def close_times(count: int, window: float, rand: Callable[[], float]) -> list[float]:
    """When to close each of ``count`` sockets, in seconds from the start: the i-th at a random
    point of the i-th of ``count`` equal slices of ``window``, so that any stretch of ``t``
    seconds holds at most ``t * count / window + 1`` closes."""
    width = window / count if count else 0.0
    return [width * (i + rand()) for i in range(count)]


class SocketDrain:
    """Implements ``shared.http.serve.Drain`` for the ws app."""

    def __init__(self, app: web.Application, *, rand: Callable[[], float] = random.random) -> None:
        self._app = app
        self._rand = rand
        self._draining = False

    @property
    def draining(self) -> bool:
        return self._draining

    def begin(self) -> None:
        self._draining = True
        self._app[METRICS].draining.set(1)
        log.info(
            "draining",
            extra={
                "sockets": len(self._app[SOCKETS]),
                "seconds": self._app[SETTINGS].drain_seconds,
            },
        )

    async def run(self) -> None:
        """Close every socket at its time, then wait (at most the close timeout) for the
        closing handshakes; what is left is closed by the app's shutdown."""
        sockets = self._app[SOCKETS]
        settings = self._app[SETTINGS]
        peers = list(sockets)
        random.shuffle(peers)
        loop = asyncio.get_running_loop()
        start = loop.time()
        row = Disconnect.DRAINING
        for peer, at in zip(
            peers, close_times(len(peers), settings.drain_seconds, self._rand), strict=True
        ):
            if not sockets:
                break
            delay = start + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if peer in sockets:
                peer.close(row.code, row.reason)
        closing = [asyncio.ensure_future(peer.wait_finished()) for peer in peers if peer in sockets]
        if closing:
            _, late = await asyncio.wait(closing, timeout=settings.close_timeout)
            for waiter in late:
                waiter.cancel()
        log.info("drained", extra={"left": len(sockets)})
