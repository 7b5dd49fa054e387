"""The gateway's notion of time, injected so the domain is tested on a clock that tests move.

Two readings: ``time()`` is the wall clock (epoch seconds: token ``exp``, message ``ts``),
``monotonic()`` never jumps (rate limits, timers), and ``call_at`` runs a callback at a monotonic
time. ``LoopClock`` is the event loop's; tests use a fake that advances by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "LoopClock", "Timer"]


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; the timeline of ``call_at``."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once ``monotonic()`` reaches ``when``."""
        ...


class LoopClock:
    """The running event loop's clock and timers: the loop it is first used in, kept, since
    ``asyncio.get_running_loop()`` is a ``getpid()`` system call each time before Python 3.12
    (several per handshake)."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bound(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return self._bound().time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return self._bound().call_at(when, callback)
