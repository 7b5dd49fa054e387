"""The latencies the gateway reports: a socket's handshake (from its upgrade request to
auth_success, renewals excluded) and a message's way from its publish to the fan-out on a
replica, both on the fake clock."""

from __future__ import annotations

import json

from shared.bus import InProcessBus
from tests.support.clock import FakeClock
from tests.unit.ws.test_connection_states import Socket
from ws_service.domain import protocol
from ws_service.domain.connection import Connection
from ws_service.domain.history import MemoryHistory, Position
from ws_service.domain.hub import Hub, channel_topic
from ws_service.domain.namespaces import Namespaces
from ws_service.domain.presence import MemoryPresence


async def test_the_handshake_is_timed_from_the_upgrade_to_auth_success() -> None:
    s = Socket()
    opened = s.clock.monotonic()
    s.clock.advance(0.2)  # the upgrade and the first frame
    s.conn = Connection(s.ctx, s.peer, "10.0.0.1", 2, opened)
    s.clock.advance(0.05)
    claims = await s.authenticate()
    assert s.metrics.handshake.observed == [0.25]
    await s.send({"type": "auth", "token": s.token("again", claims)})
    assert s.metrics.handshake.observed == [0.25], "a renewal is not a handshake"


def test_a_messages_publish_time_is_read_back_from_its_frame() -> None:
    frame = protocol.message("chat:a", {"ts": 1, "text": ',"ts":2'}, None, 1_796_000_000_123)
    assert protocol.published_at(frame) == 1_796_000_000.123
    with_position = frame[:-1] + ',"offset":7,"epoch":"ab12"}'
    assert protocol.published_at(with_position) == 1_796_000_000.123
    assert protocol.published_at(json.dumps({"type": "join"})) is None


async def test_the_delay_from_publish_to_fan_out_is_reported_once_per_message() -> None:
    clock = FakeClock()
    bus = InProcessBus()
    delays: list[float] = []
    hub = Hub(
        bus,
        MemoryHistory(bus.publish, clock=clock),
        MemoryPresence(bus.publish),
        Namespaces(),
        clock=clock,
        on_delivery_delay=delays.append,
    )
    received: list[str] = []
    for _ in range(3):
        hub.join("chat:a", Inbox(received))
    frame = protocol.message("chat:a", "hi", None, int(clock.time() * 1000))
    clock.advance(0.125)
    await bus.publish(channel_topic("chat:a"), frame)
    assert received == [frame] * 3
    assert delays == [0.125]


class Inbox:
    def __init__(self, received: list[str]) -> None:
        self.received = received

    def deliver(self, channel: str, text: str, position: Position | None) -> None:
        self.received.append(text)
