"""The in-process used-once store (tickets, DPoP proofs), on a clock the test moves: a key
works once while its record lasts, and the record is gone (memory freed) once its time has passed."""

from __future__ import annotations

from shared.once import LocalUsedOnce


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_ticket_burns_once_until_its_record_expires() -> None:
    clock = Clock()
    used = LocalUsedOnce(clock)
    assert await used.burn("a", 1010) is True
    assert await used.burn("a", 1010) is False
    assert await used.burn("b", 1010) is True
    clock.now = 1010
    assert await used.burn("a", 1010) is False
    clock.now = 1010.5
    assert await used.burn("a", 1020) is True


async def test_expired_records_are_dropped_soonest_first_and_live_ones_kept() -> None:
    clock = Clock()
    used = LocalUsedOnce(clock)
    for n, until in enumerate([1030, 1005, 1020, 1010]):
        assert await used.burn(f"t{n}", until)
    clock.now = 1015
    assert await used.burn("new", 1040)
    assert len(used) == 3
    assert await used.burn("t0", 1030) is False
    assert await used.burn("t2", 1020) is False
    assert await used.burn("t1", 1040) is True


async def test_every_record_is_freed_once_expired() -> None:
    clock = Clock()
    used = LocalUsedOnce(clock)
    for n in range(1000):
        await used.burn(f"t{n}", 1000 + n % 30)
    assert len(used) == 1000
    clock.now = 1031
    await used.burn("last", 1060)
    assert len(used) == 1
