"""Fakes for the ws domain's ports: a peer that records, metrics that count in a dict, a key source
with no keys, and a gateway built from them on a fake clock (no Prometheus, no aiohttp)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from shared.bus import InProcessBus, RevocationLedger
from tests.support.clock import FakeClock
from ws_service.domain.errors import InvalidToken, ProxyUnavailable
from ws_service.domain.gateway import Gateway
from ws_service.domain.history import History, MemoryHistory
from ws_service.domain.hub import Hub
from ws_service.domain.limits import Limits
from ws_service.domain.namespaces import Namespaces
from ws_service.domain.presence import Member, MemoryPresence, Presence, Transition
from ws_service.domain.proxy import ProxyCall, ProxyGate, Verdict
from ws_service.domain.revocations import RevocationRegistry
from ws_service.domain.user_slots import UserSlots
from ws_service.domain.verify import KeySource, TokenVerifier, VerifyingKey
from ws_service.domain.webhooks import Events

__all__ = ["FakeAppProxy", "FakeMetrics", "FakePeer", "NoKeys", "RecordingSink", "build_gateway"]


class _Count:
    def __init__(self, counts: Counter[str], name: str) -> None:
        self._counts = counts
        self._name = name

    def inc(self, amount: float = 1) -> None:
        self._counts[self._name] += int(amount)

    def dec(self, amount: float = 1) -> None:
        self._counts[self._name] -= int(amount)


class _Labelled:
    def __init__(self, counts: Counter[str], name: str) -> None:
        self._counts = counts
        self._name = name

    def labels(self, *values: str) -> _Count:
        return _Count(self._counts, f"{self._name}:{':'.join(values)}")


class _Timing:
    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, amount: float) -> None:
        self.observed.append(amount)


class FakeMetrics:
    """Implements ``GatewayMetrics``; ``counts["auth:token_expired"]``, ``counts["warnings"]``..."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        c = self.counts
        self.messages_in = _Count(c, "messages_in")
        self.messages_out = _Count(c, "messages_out")
        self.auth = _Labelled(c, "auth")
        self.auth_ok = _Count(c, "auth:ok")
        self.renewals = _Count(c, "renewals")
        self.warnings = _Count(c, "warnings")
        self.expiries = _Count(c, "expiries")
        self.revocations = _Count(c, "revocations")
        self.recoveries = _Labelled(c, "recoveries")
        self.awaiting_auth = _Count(c, "awaiting_auth")
        self.authenticated = _Count(c, "authenticated")
        self.ledger_checks = _Labelled(c, "ledger_checks")
        self.reconciliations = _Labelled(c, "reconciliations")
        self.user_limit_checks = _Labelled(c, "user_limit_checks")
        self.handshake = _Timing()


class FakePeer:
    """Records what the connection sends (parsed) and how it closes."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.closed: tuple[int, str] | None = None

    def send(self, text: str) -> None:
        self.texts.append(text)

    def close(self, code: int, reason: str) -> None:
        assert self.closed is None, f"closed twice: {self.closed} then {(code, reason)}"
        self.closed = (code, reason)

    @property
    def server_close(self) -> tuple[int, str] | None:
        return self.closed

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.texts]

    def types(self) -> list[str]:
        return [frame["type"] for frame in self.frames]

    def take(self) -> list[dict[str, Any]]:
        """The frames sent since the last ``take``."""
        frames = self.frames
        self.texts.clear()
        return frames


class RecordingSink:
    """An ``EventSink`` that keeps every webhook event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def take(self) -> list[dict[str, Any]]:
        taken, self.events = self.events, []
        return taken


class CutOffBus(InProcessBus):
    """The in-process bus, reporting itself cut off from Redis while ``cut`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False

    @property
    def connected(self) -> bool:
        return not self.cut


class HeldPresence(MemoryPresence):
    """The embedded backend whose ``add`` reaches it only once ``release`` is set, as a Redis
    call lands after the event loop moved on: a ``remove`` meanwhile runs first."""

    def __init__(
        self, publish: Callable[[str, str], Awaitable[None]], on_transition: Transition
    ) -> None:
        super().__init__(publish, on_transition)
        self.release = asyncio.Event()

    async def add(self, channel: str, conn_id: str, member: Member) -> None:
        await self.release.wait()
        await super().add(channel, conn_id, member)


class NoKeys:
    async def get_key(self, kid: str) -> VerifyingKey:
        raise InvalidToken("no keys here")

    def is_withdrawn(self, kid: str) -> bool:
        return False

    def withdraw(self, kid: str) -> None:
        return None

    async def refresh(self) -> None:
        return None

    def fetched_since(self, when: float) -> bool:
        return True


class FakeAppProxy:
    """The application behind the proxies: answers from ``verdicts`` by channel (allow when
    absent) as they stand when asked, records every call, can be held back (``hold``) or be
    down."""

    def __init__(self) -> None:
        self.calls: list[ProxyCall] = []
        self.verdicts: dict[str, Verdict] = {}
        self.down = False
        self.held: asyncio.Event | None = None

    def hold(self) -> asyncio.Event:
        self.held = asyncio.Event()
        return self.held

    async def ask(self, call: ProxyCall) -> Verdict:
        """Decided when asked; the answer arrives once released."""
        self.calls.append(call)
        verdict = self.verdicts.get(call.channel, Verdict(True))
        if self.held is not None:
            await self.held.wait()
        if self.down:
            raise ProxyUnavailable()
        return verdict


def build_gateway(
    *,
    clock: FakeClock | None = None,
    keys: KeySource | None = None,
    ledger: RevocationLedger | None = None,
    slots: UserSlots | None = None,
    namespaces: Namespaces | None = None,
    history: History | None = None,
    events: Events | None = None,
    proxies: ProxyGate | None = None,
    presence: Callable[[Callable[[str, str], Awaitable[None]], Transition], Presence] | None = None,
    bus: InProcessBus | None = None,
    reconcile_batch: int = 500,
    **limits: Any,
) -> Gateway:
    """A gateway on fakes; ``limits`` are fields of ``Limits``; ``events`` reports webhooks;
    ``presence`` makes the presence backend from the bus's publish and the events' transitions."""
    clock = clock or FakeClock()
    events = events or Events(clock=clock)
    revocations = RevocationRegistry(clock.time)
    verifier = TokenVerifier(
        keys or NoKeys(), revocations, issuer="http://auth.test", audience="ws", leeway=0
    )
    bus = bus or InProcessBus()
    hub = Hub(
        bus,
        history or MemoryHistory(bus.publish, clock=clock),
        (presence or MemoryPresence)(bus.publish, events.presence),
        namespaces or Namespaces(),
        clock=clock,
        events=events,
    )
    return Gateway(
        Limits(**limits),
        verifier,
        revocations,
        hub,
        FakeMetrics(),
        ledger=ledger,
        slots=slots,
        clock=clock,
        proxies=proxies,
        reconcile_batch=reconcile_batch,
    )
