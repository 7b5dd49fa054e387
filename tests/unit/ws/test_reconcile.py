"""Reconciliation after a bus gap: live sockets checked against the ledger in batches."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from realtime_gateway_protocol.access_token import Claims, TokenRef
from shared.bus import BusUnavailable, InProcessBus
from ws_service.domain.connection import Connection
from ws_service.domain.gateway import Gateway
from ws_service.domain.history import MemoryHistory
from ws_service.domain.hub import Hub
from ws_service.domain.presence import MemoryPresence
from ws_service.domain.revocations import RevocationRegistry
from ws_service.domain.user_slots import UserSlots
from ws_service.domain.verify import TokenVerifier
from ws_service.metrics import Metrics
from ws_service.settings import Settings


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


class Peer:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    def send(self, text: str) -> None:
        self.sent.append(text)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def gateway_with(ledger: Ledger | None, slots: UserSlots | None = None, **options: Any) -> Gateway:
    settings = Settings(jwks_url="http://keys.test/jwks", issuer="http://auth.test", **options)
    revocations = RevocationRegistry()
    verifier = TokenVerifier(
        _NoKeys(), revocations, issuer=settings.issuer, audience="ws", leeway=0
    )
    bus = InProcessBus()
    hub = Hub(bus, MemoryHistory(bus.publish), MemoryPresence(bus.publish), settings.history_policy)
    return Gateway(
        settings,
        verifier,
        revocations,
        hub,
        Metrics(),
        ledger=ledger,
        slots=slots,
        reconcile_batch=2,
    )


class _NoKeys:
    async def get_key(self, kid: str) -> RSAPublicKey:
        raise AssertionError("reconciliation verifies no token")


async def admit(gateway: Gateway, sid: str) -> tuple[Connection, Peer]:
    peer = Peer()
    conn = gateway.connect(peer, None)
    now = int(time.time())
    claims = Claims(
        sub=f"user-{sid}",
        sid=sid,
        iat=now,
        exp=now + 60,
        scopes=frozenset(),
        username=None,
        kid="key-1",
    )
    conn.claims = claims
    await gateway.admit(conn, claims)
    return conn, peer


def outcome(gateway: Gateway, name: str) -> float:
    value = gateway.metrics.registry.get_sample_value("ws_reconciliations_total", {"outcome": name})
    return value or 0.0


async def test_live_sockets_are_checked_in_batches_and_revoked_ones_closed() -> None:
    ledger = Ledger({"s1", "s4"})
    gateway = gateway_with(ledger)
    sockets = [await admit(gateway, f"s{i}") for i in range(5)]
    await gateway.reconcile()
    assert sorted(ledger.batches) == [1, 2, 2]
    for i, (conn, peer) in enumerate(sockets):
        if i in (1, 4):
            assert peer.sent == ['{"type":"revoked","reason":"session_revoked"}']
            assert peer.closed == (4403, "session_revoked")
            assert gateway.revocations.is_revoked(f"user-s{i}", f"s{i}", 0)
        else:
            assert (peer.sent, peer.closed) == ([], None)
        conn.disconnected()
    assert outcome(gateway, "ok") == 1


async def test_an_unreachable_ledger_closes_nothing() -> None:
    gateway = gateway_with(Ledger({"s0"}, down=True))
    conn, peer = await admit(gateway, "s0")
    await gateway.reconcile()
    assert peer.closed is None
    assert (outcome(gateway, "unavailable"), outcome(gateway, "ok")) == (1, 0)
    conn.disconnected()
