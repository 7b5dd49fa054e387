"""Revocation events reach the bus (and the ledger), or wait in the store until they can.

A logout made while Redis is down must still close the sockets once it is back, and so must one
whose process dies before the bus took its event (a SIGKILL, or a shutdown that outlasts a Redis
that hangs). So each revocation's events are written to the outbox by the transaction that
revokes (:meth:`EventPublisher.announcements` makes them), the request then delivers them at once
(:meth:`EventPublisher.deliver`) and deletes them, and whatever it could not deliver is delivered
by :meth:`EventPublisher.flush`, on any replica, once due. Events are idempotent, so a replica
re-delivering one that another replica also delivered is harmless.

Only an unavailable bus (:class:`~shared.bus.BusUnavailable`) pauses a batch: it would
refuse the next event too, and order is kept. Any other failure belongs to one event (a payload
this version cannot read, say): the event is retried with backoff a bounded number of times, then
moved aside as a dead letter, and the events behind it go on. An operator inspects and replays dead
letters with ``python -m auth_service outbox`` (docs/operations.md).

The ledger itself may lose its records (Redis restarted empty): each revocation is also kept in the
store while it is in force, and :meth:`EventPublisher.restore_ledger` writes them all again once the
ledger says it lost them.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from auth_service.domain.models import OutboxItem
from auth_service.domain.store import Announcement, Store
from realtime_gateway_protocol.backoff import backoff_delay
from realtime_gateway_protocol.events import (
    LEDGER_RESTORED_TOPIC,
    REVOCATIONS_TOPIC,
    RevocationEvent,
    decode_event,
    encode_event,
    record_key,
)
from shared.bus import BusUnavailable, EventBus, RevocationLedger

__all__ = [
    "DELIVERY_LEASE",
    "REPLAY_LIMIT",
    "EventPublisher",
    "KeptLedger",
    "OutboxOnly",
    "OutboxStatus",
    "RetryPolicy",
    "drop_dead_letters",
    "replay_dead_letters",
]

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500

DELIVERY_LEASE = 5.0
"""Seconds an announcement's outbox row is left to the request that wrote it before any
replica's flush takes it: the request delivers it at once, so a flush taking it too would only
send it twice. A request that dies, or fails to deliver, leaves it to the flush after this."""


class KeptLedger(RevocationLedger, Protocol):
    """A ledger that can say it lost its records (``intact`` is False until ``mark_intact``)."""

    async def intact(self) -> bool: ...

    async def mark_intact(self) -> None: ...


class OutboxStatus(enum.Enum):
    """How the last flush went; the value is what ``/readyz`` says about it."""

    CLEAR = "nothing waits"
    BUS_UNAVAILABLE = "the event bus refuses them"
    WAITING = "events wait for their next attempt"
    FAILING = "the outbox cannot be read or updated"


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per event before it becomes a dead letter, and the backoff between them
    (exponential from ``base``, at most ``cap``, jittered down to half)."""

    max_attempts: int = 8
    base: float = 2.0
    cap: float = 300.0

    def retry_at(self, attempts: int, now: float, rand: float) -> float | None:
        """When to try again after ``attempts`` failures; None once they are used up."""
        if attempts >= self.max_attempts:
            return None
        return now + backoff_delay(attempts - 1, self.base, self.cap, rand, floor=0.5)


def _announcements(events: Sequence[RevocationEvent], due_at: float) -> list[Announcement]:
    return [
        Announcement(REVOCATIONS_TOPIC, payload, due_at, (record_key(event), float(event.until)))
        for event in events
        for payload in (encode_event(event),)
    ]


def _ignore(outcome: str, events: int) -> None:
    return


