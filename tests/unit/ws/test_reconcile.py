"""Reconciliation after a bus gap: live sockets checked against the ledger in batches."""

from __future__ import annotations

from collections.abc import Sequence

from realtime_gateway_protocol.access_token import Claims, TokenRef
from shared.bus import BusUnavailable
from tests.support.clock import FakeClock
from tests.unit.ws.fakes import FakeMetrics, FakePeer, build_gateway
from ws_service.domain.connection import Connection
from ws_service.domain.gateway import Gateway


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
