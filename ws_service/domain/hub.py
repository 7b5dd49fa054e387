"""Channel fan-out across replicas through the event bus.

A publish is serialized once and published on ``chan:<name>``; every replica with local subscribers
holds one bus subscription for the channel and hands the same string to each of them. When the bus
refuses a message (Redis down), this replica's own subscribers still get it: local traffic flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from shared.access_token import Claims
from shared.bus import EventBus, Unsubscribe
from shared.bus_errors import BusUnavailable
from ws_service.domain import protocol

__all__ = ["CHANNEL_TOPIC_PREFIX", "Hub", "Subscriber"]

CHANNEL_TOPIC_PREFIX = "chan:"


class Subscriber(Protocol):
    def deliver(self, text: str) -> None:
        """Queue ``text`` for sending without waiting for the peer."""


class Hub:
    def __init__(
        self,
        bus: EventBus,
        on_delivered: Callable[[int], None] | None = None,
        *,
        on_local_only: Callable[[], None] | None = None,
        sync_timeout: float = 2.0,
    ) -> None:
        self._bus = bus
        self._local: dict[str, set[Subscriber]] = {}
        self._unsubscribe: dict[str, Unsubscribe] = {}
        self._on_delivered = on_delivered
        self._on_local_only = on_local_only
        self._sync_timeout = sync_timeout

    def join(self, channel: str, subscriber: Subscriber) -> None:
        members = self._local.get(channel)
        if members is None:
            members = self._local[channel] = set()
            self._unsubscribe[channel] = self._bus.subscribe(
                CHANNEL_TOPIC_PREFIX + channel, self._deliver
            )
        members.add(subscriber)

    def leave(self, channel: str, subscriber: Subscriber) -> None:
        members = self._local.get(channel)
        if members is None:
            return
        members.discard(subscriber)
        if not members:
            del self._local[channel]
            self._unsubscribe.pop(channel)()

    async def synced(self) -> None:
        """Wait until the bus confirmed every channel subscription, so that a client told
        ``subscribed`` misses no message published after it. Not while the bus is cut off: local
        traffic needs no confirmation, and the bus subscribes again when it reconnects."""
        if self._bus.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bus.wait_synced(), self._sync_timeout)

    async def publish(self, channel: str, data: Any, sender: Claims | None) -> None:
        frame = protocol.message(channel, data, sender, int(time.time() * 1000))
        topic = CHANNEL_TOPIC_PREFIX + channel
        try:
            await self._bus.publish(topic, frame)
        except BusUnavailable:
            # Nothing reached Redis, so nothing comes back through it: deliver here, once.
            self._deliver(topic, frame)
            if self._on_local_only is not None:
                self._on_local_only()

    def _deliver(self, topic: str, payload: str) -> None:
        members = self._local.get(topic[len(CHANNEL_TOPIC_PREFIX) :], ())
        for subscriber in members:
            subscriber.deliver(payload)
        if self._on_delivered is not None:
            self._on_delivered(len(members))

    def close(self) -> None:
        for unsubscribe in self._unsubscribe.values():
            unsubscribe()
        self._unsubscribe.clear()
        self._local.clear()
