"""Coalesced timers for many sockets: a hashed timing wheel over the gateway's clock.

Every socket has one deadline at a time (its auth deadline, then its expiry warning, then its
expiry). A ``loop.call_later`` handle per socket costs about 540 bytes with its callback and
context, a tenth of an idle socket beyond aiohttp's own state. Here each deadline is rounded up to
a multiple of ``tick`` and deadlines that share a tick share a set and one loop timer, so a socket
costs a set entry. A deadline fires less than one tick late and never early.

Each deadline runs under its item's own request id: the slot's one timer runs in the context of
whichever socket set it, and a log line of another socket's deadline (its auth timeout, its
``token_expired`` audit line) would carry that socket's client-chosen request id. The item keeps
the id alone, not a copy of its request's context: the id is the one variable this process's
lines read from it, and a ``Context`` per socket cost 64 bytes more (docs/performance.md).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Protocol

from shared.jsonlog import REQUEST_ID
from ws_service.domain.clock import Clock, Timer

__all__ = ["DEFAULT_TICK", "Deadlines", "Expiring"]

DEFAULT_TICK = 0.05
"""Seconds: well under the 100 ms the expiry-warning schedule may be late by."""

log = logging.getLogger(__name__)


class Expiring(Protocol):
    @property
    def request_id(self) -> str | None:
        """The request id its deadline runs under (a socket's: its request's)."""
        ...

    def on_deadline(self) -> None:
        """The deadline set for this object has come (it is no longer scheduled)."""


class Deadlines:
    def __init__(self, clock: Clock, tick: float = DEFAULT_TICK) -> None:
        self._clock = clock
        self._tick = tick
        self._slots: dict[int, tuple[set[Expiring], Timer]] = {}

    def __len__(self) -> int:
        return sum(len(members) for members, _ in self._slots.values())

    def schedule(self, delay: float, item: Expiring) -> int:
        """Call ``item.on_deadline()`` in ``delay`` seconds (at most one tick more); returns the
        slot to pass to :meth:`cancel`."""
        slot = math.ceil((self._clock.monotonic() + max(0.0, delay)) / self._tick)
        entry = self._slots.get(slot)
        if entry is None:
            timer = self._clock.call_at(slot * self._tick, functools.partial(self._fire, slot))
            entry = self._slots[slot] = (set(), timer)
        entry[0].add(item)
        return slot

    def due_in(self, slot: int) -> float:
        """Seconds until ``slot`` fires (its deadline rounded up to the tick)."""
        return slot * self._tick - self._clock.monotonic()

    @property
    def tick(self) -> float:
        return self._tick

    def cancel(self, slot: int, item: Expiring) -> None:
        entry = self._slots.get(slot)
        if entry is None:
            return
        members, timer = entry
        members.discard(item)
        if not members:
            del self._slots[slot]
            timer.cancel()

    def close(self) -> None:
        for _, timer in self._slots.values():
            timer.cancel()
        self._slots.clear()

    def _fire(self, slot: int) -> None:
        entry = self._slots.pop(slot, None)
        if entry is None:
            return
        for item in entry[0]:
            token = REQUEST_ID.set(item.request_id)
            try:
                _expire(item)
            finally:
                REQUEST_ID.reset(token)


def _expire(item: Expiring) -> None:
    try:
        item.on_deadline()
    except Exception:
        log.exception("a deadline callback failed")
