"""Channel fan-out across replicas through the event bus, with history and presence.

A publish is serialized once and published on ``chan:{<name>}``; every replica with local subscribers
holds one bus subscription for the channel and hands the same string to each of them. In a
namespace with history the publish goes through ``History.publish``, which gives the message its
offset in the same step that puts it on the bus, so every replica sees offset order. When the bus
refuses a message (Redis down), this replica's own subscribers still get it, without an offset:
local traffic flows, but that message cannot be recovered.

Presence: every subscription to a channel of a presence namespace is one entry (an id unique across
replicas) in the ``Presence`` backend; connections that asked for ``presence_events`` get the
``join``/``leave`` frames published on ``pres:{<channel>}``, debounced (``PresenceDebounce``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.tasks import cancel_and_wait
from shared.bus import (
    BusOutcomeUnknown,
    BusUnavailable,
    EventBus,
    Unsubscribe,
    sharded_topic,
    topic_channel,
)
from shared.jsonlog import Throttled
from ws_service.domain import protocol
from ws_service.domain.clock import Clock, LoopClock
from ws_service.domain.errors import NotEnabled, Unconfirmed
from ws_service.domain.history import History, HistoryPage, Position, position_of
from ws_service.domain.namespaces import Namespaces
from ws_service.domain.presence import Member, Presence, presence_topic
from ws_service.domain.presence_debounce import PresenceDebounce
from ws_service.domain.webhooks import Events

__all__ = ["CHANNEL_TOPIC_PREFIX", "Hub", "Subscriber", "channel_topic"]

CHANNEL_TOPIC_PREFIX = "chan:"


def channel_topic(channel: str) -> str:
    return sharded_topic(CHANNEL_TOPIC_PREFIX, channel)


log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def deliver(self, channel: str, text: str, position: Position | None) -> None:
        """Queue ``text`` for sending without waiting for the peer; ``position`` is the
        message's offset and epoch in a channel with history (None for other frames)."""


