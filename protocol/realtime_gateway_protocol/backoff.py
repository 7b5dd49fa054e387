"""Reconnect delays: exponential, capped, jittered so that peers dropped together do not return
together. Stdlib only: the Python client imports it."""

from __future__ import annotations

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int, base: float, cap: float, rand: float, *, floor: float = 0.0
) -> float:
    """``min(cap, base * 2**attempt)`` scaled into ``[floor, 1)`` of itself by ``rand`` in [0, 1).

    ``floor=0`` is full jitter (clients); ``floor=0.5`` keeps at least half the delay (the Redis
    bus, whose replicas should not retry a down broker at once).
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    return ceiling * (floor + (1.0 - floor) * rand)
