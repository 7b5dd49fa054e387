"""argon2id password hashing (OWASP parameters), always off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["Passwords"]

_ARGON2 = "$argon2"
"""How every hash ``hash`` makes begins; anything else can never match a password."""


class Passwords:
    """Hashes in worker threads, bounded so a login burst cannot exhaust memory (19 MiB each)."""

    def __init__(
        self,
        *,
        concurrency: int = 4,
        on_verify: Callable[[], None] = lambda: None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        """``hasher`` lets the domain's unit tests use cheap hashes; the default is OWASP's."""
        self._on_verify = on_verify
        self._hasher = hasher or PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check a password; with no hash (unknown user) spend the same time and say no.

        ``on_verify`` counts every check, so how many guesses the throttle let through is visible.
        """
        self._on_verify()
        if password_hash is None or not password_hash.startswith(_ARGON2):
            # Unknown, or a user with no password (a token exchange's app user has ""): argon2
            # refused such a hash at once, so a fast "no" told who the gateway knows.
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash("not-a-real-password-0000")
            await self._check(self._dummy_hash, password)
            return False
        return await self._check(password_hash, password)

    async def _check(self, password_hash: str, password: str) -> bool:
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False
