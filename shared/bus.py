"""The event bus between services and replicas.

Payloads are strings serialized once by the publisher; every receiver gets the same object, so a
broadcast is never re-encoded per receiver. Handlers are plain callables run on the event loop: they
must be quick and must not block (schedule a task if real work is needed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["EventBus", "Handler", "InProcessBus", "ReconnectListener", "Unsubscribe"]

Handler = Callable[[str, str], None]
"""Called with ``(topic, payload)`` for every message on a subscribed topic."""

Unsubscribe = Callable[[], None]

ReconnectListener = Callable[[], Awaitable[None]]
"""Awaited (as its own task) after every reconnection, once all topics are subscribed again."""

log = logging.getLogger(__name__)


class EventBus(Protocol):
    """Fan-out of string messages by topic. Implementations: in-process (default) and Redis
    (``shared.redis_bus``), which can be cut off from its broker and come back."""

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

    def add_reconnect_listener(self, listener: ReconnectListener) -> Unsubscribe:
        return _nothing

    async def close(self) -> None:
        self._handlers.clear()


def _nothing() -> None:
    return
