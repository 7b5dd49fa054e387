"""A Redis bus link's bookkeeping of what Redis confirmed, driven with a scripted subscriber
connection: the replies come in the order the commands left, as late as a slow Redis sends them."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.redis.bus import _Link, _Requested

TOPIC = "chan:{room}"


class _PubSub:
    """Records what the link sends; answers nothing by itself."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def subscribe(self, *topics: str) -> None:
        self.sent.extend(("subscribe", topic) for topic in topics)

    async def ssubscribe(self, *topics: str) -> None:
        self.sent.extend(("ssubscribe", topic) for topic in topics)

    async def unsubscribe(self, *topics: str) -> None:
        self.sent.extend(("unsubscribe", topic) for topic in topics)

    async def sunsubscribe(self, *topics: str) -> None:
        self.sent.extend(("sunsubscribe", topic) for topic in topics)


class _Bus:
    _cluster = None

    def __init__(self) -> None:
        self.handlers: set[str] = set()

    def _topics_of(self, key: str) -> set[str]:
        return set(self.handlers)

    def _pulse(self) -> None:
        pass

    def _dispatch(self, topic: str, payload: Any) -> None:
        pass


async def test_a_topic_whose_unsubscription_is_still_out_is_never_confirmed() -> None:
    """Dropped, taken again, dropped again and taken a third time within a round trip (room
    switches on one replica): the reply to the first re-subscription came while the second
    unsubscription was still out, and counted the topic as confirmed, so a subscriber taking it
    a third time was told synced at once, while Redis dropped it and the new subscription was
    not even sent: what was published until it arrived never came (8cbf2b3 covered one
    toggle, not two)."""
    bus = _Bus()
    link = _Link.__new__(_Link)
    link.bus, link.key, link.confirmed = bus, "", {TOPIC}  # type: ignore[assignment]
    link.wanted_changed = asyncio.Event()
    pubsub = _PubSub()
    bus.handlers = {TOPIC}
    requested = _Requested(link.confirmed)
    sync = asyncio.create_task(link._sync(pubsub, requested))  # type: ignore[arg-type]

    async def want(handlers: set[str], sent: int) -> None:
        bus.handlers = handlers
        link.wanted_changed.set()
        for _ in range(100):  # the sync task's turn
            if len(pubsub.sent) >= sent:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"the link sent {pubsub.sent}")

    try:
        await want(set(), 1)  # UNSUBSCRIBE 1
        await want({TOPIC}, 2)  # SUBSCRIBE 1
        await want(set(), 3)  # UNSUBSCRIBE 2
        assert [kind for kind, _ in pubsub.sent] == ["sunsubscribe", "ssubscribe", "sunsubscribe"]
        # Redis answers the first two; the third is still on its way.
        link._handle({"type": "sunsubscribe", "channel": TOPIC}, requested)
        link._handle({"type": "ssubscribe", "channel": TOPIC}, requested)
        bus.handlers = {TOPIC}  # taken a third time: synced only once Redis confirms it again
        assert TOPIC not in link.confirmed, "counted synced while its unsubscription is out"
        await want({TOPIC}, 4)  # SUBSCRIBE 2
        link._handle({"type": "sunsubscribe", "channel": TOPIC}, requested)
        assert TOPIC not in link.confirmed
        link._handle({"type": "ssubscribe", "channel": TOPIC}, requested)
        assert TOPIC in link.confirmed
    finally:
        sync.cancel()
        await asyncio.gather(sync, return_exceptions=True)
