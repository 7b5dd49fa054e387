"""Admission under the per-user cap while the shared count (Redis) is slow to answer or down: a
socket that closes or is cancelled meanwhile is left out and gives its slot back."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.events import SessionRevoked, encode_event
from shared.bus import BusUnavailable
from tests.unit.ws.fakes import FakeMetrics, FakePeer, build_gateway
from ws_service.domain import errors
from ws_service.domain.connection import State
from ws_service.domain.errors import TooManyConnections
from ws_service.domain.gateway import Gateway
from ws_service.domain.user_slots import Held


class Slots:
    """The shared count, answering when the test opens ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.down = False
        self.held: dict[str, set[str]] = {}

    async def acquire(self, user: str, slot: str, limit: int) -> bool:
        await self.gate.wait()
        if self.down:
            raise BusUnavailable("redis is down")
        mine = self.held.setdefault(user, set())
        if slot not in mine and len(mine) >= limit:
            return False
        mine.add(slot)
        return True

    async def release(self, user: str, slot: str) -> None:
        self.held.get(user, set()).discard(slot)

    async def refresh(self, held: Held) -> list[str]:
        raise AssertionError("not called here")

    async def restore(self, held: Held) -> None:
        for user, slots in held:
            self.held.setdefault(user, set()).update(slots)


def claims(sub: str = "alice") -> Claims:
    now = int(time.time())
    return Claims(
        sub=sub, sid="s", iat=now, exp=now + 60, scopes=frozenset(), username=None, kid="k1"
    )


def gauges(gateway: Gateway) -> tuple[int, int]:
    metrics = gateway.metrics
    assert isinstance(metrics, FakeMetrics)
    return metrics.counts["awaiting_auth"], metrics.counts["authenticated"]


async def settle(gateway: Gateway) -> None:
    """Let the background slot releases run."""
    await gateway.close()


async def test_a_socket_closed_while_its_slot_is_taken_is_left_out_and_gives_it_back() -> None:
    slots = Slots()
    gateway = build_gateway(slots=slots)
    peer = FakePeer()
    conn = gateway.connect(peer, "10.0.0.1")
    admitting = asyncio.ensure_future(gateway.admit(conn, claims()))
    await asyncio.sleep(0)
    conn.state = State.CLOSING
    slots.gate.set()
    await admitting
    await settle(gateway)
    assert slots.held == {"alice": set()}
    assert gauges(gateway) == (1, 0), "still waiting to authenticate, as far as the gateway knows"
    conn.disconnected()
    assert gauges(gateway) == (0, 0)
    assert gateway.may_wait("10.0.0.1")


async def test_a_revocation_heard_while_the_slot_is_taken_refuses_the_socket() -> None:
    """The bus handler skips a socket whose claims are not set yet, and nothing checked again
    after the wait: the socket was admitted with its session revoked, and stayed open until its
    token expired (an outside probe, with Redis's slot script delayed)."""
    slots = Slots()
    gateway = build_gateway(slots=slots)
    conn = gateway.connect(FakePeer(), "10.0.0.1")
    admitting = asyncio.ensure_future(gateway.admit(conn, claims()))
    await asyncio.sleep(0)
    revoked = SessionRevoked(sid="s", sub="alice", until=2_000_000_000)
    gateway.on_revocation("auth.revocations", encode_event(revoked))
    slots.gate.set()
    with pytest.raises(errors.SessionRevoked):
        await admitting
    await settle(gateway)
    assert slots.held == {"alice": set()}, "its slot is given back"
    assert gauges(gateway) == (1, 0)


async def test_a_socket_cancelled_while_its_slot_is_taken_gives_it_back() -> None:
    slots = Slots()
    gateway = build_gateway(slots=slots, max_connections_per_user=1)
    conn = gateway.connect(FakePeer(), None)
    admitting = asyncio.ensure_future(gateway.admit(conn, claims()))
    await asyncio.sleep(0)
    admitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await admitting
    slots.gate.set()
    conn.disconnected()
    await settle(gateway)
    assert gauges(gateway) == (0, 0)
    other = gateway.connect(FakePeer(), None)
    await gateway.admit(other, claims())
    assert gauges(gateway) == (0, 1), "the local index did not keep the cancelled socket"


async def test_admitted_while_redis_is_down_then_restored_on_reconnection() -> None:
    slots = Slots()
    slots.down = True
    slots.gate.set()
    gateway = build_gateway(slots=slots, max_connections_per_user=2)
    for _ in range(2):
        await gateway.admit(gateway.connect(FakePeer(), None), claims())
    with pytest.raises(TooManyConnections):
        await gateway.admit(gateway.connect(FakePeer(), None), claims())
    assert slots.held == {}
    slots.down = False
    await gateway.restore_slots()
    assert len(slots.held["alice"]) == 2
