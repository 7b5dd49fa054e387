"""Password checks that take the same work whatever the stored hash: timing tells nothing."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher

from auth_service.domain.passwords import Passwords


class Recording(PasswordHasher):
    """Real argon2 (cheap parameters), remembering which hash each check was made against."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.checked: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.checked.append(str(hash))
        return super().verify(hash, password)


@pytest.mark.parametrize("stored", [None, "", "not a hash", "$2b$12$bcrypt-looking"])
async def test_a_user_without_a_usable_hash_costs_a_full_check_and_is_refused(
    stored: str | None,
) -> None:
    """A token exchange's app user is stored with no password (""): argon2 refused that hash at
    once, so a wrong-password login for ``client:user`` answered in 1.4 ms against 23 ms for
    anyone else, telling who the gateway knows (an outside probe)."""
    hasher = Recording()
    passwords = Passwords(hasher=hasher)
    assert await passwords.verify(stored, "anything") is False
    assert len(hasher.checked) == 1
    assert hasher.checked[0].startswith("$argon2id$"), hasher.checked


async def test_a_real_hash_is_checked_against_itself() -> None:
    hasher = Recording()
    passwords = Passwords(hasher=hasher)
    stored = await passwords.hash("right")
    assert await passwords.verify(stored, "right") is True
    assert await passwords.verify(stored, "wrong") is False
    assert hasher.checked == [stored, stored]
