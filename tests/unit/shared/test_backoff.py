"""Reconnect delays: exponential with jitter, capped; the client's full jitter and the bus's
half-floor are one function."""

from __future__ import annotations

import random

import pytest

from realtime_gateway_protocol.backoff import backoff_delay


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 1.0, 0.5),
        (1, 1.0, 1.0),
        (3, 0.5, 2.0),
        (10, 1.0, 30.0),
        (10_000, 0.5, 15.0),
        (4, 0.0, 0.0),
    ],
)
def test_backoff_delay(attempt: int, rand: float, expected: float) -> None:
    assert backoff_delay(attempt, 0.5, 30.0, rand) == pytest.approx(expected)


def test_backoff_grows_then_stays_under_the_cap() -> None:
    for failures, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (10, 5.0), (1000, 5.0)]:
        delays = {backoff_delay(failures, 0.1, 5.0, random.random(), floor=0.5) for _ in range(200)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), (failures, delays)
        assert len(delays) > 1, "no jitter"