class EventPublisher:
    def __init__(
        self,
        bus: EventBus,
        store: Store,
        ledger: KeptLedger | None = None,
        clock: Callable[[], float] = time.time,
        *,
        retry: RetryPolicy = RetryPolicy(),
        on_outcome: Callable[[str, int], None] = _ignore,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """``on_outcome(outcome, events)`` counts outbox events ``delivered``, failed and kept
        for a ``retry``, or moved aside as a ``dead_letter``."""
        self._bus = bus
        self._store = store
        self._ledger = ledger
        self._clock = clock
        self._retry = retry
        self._on_outcome = on_outcome
        self._rand = rand
        self.status = OutboxStatus.CLEAR
        self.reason = ""

    async def _deliver(self, topic: str, payload: str) -> None:
        """Check, record, then announce: a payload no replica could read goes nowhere, and a
        replica that misses the announcement still finds the record."""
        if topic == REVOCATIONS_TOPIC:
            event = decode_event(payload)
            if self._ledger is not None:
                await self._ledger.record(event)
        await self._bus.publish(topic, payload)

    def announcements(self, events: Sequence[RevocationEvent]) -> list[Announcement]:
        """The outbox rows of ``events``, for the revoking transaction to write. Each is also
        kept as a revocation in force (before it can reach the ledger, so that no restore can
        run between the two and miss it). Due to a flush at once while the bus is known to be
        down: the request will not try it."""
        return _announcements(
            events, self._clock() + (DELIVERY_LEASE if self._bus.connected else 0.0)
        )

    async def deliver(self, kept: Sequence[OutboxItem]) -> None:
        """Deliver the announcements a revocation wrote, in order, and delete those delivered;
        what is not delivered waits for :meth:`flush`. Not tried while the bus is known to be
        down (each try would wait out Redis's timeouts: seconds per event), and never raises:
        the revocation itself is committed."""
        if not kept:
            return
        if not self._bus.connected:
            self._set(OutboxStatus.BUS_UNAVAILABLE, "the event bus is not connected")
            await self._leave(kept)
            return
        delivered: list[int] = []
        try:
            for item in kept:
                await self._deliver(item.topic, item.payload)
                delivered.append(item.id)
        except Exception as exc:
            log.warning(
                "event bus refused an event; kept in the outbox",
                extra={"topic": kept[len(delivered)].topic, "reason": str(exc)},
            )
            unavailable = isinstance(exc, BusUnavailable)
            self._set(
                OutboxStatus.BUS_UNAVAILABLE if unavailable else OutboxStatus.WAITING, str(exc)
            )
            await self._leave(kept[len(delivered) :])
        if delivered:
            try:
                await self._store.delete_outbox(delivered)
            except Exception as exc:  # delivered again by a flush: events are idempotent
                log.warning("delivered events left in the outbox", extra={"reason": str(exc)})

    async def _leave(self, items: Sequence[OutboxItem]) -> None:
        """Hand what the request did not deliver to the next flush now, not after its lease
        (those written while the bus was known to be down are due already)."""
        now = self._clock()
        try:
            for item in items:
                if item.next_attempt_at > now:
                    await self._store.update_outbox(replace(item, next_attempt_at=now))
        except Exception as exc:  # then after the lease
            log.warning("outbox events left to their lease", extra={"reason": str(exc)})

    async def restore_ledger(self) -> int:
        """Write back every revocation still in force once the ledger lost its records (Redis
        restarted empty, a failover lost writes): a ws replica started since would otherwise
        admit a logged-out session's access tokens until they expire. Returns how many were
        written (0 while the ledger is intact). Never raises: an unreachable ledger or store is
        tried again on the next call."""
        if self._ledger is None:
            return 0
        try:
            if await self._ledger.intact():
                return 0
            payloads = await self._store.live_revocations(self._clock())
            for payload in payloads:
                await self._ledger.record(decode_event(payload))
            await self._ledger.mark_intact()
        except Exception as exc:
            if not isinstance(exc, BusUnavailable):
                log.warning("revocation ledger not restored", extra={"reason": str(exc)})
            return 0
        if payloads:
            log.warning("revocation ledger restored", extra={"events": len(payloads)})
            # The ws replicas checked their sockets when Redis came back, against the empty
            # ledger: they check again now (through the outbox if the bus refuses it).
            await self.announce(LEDGER_RESTORED_TOPIC, "restored")
        return len(payloads)

    async def replay_in_force(self) -> int:
        """Announce every revocation still in force on the bus again; returns how many. A bus
        that keeps nothing (the embedded stack's in-process one) starts empty with the process,
        and a gateway started with it would admit a logged-out session's access tokens until
        they expire: the embedded stack calls this once its gateway listens to the bus, before
        that gateway accepts a socket."""
        payloads = await self._store.live_revocations(self._clock())
        for payload in payloads:
            await self._bus.publish(REVOCATIONS_TOPIC, payload)
        return len(payloads)

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
            unavailable = isinstance(exc, BusUnavailable)
            self._set(
                OutboxStatus.BUS_UNAVAILABLE if unavailable else OutboxStatus.WAITING, str(exc)
            )
            return False
        return True

    async def flush(self, limit: int = 100) -> int:
        """Deliver the events that are due, oldest first; returns how many went out.

        Never raises, so the loop calling it lives as long as the service: a failure is logged
        when the status changes and reported by :meth:`describe_backlog`."""
        try:
            return await self._flush(limit)
        except Exception as exc:
            self._set(OutboxStatus.FAILING, str(exc), exc)
            return 0

    async def _flush(self, limit: int) -> int:
        now = self._clock()
        items = await self._store.outbox_batch(limit, due_by=now)
        delivered: list[int] = []
        paused: BusUnavailable | None = None
        retrying: Exception | None = None
        try:
            for item in items:
                try:
                    await self._deliver(item.topic, item.payload)
                except BusUnavailable as exc:
                    paused = exc
                    break
                except Exception as exc:
                    if await self._failed(item, exc, now):
                        retrying = exc
                else:
                    delivered.append(item.id)
        finally:
            if delivered:
                await self._store.delete_outbox(delivered)
                self._on_outcome("delivered", len(delivered))
                log.info("outbox delivered", extra={"events": len(delivered)})
        if paused is not None:
            self._set(OutboxStatus.BUS_UNAVAILABLE, str(paused))
        elif retrying is not None:
            self._set(OutboxStatus.WAITING, str(retrying))
        elif self.status is not OutboxStatus.CLEAR and (await self._store.outbox_backlog()).waiting:
            self._set(
                OutboxStatus.WAITING, self.reason if self.status is OutboxStatus.WAITING else ""
            )
        else:
            self._set(OutboxStatus.CLEAR, "")
        return len(delivered)

    async def _failed(self, item: OutboxItem, exc: Exception, now: float) -> bool:
        """Count a failed attempt; True when the event will be tried again, False when it was
        moved to the dead letters."""
        attempts = item.attempts + 1
        retry_at = self._retry.retry_at(attempts, now, self._rand())
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        await self._store.update_outbox(
            replace(
                item,
                attempts=attempts,
                last_error=error,
                next_attempt_at=now if retry_at is None else retry_at,
                dead_at=now if retry_at is None else None,
            )
        )
        where = {"outbox_id": item.id, "topic": item.topic, "attempts": attempts, "error": error}
        if retry_at is None:
            self._on_outcome("dead_letter", 1)
            log.error("outbox event moved to the dead letters", extra=where)
            return False
        self._on_outcome("retry", 1)
        log.warning(
            "outbox event failed; tried again later",
            extra={**where, "retry_in": round(retry_at - now, 1)},
        )
        return True

    def _set(self, status: OutboxStatus, reason: str, error: Exception | None = None) -> None:
        """Log once per change of status, not on every flush that finds things as they were."""
        self.reason = reason
        if status is self.status:
            return
        self.status = status
        if status is OutboxStatus.CLEAR:
            log.info("outbox clear: every waiting event went out")
        else:
            log.warning(
                "outbox held up: %s", status.value, extra={"reason": reason}, exc_info=error
            )

    async def describe_backlog(self) -> str | None:
        """What ``/readyz`` reports while events are held up; None when nothing is."""
        if self.status is OutboxStatus.CLEAR:
            return None
        why = f"{self.status.value} ({self.reason})" if self.reason else self.status.value
        try:
            backlog = await self._store.outbox_backlog()
        except Exception:
            return why
        if backlog.oldest_at is None:
            return why
        age = max(0.0, self._clock() - backlog.oldest_at)
        return f"{backlog.waiting} event(s) waiting, the oldest for {round(age)} s: {why}"


class OutboxOnly:
    """Announcements for a command run in a shell (``clients delete``): written to the outbox,
    due at once, for a running service (any replica) to deliver within a second, whether or not
    the shell reaches Redis."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def announcements(self, events: Sequence[RevocationEvent]) -> list[Announcement]:
        return _announcements(events, self._clock())

    async def deliver(self, kept: Sequence[OutboxItem]) -> None:
        return


REPLAY_LIMIT = 10_000
"""Dead letters an operator's command looks at, at most (oldest first)."""


async def _dead_letters(store: Store, ids: Collection[int] | None) -> list[OutboxItem]:
    dead = await store.outbox_dead_letters(REPLAY_LIMIT)
    return [item for item in dead if ids is None or item.id in ids]


async def replay_dead_letters(store: Store, ids: Collection[int] | None) -> list[OutboxItem]:
    """Give dead letters (every one when ``ids`` is None) a fresh set of attempts, due at once;
    their last error stays for reference. Returns those replayed."""
    chosen = await _dead_letters(store, ids)
    for item in chosen:
        await store.update_outbox(replace(item, attempts=0, next_attempt_at=0.0, dead_at=None))
    return chosen


async def drop_dead_letters(store: Store, ids: Collection[int]) -> list[OutboxItem]:
    """Delete dead letters for good (never an event still waiting); returns those deleted."""
    chosen = await _dead_letters(store, ids)
    await store.delete_outbox([item.id for item in chosen])
    return chosen
