"""Login throttling shared by every replica through the store.

Failures are counted per (account, client address) and per client address. Keying the account
limit on the pair means an attacker elsewhere cannot lock a real user out; the address limit
stops one address spraying many accounts. Blocks grow exponentially and are capped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from auth_service.errors import Throttled
from auth_service.store.base import Store
from shared.jsonlog import audit

__all__ = ["LoginThrottle", "ThrottlePolicy"]


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    pair_limit: int = 10
    address_limit: int = 100
    window: float = 900
    base_block: float = 30
    max_block: float = 900


class LoginThrottle:
    def __init__(self, store: Store, policy: ThrottlePolicy | None = None) -> None:
        self._store = store
        self.policy = policy or ThrottlePolicy()

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str]:
        return f"pair:{username}|{address}", f"addr:{address}"

    async def check(self, username: str, address: str, now: float) -> None:
        """Raise :class:`Throttled` while either key is blocked; a refused attempt is not counted."""
        states = await self._store.throttle_states(self._keys(username, address))
        blocked_until = max((s.blocked_until for s in states.values()), default=0.0)
        if blocked_until > now:
            retry_after = max(1, math.ceil(blocked_until - now))
            audit("login_throttled", username=username, address=address, retry_after=retry_after)
            raise Throttled("too many failed attempts; try again later", retry_after=retry_after)

    async def failed(self, username: str, address: str, now: float) -> None:
        pair, addr = self._keys(username, address)
        for key, limit in ((pair, self.policy.pair_limit), (addr, self.policy.address_limit)):
            failures = await self._store.record_failure(key, now, self.policy.window)
            if failures >= limit:
                doublings = min(failures - limit, 16)
                block = min(self.policy.base_block * 2**doublings, self.policy.max_block)
                await self._store.block(key, now + block)

    async def succeeded(self, username: str, address: str) -> None:
        await self._store.clear_failures(self._keys(username, address)[0])
