"""A withdrawn signing key, in the gateway's domain: the announcement reaches the key cache, and
every live socket of a dropped key is told to renew within the grace (a socket of another key,
or a token expiring sooner anyway, keeps its own schedule)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from realtime_gateway_protocol.access_token import Claims, TokenRef
from realtime_gateway_protocol.key_events import (
    KEYS_TOPIC,
    KeyRotated,
    KeyWithdrawn,
    encode_key_event,
)
from tests.support.clock import FakeClock
from tests.unit.ws.fakes import FakePeer, build_gateway
from ws_service.domain import gateway as gateway_module
from ws_service.domain.connection import Connection
from ws_service.domain.errors import KeyWithdrawn as KeyWithdrawnError
from ws_service.domain.gateway import Gateway
from ws_service.domain.verify import VerifyingKey

GRACE = 10


class Keys:
    """The key cache's side the gateway uses: records withdrawals."""

    def __init__(self) -> None:
        self.withdrawn: list[str] = []
        self.refreshed = 0

    async def get_key(self, kid: str) -> VerifyingKey:
        raise AssertionError("no token is verified here")

    def is_withdrawn(self, kid: str) -> bool:
        return kid in self.withdrawn

    def withdraw(self, kid: str) -> None:
        self.withdrawn.append(kid)

    async def refresh(self) -> None:
        self.refreshed += 1

    def fetched_since(self, when: float) -> bool:
        raise AssertionError("no token is verified here")


class Ledger:
    """Answers "not revoked", after running ``meanwhile`` (an event arriving mid round trip)."""

    def __init__(self) -> None:
        self.meanwhile = lambda: None

    async def revoked(self, tokens: Sequence[TokenRef]) -> list[bool]:
        self.meanwhile()
        return [False for _ in tokens]


def make_gateway(
    keys: Keys, ledger: Ledger | None = None, clock: FakeClock | None = None
) -> Gateway:
    return build_gateway(clock=clock or CLOCK, keys=keys, ledger=ledger, key_withdrawal_grace=GRACE)


CLOCK = FakeClock()


def claims(kid: str, sub: str = "alice", ttl: int = 300, clock: FakeClock = CLOCK) -> Claims:
    now = int(clock.time())
    return Claims(sub, f"sid-{sub}", now, now + ttl, frozenset(), None, kid)


async def admit(gateway: Gateway, signed: Claims) -> tuple[Connection, FakePeer]:
    peer = FakePeer()
    conn = gateway.connect(peer, None)
    await conn.authenticated_at_handshake(signed)
    peer.take()
    return conn, peer


async def test_a_withdrawal_announcement_withdraws_the_key_and_nothing_else_does(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """And each key announcement, not a malformed one, has the key set fetched again a moment
    later, once the auth replicas have reloaded theirs."""
    monkeypatch.setattr(gateway_module, "KEY_EVENT_SETTLE", 0.05)
    keys = Keys()
    gateway = make_gateway(keys)
    gateway.on_key_event(KEYS_TOPIC, encode_key_event(KeyRotated("k2", 2)))
    with caplog.at_level(logging.WARNING, logger="ws_service.domain.gateway"):
        for payload in ("", "{}", '{"type":"key_withdrawn","kid":7}', '{"type":"key_lost"}'):
            gateway.on_key_event(KEYS_TOPIC, payload)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ws_service.domain.gateway"]
    assert warnings == ["ignoring a malformed key announcement"] * 4
    assert keys.withdrawn == []
    gateway.on_key_event(KEYS_TOPIC, encode_key_event(KeyWithdrawn("k1")))
    assert keys.withdrawn == ["k1"]
    assert keys.refreshed == 0, "not at once"
    await asyncio.sleep(0.2)
    assert keys.refreshed == 2
    await gateway.close()


async def test_sockets_of_a_dropped_key_are_told_to_renew_within_the_grace() -> None:
    gateway = make_gateway(Keys())
    leaked, leaked_soon = claims("k1", "alice"), claims("k1", "bob", ttl=3)
    sockets = [
        await admit(gateway, signed) for signed in (leaked, leaked_soon, claims("k2", "carol"))
    ]
    now = int(CLOCK.time())
    gateway.keys_dropped(frozenset({"k1", "k9"}))
    (_, alice), (_, bob), (_, carol) = sockets
    ((warning,), (soon,)) = alice.frames, bob.frames
    assert warning["type"] == soon["type"] == "token_expiring"
    assert warning["expires_at"] == now + GRACE
    assert warning["expires_in"] == GRACE
    assert soon["expires_at"] == leaked_soon.exp, "a token expiring sooner keeps its own expiry"
    assert carol.frames == []
    for conn, _ in sockets:
        conn.disconnected()


async def test_a_withdrawal_during_the_ledger_round_trip_still_refuses_the_token() -> None:
    keys, ledger = Keys(), Ledger()
    gateway = make_gateway(keys, ledger)
    ledger.meanwhile = lambda: keys.withdraw("k1")
    with pytest.raises(KeyWithdrawnError):
        await gateway.confirm(claims("k1"))
    good = claims("k2")
    assert await gateway.confirm(good) is good


async def test_the_grace_is_never_cut_to_the_whole_second() -> None:
    clock = FakeClock(wall=1_000_000_000.9)
    gateway = make_gateway(Keys(), clock=clock)
    conn, peer = await admit(gateway, claims("k1", clock=clock))
    gateway.keys_dropped(frozenset({"k1"}))
    assert peer.take() == [
        {"type": "token_expiring", "expires_in": GRACE, "expires_at": 1_000_000_000 + GRACE}
    ]
    clock.advance(GRACE - 0.1)
    assert peer.closed is None, "closed before the whole grace"
    clock.advance(0.2)
    assert peer.closed == (4401, "token_expired")
    conn.disconnected()
