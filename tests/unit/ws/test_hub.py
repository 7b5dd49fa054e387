"""The hub's fan-out and shutdown: one broken subscriber costs nobody else a message, and no
presence task outlives the hub."""

from __future__ import annotations

import asyncio
import json

from shared.bus import InProcessBus
from ws_service.domain.history import MemoryHistory, Position
from ws_service.domain.hub import Hub
from ws_service.domain.namespaces import Namespaces
from ws_service.domain.presence import Member, MemoryPresence


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def deliver(self, channel: str, text: str, position: Position | None) -> None:
        self.texts.append(text)


class Broken:
    def deliver(self, channel: str, text: str, position: Position | None) -> None:
        raise RuntimeError("a bug in one socket's state")


def hub_on(bus: InProcessBus, **kwargs: object) -> Hub:
    return Hub(
        bus,
        MemoryHistory(bus.publish),
        MemoryPresence(bus.publish),
        Namespaces(),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_raising_subscriber_does_not_stop_delivery_to_the_others() -> None:
    failures: list[None] = []
    hub = hub_on(InProcessBus(), on_delivery_failed=lambda: failures.append(None))
    before, broken, after = Recorder(), Broken(), Recorder()
    for subscriber in (before, broken, after):
        hub.join("chat:a", subscriber)
    await hub.publish("chat:a", {"n": 1}, None)
    await hub.publish("chat:a", {"n": 2}, None)
    assert [json.loads(t)["data"] for t in before.texts] == [{"n": 1}, {"n": 2}]
    assert [json.loads(t)["data"] for t in after.texts] == [{"n": 1}, {"n": 2}]
    assert len(failures) == 2


async def test_a_raising_presence_watcher_does_not_stop_the_others() -> None:
    bus = InProcessBus()
    hub = hub_on(bus)
    watcher, broken, other = Recorder(), Broken(), Recorder()
    for subscriber in (watcher, broken, other):
        hub.join("chat:a", subscriber, presence_events=True)
    joiner = Recorder()
    hub.join("chat:a", joiner)
    await hub.track("chat:a", joiner, Member("u1", "alice"))
    assert [json.loads(t)["type"] for t in watcher.texts] == ["join"]
    assert [json.loads(t)["type"] for t in other.texts] == ["join"]


class HangingPresence(MemoryPresence):
    async def remove(self, channel: str, entry_id: str, member: Member) -> None:
        await asyncio.Event().wait()


async def test_close_cancels_presence_removals_that_outlast_the_timeout() -> None:
    bus = InProcessBus()
    hub = Hub(
        bus,
        MemoryHistory(bus.publish),
        HangingPresence(bus.publish),
        Namespaces(),
        sync_timeout=0.05,
    )
    subscriber = Recorder()
    hub.join("chat:a", subscriber)
    await hub.track("chat:a", subscriber, Member("u1", None))
    hub.leave("chat:a", subscriber)
    [removal] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await hub.close()
    assert removal.cancelled()