class Hub:
    def __init__(
        self,
        bus: EventBus,
        history: History,
        presence: Presence,
        namespaces: Namespaces,
        *,
        on_delivered: Callable[[int], None] | None = None,
        on_local_only: Callable[[], None] | None = None,
        on_delivery_failed: Callable[[], None] | None = None,
        on_delivery_delay: Callable[[float], None] | None = None,
        sync_timeout: float = 2.0,
        presence_debounce: float = 0.0,
        clock: Clock | None = None,
        events: Events | None = None,
    ) -> None:
        self._bus = bus
        self._history = history
        self._presence = presence
        self.namespaces = namespaces
        self._local: dict[str, set[Subscriber]] = {}
        self._unsubscribe: dict[str, Unsubscribe] = {}
        self._watchers: dict[str, set[Subscriber]] = {}
        self._unwatch: dict[str, Unsubscribe] = {}
        self._present: dict[str, dict[Subscriber, tuple[str, Member]]] = {}
        # Presence removals under way, per channel (only while there are some): ``members`` waits.
        self._forgetting: dict[str, set[asyncio.Task[None]]] = {}
        self._clock: Clock = clock or LoopClock()
        # Met by every subscribe or leave of a presence channel while Redis is down.
        self._presence_add_down = Throttled(log, "presence entries not recorded: redis unreachable")
        self._presence_remove_down = Throttled(
            log, "presence entries not removed: redis unreachable"
        )
        self.events = events or Events(clock=self._clock)
        """The webhook events of every socket of this hub's gateway."""
        self._presence_frames = PresenceDebounce(
            presence_debounce, self._show_presence, self._clock
        )
        self._replica = secrets.token_hex(6)
        self._entry_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_delivered = on_delivered
        self._on_local_only = on_local_only
        self._on_delivery_failed = on_delivery_failed
        self._on_delivery_delay = on_delivery_delay
        self._sync_timeout = sync_timeout

    # -- subscriptions ---------------------------------------------------------------------

    def join(self, channel: str, subscriber: Subscriber, *, presence_events: bool = False) -> None:
        """Deliver the channel's messages (and its join/leave frames if asked) to ``subscriber``."""
        members = self._local.get(channel)
        if members is None:
            members = self._local[channel] = set()
            self._unsubscribe[channel] = self._bus.subscribe(channel_topic(channel), self._deliver)
        members.add(subscriber)
        if presence_events:
            watchers = self._watchers.get(channel)
            if watchers is None:
                watchers = self._watchers[channel] = set()
                self._unwatch[channel] = self._bus.subscribe(
                    presence_topic(channel), self._deliver_presence
                )
            watchers.add(subscriber)
        else:
            self._stop_watching(channel, subscriber)

    @property
    def connected(self) -> bool:
        """Whether the bus reaches Redis: while it does not, what the reconnect listeners
        restore (presence entries, connection slots, the ledger's verdicts) is not asked of it."""
        return self._bus.connected

    def watching(self, channel: str, subscriber: Subscriber) -> bool:
        """Whether ``subscriber`` gets the channel's join/leave frames (``presence_events``)."""
        watchers = self._watchers.get(channel)
        return watchers is not None and subscriber in watchers

    def leave(self, channel: str, subscriber: Subscriber) -> None:
        """Stop delivering; a tracked presence entry is removed in the background (``members``
        waits for the removal)."""
        self._stop_watching(channel, subscriber)
        present = self._present.get(channel)
        if present is not None and subscriber in present:
            entry_id, member = present.pop(subscriber)
            if not present:
                del self._present[channel]
            self._forget_later(channel, entry_id, member)
        members = self._local.get(channel)
        if members is None:
            return
        members.discard(subscriber)
        if not members:
            del self._local[channel]
            self._unsubscribe.pop(channel)()

    def _stop_watching(self, channel: str, subscriber: Subscriber) -> None:
        watchers = self._watchers.get(channel)
        if watchers is not None and subscriber in watchers:
            watchers.discard(subscriber)
            if not watchers:
                del self._watchers[channel]
                self._unwatch.pop(channel)()
                self._presence_frames.forget(channel)

    def channels(self, prefix: str, after: str, limit: int) -> list[tuple[str, int]]:
        """This replica's channels with their local subscriber counts: the first ``limit`` names
        after ``after`` that start with ``prefix``, in name order."""
        names = heapq.nsmallest(
            limit, (name for name in self._local if name > after and name.startswith(prefix))
        )
        return [(name, len(self._local[name])) for name in names]

    async def synced(self) -> None:
        """Wait until the bus confirmed every channel subscription, so that a client told
        ``subscribed`` misses no message published after it. Not while the bus is cut off: local
        traffic needs no confirmation, and the bus subscribes again when it reconnects."""
        if self._bus.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bus.wait_synced(), self._sync_timeout)

    # -- messages and history --------------------------------------------------------------

    async def publish(self, channel: str, data: Any, sender: Claims | None) -> None:
        """Raises ``Unconfirmed`` when Redis took the message without confirming it."""
        frame = protocol.message(channel, data, sender, int(self._clock.time() * 1000))
        topic = channel_topic(channel)
        policy = self.namespaces.of(channel).history
        try:
            if policy is None:
                await self._bus.publish(topic, frame)
            else:
                owner = sender.sub if sender is not None else None
                await self._history.publish(channel, topic, frame, policy, owner=owner)
        except BusOutcomeUnknown:
            # It may be on its way to every subscriber, this replica's too: delivering it here as
            # well could repeat it.
            raise Unconfirmed() from None
        except BusUnavailable:
            # Nothing reached Redis, so nothing comes back through it: deliver here, once.
            self._fan_out(channel, frame, None)
            if self._on_local_only is not None:
                self._on_local_only()
        if self.namespaces.of(channel).webhook_publish:
            self.events.publish(channel, data, sender)

    async def history(
        self, channel: str, since: Position | None, limit: int, max_bytes: int = 0
    ) -> HistoryPage:
        """Raises ``NotEnabled`` without a policy and ``BusUnavailable`` when Redis is down."""
        policy = self.namespaces.of(channel).history
        if policy is None:
            raise NotEnabled("this channel's namespace keeps no history")
        return await self._history.read(channel, since, min(limit, policy.size), policy, max_bytes)

    def _deliver(self, topic: str, payload: str) -> None:
        """A message from the bus: to this replica's subscribers, and its delay since its publish
        (on any replica) to ``on_delivery_delay``."""
        channel = topic_channel(topic)
        position = position_of(payload) if self.namespaces.of(channel).history is not None else None
        self._fan_out(channel, payload, position)
        if self._on_delivery_delay is not None:
            sent = protocol.published_at(payload)
            if sent is not None:
                self._on_delivery_delay(max(0.0, self._clock.time() - sent))

    def _fan_out(self, channel: str, payload: str, position: Position | None) -> None:
        members = self._local.get(channel, ())
        self._deliver_each(members, channel, payload, position)
        if self._on_delivered is not None:
            self._on_delivered(len(members))

    def _deliver_each(
        self, members: Iterable[Subscriber], channel: str, payload: str, position: Position | None
    ) -> None:
        """One subscriber that fails (a bug in its socket's state) must not cost the others
        their copy: each delivery is isolated, logged and counted."""
        for subscriber in members:
            try:
                subscriber.deliver(channel, payload, position)
            except Exception:
                log.exception("delivery to one subscriber failed", extra={"channel": channel})
                if self._on_delivery_failed is not None:
                    self._on_delivery_failed()

    # -- presence --------------------------------------------------------------------------

    async def track(self, channel: str, subscriber: Subscriber, member: Member) -> None:
        """Count ``subscriber`` as ``member`` in the channel's presence (once per subscription).

        While Redis is down the entry is only remembered here; ``restore_presence`` adds it when
        the bus reconnects. A subscriber that left before (its join awaited, meanwhile its socket
        closed or the app unsubscribed it) is not counted: nothing would ever remove its entry,
        which this replica would keep refreshing. One that leaves while the entry is being added
        has it removed once the add is done, whichever of the two Redis ran first."""
        if subscriber not in self._local.get(channel, ()):
            return
        present = self._present.setdefault(channel, {})
        if subscriber in present:
            return
        entry_id = f"{self._replica}:{next(self._entry_ids)}"
        present[subscriber] = (entry_id, member)
        try:
            if not self._bus.connected:  # restore_presence adds it on the reconnection
                raise BusUnavailable("the event bus is disconnected")
            await self._presence.add(channel, entry_id, member)
        except BusUnavailable as exc:
            self._presence_add_down.warning(error=str(exc))
        if self._present.get(channel, {}).get(subscriber) != (entry_id, member):
            await self._forget(channel, entry_id, member)

    async def members(self, channel: str) -> list[tuple[Member, int]]:
        """Every user present, once this replica's removals from the channel that are under way
        are done: a socket told ``unsubscribed`` is not listed by the ``presence`` it asks next
        (the list is never debounced), in Redis as in memory."""
        pending = self._forgetting.get(channel)
        if pending:
            await asyncio.wait(set(pending))
        return await self._presence.members(channel)

    async def refresh_presence(self) -> None:
        """Extend every presence entry of this replica's live subscriptions by one lifetime. An
        entry the backend no longer has lapsed while this replica stalled (a pause longer than
        an entry's life, shorter than what makes the bus reconnect): its user was announced as
        gone while still subscribed, so the entries are added back as after a reconnection."""
        entries = [
            (channel, [entry_id for entry_id, _ in present.values()])
            for channel, present in self._present.items()
        ]
        gone = await self._presence.refresh(entries)
        if gone:
            await self.restore_presence(frozenset(gone))

    async def restore_presence(self, only: frozenset[tuple[str, str]] | None = None) -> None:
        """Bus reconnect listener: Redis may have lost (or expired) this replica's entries. A
        subscriber that leaves meanwhile (the reconnection's reconciliation closes sockets as
        this runs) is not added back, or is removed again once its add is done."""
        restored = [
            (channel, subscriber, entry)
            for channel, present in self._present.items()
            for subscriber, entry in present.items()
            if only is None or (channel, entry[0]) in only  # the pairs the backend lost, if given
        ]
        try:
            # All in one batch: one add (a round trip) per entry in turn took longer than an entry
            # lives for thousands of them, so the first added lapsed before the next refresh, were
            # swept, and added back again, announcing leaves and joins without end.
            await self._presence.add_all([(channel, *entry) for channel, _, entry in restored])
            for channel, subscriber, entry in restored:
                if self._present.get(channel, {}).get(subscriber) != entry:
                    await self._forget(channel, *entry)  # left while it was added back
        except BusUnavailable as exc:
            log.warning("presence not restored: redis unreachable", extra={"error": str(exc)})

    def _deliver_presence(self, topic: str, payload: str) -> None:
        self._presence_frames.announce(topic_channel(topic), payload)

    def _show_presence(self, channel: str, payload: str) -> None:
        self._deliver_each(self._watchers.get(channel, ()), channel, payload, None)

    async def _forget(self, channel: str, entry_id: str, member: Member) -> None:
        try:
            await self._presence.remove(channel, entry_id, member)
        except BusUnavailable as exc:
            # The entry expires by itself once this replica stops refreshing it.
            self._presence_remove_down.warning(error=str(exc))

    def _forget_later(self, channel: str, entry_id: str, member: Member) -> None:
        task = asyncio.get_running_loop().create_task(self._forget(channel, entry_id, member))
        self._tasks.add(task)
        self._forgetting.setdefault(channel, set()).add(task)
        task.add_done_callback(functools.partial(self._forgotten, channel))

    def _forgotten(self, channel: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        pending = self._forgetting.get(channel)
        if pending is not None:
            pending.discard(task)
            if not pending:
                del self._forgetting[channel]

    async def close(self) -> None:
        """Drop the bus subscriptions; let pending presence removals finish (briefly), then
        cancel the rest: none outlives the hub."""
        for unsubscribe in (*self._unsubscribe.values(), *self._unwatch.values()):
            unsubscribe()
        self._unsubscribe.clear()
        self._unwatch.clear()
        self._local.clear()
        self._watchers.clear()
        self._presence_frames.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._sync_timeout)
            await cancel_and_wait(*self._tasks)
