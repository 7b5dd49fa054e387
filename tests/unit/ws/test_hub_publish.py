"""What the hub does when Redis does not take a publish, or takes it without confirming it."""

from __future__ import annotations

import pytest

from shared.bus import BusError, BusOutcomeUnknown, BusUnavailable, InProcessBus
from ws_service.domain.errors import Unconfirmed
from ws_service.domain.history import HistoryPolicy, MemoryHistory, Position
from ws_service.domain.hub import Hub
from ws_service.domain.namespaces import Namespace, Namespaces
from ws_service.domain.presence import MemoryPresence

POLICY = HistoryPolicy(size=10, ttl=60)


class FailingBus(InProcessBus):
    """Delivers in process unless told to fail the way a Redis bus can."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: BusError | None = None

    async def publish(self, topic: str, payload: str) -> None:
        if self.failure is not None:
            raise self.failure
        await super().publish(topic, payload)


class Subscriber:
    def __init__(self) -> None:
        self.received: list[str] = []

    def deliver(self, channel: str, text: str, position: Position | None) -> None:
        self.received.append(text)


def hub_with(bus: FailingBus) -> Hub:
    history = MemoryHistory(bus.publish)
    namespaces = Namespaces([Namespace("chat", history=POLICY)])
    return Hub(bus, history, MemoryPresence(bus.publish), namespaces)


@pytest.mark.parametrize("channel", ["chat:a", "news:a"])  # with history, and without
async def test_a_publish_redis_may_have_taken_is_not_delivered_again_here(channel: str) -> None:
    bus = FailingBus()
    hub = hub_with(bus)
    subscriber = Subscriber()
    hub.join(channel, subscriber)
    bus.failure = BusOutcomeUnknown("no reply")
    with pytest.raises(Unconfirmed):
        await hub.publish(channel, "maybe", None)
    assert subscriber.received == []


@pytest.mark.parametrize("channel", ["chat:a", "news:a"])
async def test_a_publish_redis_refused_is_delivered_here_once(channel: str) -> None:
    bus = FailingBus()
    hub = hub_with(bus)
    subscriber = Subscriber()
    hub.join(channel, subscriber)
    bus.failure = BusUnavailable("down")
    await hub.publish(channel, "local", None)
    assert len(subscriber.received) == 1
    assert '"data":"local"' in subscriber.received[0]
