"""The auth domain's world for unit tests: the in-memory store, cheap password hashes, premade RSA
keys and an injected clock (starting at the real time only because pyjwt checks access tokens'
``exp`` against it)."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.domain.clients import ClientRegistry
from auth_service.domain.dpop import DpopGate, DpopPolicy
from auth_service.domain.keyring import KeyCipher, KeyRing, RotationPolicy
from auth_service.domain.models import OutboxItem
from auth_service.domain.passwords import Passwords
from auth_service.domain.service import AuthService, IssuerPolicy
from auth_service.domain.store import Announcement
from auth_service.domain.throttle import LoginThrottle
from auth_service.domain.tokens import TokenIssuer
from realtime_gateway_protocol.events import (
    REVOCATIONS_TOPIC,
    RevocationEvent,
    decode_event,
    encode_event,
)
from shared.dpop import ProofVerifier
from shared.once import LocalUsedOnce
from tests.unit.auth.memory_store import MemoryStore

PASSWORD = "correct horse battery staple"
GRACE = 10
POLICY = RotationPolicy(interval=1000, jwks_max_age=100, access_token_ttl=50)
CIPHER = KeyCipher(("unit-test-secret-0123456789",))


@functools.cache
def _premade_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(65537, 2048) for _ in range(4)]


@pytest.fixture(autouse=True)
def premade_rsa_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generating RSA keys is the slow part of the domain; a test needs at most four distinct ones."""
    keys: Iterator[rsa.RSAPrivateKey] = itertools.cycle(_premade_keys())
    monkeypatch.setattr(rsa, "generate_private_key", lambda *args: next(keys))


@dataclass
class World:
    store: MemoryStore
    ring: KeyRing
    service: AuthService
    now: float = field(default_factory=lambda: float(int(time.time())))
    events: list[RevocationEvent] = field(default_factory=list)

    async def register_and_login(self, password: str = PASSWORD) -> Any:
        await self.service.register("alice", PASSWORD)
        return await self.service.login("alice", password, address="10.0.0.1")


@pytest.fixture
async def world() -> World:
    store = MemoryStore()
    ring = KeyRing(store, CIPHER, POLICY)
    world = World(store, ring, service=None)  # type: ignore[arg-type]

    class Publish:
        """The events a revocation announces, once the transaction that wrote them delivers."""

        def announcements(self, events: Sequence[RevocationEvent]) -> list[Announcement]:
            return [
                Announcement(REVOCATIONS_TOPIC, encode_event(event), world.now) for event in events
            ]

        async def deliver(self, kept: Sequence[OutboxItem]) -> None:
            world.events.extend(decode_event(item.payload) for item in kept)
            await store.delete_outbox([item.id for item in kept])

    publish = Publish()

    world.service = AuthService(
        store,
        TokenIssuer(ring, issuer="http://auth.test", audience="ws", ttl=50, client_id="test"),
        Passwords(hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)),
        LoginThrottle(store),
        IssuerPolicy(
            refresh_token_ttl=3600,
            session_lifetime=86400,
            refresh_reuse_grace=GRACE,
            default_scope="chat:read",
            allow_registration=True,
        ),
        publish,
        clock=lambda: world.now,
        clients=ClientRegistry(store, CIPHER, LoginThrottle(store), clock=lambda: world.now),
        dpop=DpopGate(
            ProofVerifier(LocalUsedOnce(lambda: world.now), lambda: world.now),
            DpopPolicy.OPTIONAL,
        ),
    )
    await ring.maintain(world.now)
    return world
