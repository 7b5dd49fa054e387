"""Reconciliation after a bus gap: live sockets checked against the ledger in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from realtime_gateway_protocol.access_token import Claims, TokenRef
from shared.bus import BusUnavailable
from tests.support.clock import FakeClock
from tests.unit.ws.fakes import CutOffBus, FakeMetrics, FakePeer, build_gateway
from ws_service.domain.connection import Connection
from ws_service.domain.gateway import Gateway
from ws_service.domain.namespaces import Namespace, Namespaces
from ws_service.domain.presence import Member, MemoryPresence


class Ledger:
    """Answers like the Redis ledger, and remembers the size of every round trip."""

    def __init__(self, revoked_sids: set[str], *, down: bool = False) -> None:
        self.revoked_sids = revoked_sids
        self.down = down
        self.batches: list[int] = []

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]:
        if self.down:
            raise BusUnavailable("redis is down")
        self.batches.append(len(tokens))
        return [token.sid in self.revoked_sids for token in tokens]

    async def record(self, event: object, now: float | None = None) -> None:
        raise AssertionError("a gateway records nothing")


CLOCK = FakeClock()


async def admit(gateway: Gateway, sid: str) -> tuple[Connection, FakePeer]:
    peer = FakePeer()
    conn = gateway.connect(peer, None)
    now = int(CLOCK.time())
    claims = Claims(f"user-{sid}", sid, now, now + 60, frozenset(), None, "key-1")
    await conn.authenticated_at_handshake(claims)
    assert peer.take()[0]["type"] == "auth_success"
    return conn, peer


def outcome(gateway: Gateway, name: str) -> int:
    metrics = gateway.metrics
    assert isinstance(metrics, FakeMetrics)
    return metrics.counts[f"reconciliations:{name}"]


async def test_live_sockets_are_checked_in_batches_and_revoked_ones_closed() -> None:
    ledger = Ledger({"s1", "s4"})
    gateway = build_gateway(clock=CLOCK, ledger=ledger, reconcile_batch=2)
    sockets = [await admit(gateway, f"s{i}") for i in range(5)]
    ledger.batches.clear()
    await gateway.reconcile()
    assert sorted(ledger.batches) == [1, 2, 2]
    for i, (conn, peer) in enumerate(sockets):
        if i in (1, 4):
            assert peer.texts == ['{"type":"revoked","reason":"session_revoked"}']
            assert peer.closed == (4403, "session_revoked")
            assert gateway.revocations.is_revoked(f"user-s{i}", f"s{i}", 0)
        else:
            assert (peer.texts, peer.closed) == ([], None)
        conn.disconnected()
    assert outcome(gateway, "ok") == 1


async def test_an_unreachable_ledger_closes_nothing() -> None:
    ledger = Ledger({"s0"})
    gateway = build_gateway(clock=CLOCK, ledger=ledger, reconcile_batch=2)
    conn, peer = await admit(gateway, "s0")
    ledger.down = True
    await gateway.reconcile()
    assert peer.closed is None
    assert (outcome(gateway, "unavailable"), outcome(gateway, "ok")) == (1, 0)
    conn.disconnected()


async def test_a_ledger_hit_on_a_token_without_session_is_not_remembered_for_all_of_them() -> None:
    """A trusted issuer's token has no ``sid``: a ledger hit on it (its ``sub`` revoked) must not
    become a local revocation of the empty session, which every such token shares."""
    ledger = Ledger({""})
    gateway = build_gateway(clock=CLOCK, ledger=ledger)
    await admit(gateway, "")
    await gateway.reconcile()
    now = int(CLOCK.time())
    assert not gateway.revocations.is_revoked("someone-else", "", now)


class Hanging:
    """A Redis that stopped answering (SIGSTOP, a partition): every call waits forever."""

    def __init__(self) -> None:
        self.calls = 0

    async def _hang(self) -> Any:
        self.calls += 1
        await asyncio.Event().wait()

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]:
        return await self._hang()  # type: ignore[no-any-return]

    async def record(self, event: object, now: float | None = None) -> None:
        raise AssertionError("a gateway records nothing")

    async def acquire(self, user: str, slot: str, limit: int) -> bool:
        return await self._hang()  # type: ignore[no-any-return]

    async def release(self, user: str, slot: str) -> None:
        pass

    async def refresh(self, held: Any) -> list[str]:
        return []

    async def restore(self, held: Any) -> None:
        pass


class HangingPresence(MemoryPresence):
    calls = 0

    async def add(self, channel: str, conn_id: str, member: Member) -> None:
        HangingPresence.calls += 1
        await asyncio.Event().wait()


async def test_while_the_bus_is_cut_off_nothing_the_reconnection_restores_is_asked() -> None:
    """A Redis that hangs cost every handshake the ledger's and the slots' timeouts and retries
    (7 s measured) and every subscribe the presence add's, even once the bus knew Redis was
    unreachable; the answer, fail open, was known in advance, and the reconnection restores or
    reconciles each of them."""
    bus, redis = CutOffBus(), Hanging()
    gateway = build_gateway(
        clock=CLOCK,
        ledger=redis,
        slots=redis,
        bus=bus,
        presence=lambda publish, on_transition: HangingPresence(publish, on_transition),
        namespaces=Namespaces([Namespace("chat", presence=True)]),
    )
    bus.cut = True
    now = int(CLOCK.time())
    claims = Claims("user-cut", "s-cut", now, now + 60, frozenset({"chat:read"}), None, "key-1")
    async with asyncio.timeout(1):
        assert await gateway.confirm(claims) == claims
        conn, peer = await admit(gateway, "s-cut")
        assert await conn.subscribe_by_server("chat:a")
    assert peer.take()[0]["type"] == "subscribed"
    assert (redis.calls, HangingPresence.calls) == (0, 0)
    metrics = gateway.metrics
    assert isinstance(metrics, FakeMetrics)
    assert metrics.counts["ledger_checks:unavailable"] == 1
    assert metrics.counts["user_limit_checks:unavailable"] == 1
    conn.disconnected()
