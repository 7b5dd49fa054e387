"""The hub's fan-out and shutdown: one broken subscriber costs nobody else a message, and no
presence task outlives the hub."""

from __future__ import annotations

import asyncio
import json

from shared.bus import InProcessBus
from tests.unit.ws.fakes import HeldPresence
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


async def test_a_subscriber_that_leaves_while_presence_is_restored_is_not_added_back() -> None:
    """The reconnection restores presence entries from a snapshot while its reconciliation
    closes revoked sockets: an entry added back after its socket left stayed, listed until the
    presence TTL swept it (found by a probe: logged-out users listed after a Redis hang)."""
    bus = InProcessBus()
    presence = HeldPresence(bus.publish, lambda kind, channel, member: None)
    hub = Hub(bus, MemoryHistory(bus.publish), presence, Namespaces())
    stays, leaves, gone = Recorder(), Recorder(), Recorder()
    presence.release.set()
    for subscriber, user in ((leaves, "u2"), (stays, "u1"), (gone, "u3")):
        hub.join("chat:a", subscriber)
        await hub.track("chat:a", subscriber, Member(user, None))
    presence.release = asyncio.Event()
    restoring = asyncio.ensure_future(hub.restore_presence())
    for _ in range(5):
        await asyncio.sleep(0)
    hub.leave("chat:a", leaves)  # its add is under way
    hub.leave("chat:a", gone)  # its add has not begun
    presence.release.set()
    await restoring
    for _ in range(20):
        await asyncio.sleep(0)
    assert [member.id for member, _ in await hub.members("chat:a")] == ["u1"]
