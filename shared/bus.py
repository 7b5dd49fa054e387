"""The event bus between services and replicas, and the revocation ledger beside it: the ports
both services code against (their Redis implementations are in ``shared.redis``; this module
imports no backend, so a domain may import it).

Payloads are strings serialized once by the publisher; every receiver gets the same object, so a
broadcast is never re-encoded per receiver. Handlers are plain callables run on the event loop: they
must be quick and must not block (schedule a task if real work is needed).

Pub/sub forgets what it could not deliver, so auth_service also records every revocation in the
ledger with an expiry equal to the covered tokens' remaining life (``until``). ws replicas check
this record on every auth and renewal, and reconcile their live sockets against it after a gap.

Topics come in two kinds, told apart by name alone (:func:`is_sharded`). A *sharded* topic
(``chan:{<channel>}``, ``pres:{<channel>}``: :func:`sharded_topic`) carries one channel's traffic;
on a Redis Cluster it lives on the shard that owns its hash tag, beside the channel's keys, and
reaches only the replicas subscribed to it. Every other topic is *broadcast* (revocations, key
announcements, any control topic): it reaches every replica that subscribed, wherever it listens.
A new control topic needs nothing but a name outside ``SHARDED_PREFIXES``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from realtime_gateway_protocol.access_token import TokenRef
from realtime_gateway_protocol.events import RevocationEvent

__all__ = [
    "SHARDED_PREFIXES",
    "BusError",
    "BusOutcomeUnknown",
    "BusUnavailable",
    "EventBus",
    "Handler",
    "InProcessBus",
    "ReconnectListener",
    "RevocationLedger",
    "Unsubscribe",
    "is_sharded",
    "sharded_topic",
    "topic_channel",
]

SHARDED_PREFIXES = ("chan:", "pres:")
"""The prefixes of sharded topics: a channel's messages, its presence events."""


def is_sharded(topic: str) -> bool:
    return topic.startswith(SHARDED_PREFIXES)


def sharded_topic(prefix: str, channel: str) -> str:
    """``chan:{chat:general}``: the hash tag is the channel, as in its Redis keys
    (``hist:{chat:general}:log``), so a script that writes them may publish on it. Channel names
    never hold braces."""
    if prefix not in SHARDED_PREFIXES:
        raise ValueError(f"{prefix!r} is not a sharded topic prefix")
    return f"{prefix}{{{channel}}}"


def topic_channel(topic: str) -> str:
    """The channel a sharded topic carries (the inverse of :func:`sharded_topic`)."""
    return topic[topic.index("{") + 1 : -1]


Handler = Callable[[str, str], None]
"""Called with ``(topic, payload)`` for every message on a subscribed topic."""

Unsubscribe = Callable[[], None]

ReconnectListener = Callable[[], Awaitable[None]]
"""Awaited (as its own task) after every reconnection, once all topics are subscribed again."""

log = logging.getLogger(__name__)


class BusError(Exception):
    """Root of the bus errors; ``code`` is the machine-readable reason."""

    code = "bus_error"


class BusUnavailable(BusError):
    """The message was not handed to the broker: the caller keeps it (outbox) or reports it."""

    code = "bus_unavailable"


class BusOutcomeUnknown(BusUnavailable):
    """The command reached Redis but no reply came back: it may have been applied. A caller that
    would make up for a lost message (a local delivery) must not, or it may deliver it twice."""

    code = "bus_outcome_unknown"


class EventBus(Protocol):
    """Fan-out of string messages by topic. Implementations: in-process (default) and Redis
    (``shared.redis.bus``), which can be cut off from its broker and come back."""

    @property
    def connected(self) -> bool:
        """False while messages cannot cross processes (readiness reports it)."""
        ...

    async def publish(self, topic: str, payload: str) -> None:
        """Raises ``BusUnavailable`` when the message reached nobody beyond this process."""
        ...

    def subscribe(self, topic: str, handler: Handler) -> Unsubscribe: ...

    async def wait_synced(self) -> None:
        """Return once every subscribed topic is live, so the next message is not missed."""
        ...

    async def check_subscriptions(self, probes: Iterable[str] = ()) -> None:
        """Start-up, once its own topics are subscribed: raise when the broker refuses one for
        good (a configuration error), or one of ``probes`` (topics of the kinds subscribed later,
        a client's channel, subscribed and dropped here); return once they are live, or the
        broker is down."""
        ...

    def add_reconnect_listener(self, listener: ReconnectListener) -> Unsubscribe:
        """Run ``listener`` after every reconnection (messages may have been missed before it)."""
        ...

    async def close(self) -> None: ...


class InProcessBus:
    """The embedded default: delivery is a synchronous call into every handler of the topic. It is
    always connected and in sync, and never reconnects."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    @property
    def connected(self) -> bool:
        return True

    async def publish(self, topic: str, payload: str) -> None:
        for handler in tuple(self._handlers.get(topic, ())):
            try:
                handler(topic, payload)
            except Exception:
                log.exception("event handler failed", extra={"topic": topic})

    def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        self._handlers.setdefault(topic, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(topic)
            if handlers and handler in handlers:
                handlers.remove(handler)
                if not handlers:
                    del self._handlers[topic]

        return unsubscribe

    async def wait_synced(self) -> None:
        return

    async def check_subscriptions(self, probes: Iterable[str] = ()) -> None:
        return

    def add_reconnect_listener(self, listener: ReconnectListener) -> Unsubscribe:
        return _nothing

    async def close(self) -> None:
        self._handlers.clear()


def _nothing() -> None:
    return


class RevocationLedger(Protocol):
    """auth_service records; ws_service asks. Both raise ``BusUnavailable`` when unreachable."""

    async def record(self, event: RevocationEvent, now: float | None = None) -> None: ...

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]:
        """For each token, whether it is revoked (one round trip for all)."""
        ...
