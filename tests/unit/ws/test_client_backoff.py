"""Reconnect delays: exponential with full jitter, capped."""

from __future__ import annotations

import pytest

from ws_service.client import backoff_delay


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
