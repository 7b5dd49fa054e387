"""Login throttling shared by every replica through the store.

Attempts are counted per (account, client address) and per client address. Keying the account
limit on the pair means an attacker elsewhere cannot lock a real user out; the address limit
stops one address spraying many accounts. Blocks grow exponentially and are capped. An IPv6
address counts as its /64, the block one subscriber or host is given: its 2^64 addresses were as
many fresh budgets of guesses against one account (an outside probe).

An attempt is reserved *before* the password is checked, in one store transaction: concurrent
guesses, on one replica or many, cannot all pass a check that none of them has counted yet. The
attempt that reaches a limit sets the block itself, so exactly ``limit`` attempts get through; a
success then gives back what it reserved.

A client secret is not a password: 256 random bits cannot be guessed online, and a backend
authenticates many requests at once. Reserving would count those in flight, and the eleventh
concurrent request of a client that never failed would be refused. So a client's attempt is only
checked against a block first (:meth:`LoginThrottle.check`) and counted when it fails
(:meth:`LoginThrottle.failed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass, replace

from auth_service.domain.errors import Throttled
from auth_service.domain.models import ThrottleState
from auth_service.domain.store import Store
from shared.addresses import counted_as
from shared.jsonlog import audit, fingerprint

__all__ = ["LoginThrottle", "Reservation", "ThrottlePolicy", "counted_as"]

MAX_KEYED_NAME_BYTES = 256
"""A name typed (a login's username, a client id) longer than this in UTF-8 is keyed by its
hash: a key is a primary key, and PostgreSQL's B-tree refuses an entry past 2,704 bytes (the
transaction failed, a 503 that counted nothing). No user's or client's name comes near it."""


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    pair_limit: int = 10
    address_limit: int = 100
    window: float = 900
    base_block: float = 30
    max_block: float = 900


@dataclass(frozen=True, slots=True)
class Reservation:
    """One admitted attempt: its keys and the states it wrote, for :meth:`LoginThrottle.succeeded`."""

    pair: str
    address: str
    states: dict[str, ThrottleState]


class LoginThrottle:
    def __init__(self, store: Store, policy: ThrottlePolicy | None = None) -> None:
        self._store = store
        self.policy = policy or ThrottlePolicy()

    def _limits(self, reservation: Reservation) -> dict[str, int]:
        return {
            reservation.pair: self.policy.pair_limit,
            reservation.address: self.policy.address_limit,
        }

    async def reserve(self, username: str, address: str, now: float) -> Reservation:
        """Count one attempt, or raise :class:`Throttled` (counting nothing) while a key is blocked."""
        source = counted_as(address)
        empty = Reservation(f"pair:{_keyed(username)}|{source}", f"addr:{source}", {})
        limits = self._limits(empty)

        def count(states: dict[str, ThrottleState]) -> dict[str, ThrottleState]:
            _refuse_if_blocked(states, now)
            return {key: self._counted(states[key], limit, now) for key, limit in limits.items()}

        try:
            written = await self._store.update_throttle(list(limits), count)
        except Throttled as exc:
            self._throttled(username, address, exc)
            raise
        return replace(empty, states=written)

    async def check(self, username: str, address: str, now: float) -> None:
        """Raise :class:`Throttled` while the pair or the address is blocked; count nothing."""
        source = counted_as(address)
        keys = [f"pair:{_keyed(username)}|{source}", f"addr:{source}"]
        try:
            # A read: no placeholder rows, no row locks, no write transaction (on SQLite, the
            # one writer of the whole database) for every client authentication.
            _refuse_if_blocked(await self._store.read_throttle(keys), now)
        except Throttled as exc:
            self._throttled(username, address, exc)
            raise

    async def failed(self, username: str, address: str, now: float) -> None:
        """Count one failed attempt (which may set a block), unless a block is already set."""
        # Blocked meanwhile: the failure adds nothing the block does not already say.
        with contextlib.suppress(Throttled):
            await self.reserve(username, address, now)

    @staticmethod
    def _throttled(username: str, address: str, exc: Throttled) -> None:
        audit(
            "login_throttled",
            username_hash=fingerprint(username),
            address=address,
            retry_after=exc.retry_after,
        )

    def _counted(self, state: ThrottleState, limit: int, now: float) -> ThrottleState:
        fresh = state.window_start >= now - self.policy.window
        attempts = (state.failures if fresh else 0) + 1
        blocked_until = state.blocked_until
        if attempts >= limit:
            doublings = min(attempts - limit, 16)
            blocked_until = now + min(self.policy.base_block * 2**doublings, self.policy.max_block)
        return ThrottleState(attempts, state.window_start if fresh else now, blocked_until)

    async def succeeded(self, reservation: Reservation) -> None:
        """Clear the account's count and give the address back the attempt it reserved."""
        limit = self.policy.address_limit
        reserved = reservation.states[reservation.address]

        def refund(states: dict[str, ThrottleState]) -> dict[str, ThrottleState]:
            address = states[reservation.address]
            attempts = max(address.failures - 1, 0)
            # Our own pre-emptive block (nobody was admitted after it) or a count below the limit
            # means no failure justifies a block.
            lifted = attempts < limit or address.blocked_until == reserved.blocked_until
            return {
                reservation.pair: ThrottleState(),
                reservation.address: replace(
                    address,
                    failures=attempts,
                    blocked_until=0.0 if lifted else address.blocked_until,
                ),
            }

        await self._store.update_throttle([reservation.pair, reservation.address], refund)


def _refuse_if_blocked(states: dict[str, ThrottleState], now: float) -> None:
    blocked_until = max(state.blocked_until for state in states.values())
    if blocked_until > now:
        raise Throttled(
            "too many failed attempts; try again later",
            retry_after=max(1, math.ceil(blocked_until - now)),
        )


def _keyed(name: str) -> str:
    """``name`` as the throttle keys it: as typed, or past :data:`MAX_KEYED_NAME_BYTES` its
    SHA-256 (a name as typed holding that form could share the count of one long name whose
    hash it is: no user's name can be either)."""
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_KEYED_NAME_BYTES:
        return name
    return f"sha256:{hashlib.sha256(encoded).hexdigest()}"
