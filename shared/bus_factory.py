"""Pick the bus from configuration, so both services choose it the same way."""

from __future__ import annotations

from shared.bus import EventBus, InProcessBus
from shared.redis_bus import RedisBus

__all__ = ["open_bus"]


async def open_bus(redis_url: str | None) -> EventBus:
    """The in-process bus when ``redis_url`` is empty (embedded mode), else a started RedisBus.

    The RedisBus comes back started even if Redis is down: it retries by itself, and says so
    through the ``EventBus`` members (``connected``, reconnect listeners). Close either kind with
    ``await bus.close()``.
    """
    if not redis_url or not redis_url.strip():
        return InProcessBus()
    bus = RedisBus(redis_url.strip())
    await bus.start()
    return bus
