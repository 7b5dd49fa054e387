"""The event bus between services and replicas.

Payloads are strings serialized once by the publisher; every receiver gets the same object, so a
broadcast is never re-encoded per receiver. Handlers are plain callables run on the event loop: they
must be quick and must not block (schedule a task if real work is needed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

__all__ = ["EventBus", "Handler", "InProcessBus", "Unsubscribe"]

Handler = Callable[[str, str], None]
"""Called with ``(topic, payload)`` for every message on a subscribed topic."""

Unsubscribe = Callable[[], None]

log = logging.getLogger(__name__)


class EventBus(Protocol):
    """Fan-out of string messages by topic. Implementations: in-process (default) and Redis."""

    async def publish(self, topic: str, payload: str) -> None: ...

    def subscribe(self, topic: str, handler: Handler) -> Unsubscribe: ...

    async def close(self) -> None: ...


class InProcessBus:
    """The embedded default: delivery is a synchronous call into every handler of the topic."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

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

    async def close(self) -> None:
        self._handlers.clear()
