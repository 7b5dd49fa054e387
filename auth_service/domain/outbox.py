"""Revocation events reach the bus (and the ledger), or wait in the store until they can.

A logout made while Redis is down must still close the sockets once it is back, so an event that
the ledger or the bus refuses is written to the outbox and re-delivered by
:meth:`EventPublisher.flush`. Events are idempotent, so a replica re-delivering one that another
replica also delivered is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from auth_service.domain.store import Store
from shared.bus import EventBus
from shared.events import REVOCATIONS_TOPIC, RevocationEvent, decode_event, encode_event
from shared.revocation_ledger import RevocationLedger

__all__ = ["EventPublisher"]

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(
        self,
        bus: EventBus,
        store: Store,
        ledger: RevocationLedger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._store = store
        self._ledger = ledger
        self._clock = clock
        self.pending = False

    async def _deliver(self, topic: str, payload: str) -> None:
        """Record first, then announce: a replica that misses the event still finds the record."""
        if self._ledger is not None and topic == REVOCATIONS_TOPIC:
            await self._ledger.record(decode_event(payload))
        await self._bus.publish(topic, payload)

    async def __call__(self, event: RevocationEvent) -> None:
        await self.announce(REVOCATIONS_TOPIC, encode_event(event))

    async def announce(self, topic: str, payload: str) -> bool:
        """Publish now, or keep it in the outbox for :meth:`flush`; True when the bus took it."""
        try:
            await self._deliver(topic, payload)
        except Exception as exc:
            log.warning(
                "event bus refused an event; kept in the outbox",
                extra={"topic": topic, "reason": str(exc)},
            )
            await self._store.add_outbox(topic, payload, self._clock())
            self.pending = True
            return False
        return True

    async def flush(self, limit: int = 100) -> int:
        """Publish what waits in the outbox, oldest first; stop at the first refusal."""
        items = await self._store.outbox_batch(limit)
        delivered: list[int] = []
        try:
            for item in items:
                await self._deliver(item.topic, item.payload)
                delivered.append(item.id)
        except Exception as exc:
            log.warning("outbox not yet deliverable", extra={"reason": str(exc)})
        if delivered:
            await self._store.delete_outbox(delivered)
            log.info("outbox delivered", extra={"events": len(delivered)})
        self.pending = len(delivered) < len(items) or len(items) == limit
        return len(delivered)
